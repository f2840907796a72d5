"""Training and evaluation engine: data loading, the training loop, checkpoints, DDP.

The loop is `sahmr.engine.trainer` (settings: `sahmr.engine.trainer_config`, parameter groups
and LR schedule: `sahmr.engine.optimizers`); `sahmr.engine.assembly` builds a run from its
hydra config.

Importable without open3d (the GPU machine has none); scene metrics load it lazily.
"""

from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import (
    load_checkpoint,
    load_initial_weights,
    load_method,
    save_checkpoint,
)
from sahmr.engine.trainer import FitResult, Trainer
from sahmr.engine.trainer_config import TrainerConfig

__all__ = [
    "FitResult",
    "Trainer",
    "TrainerConfig",
    "load_checkpoint",
    "load_initial_weights",
    "load_method",
    "save_checkpoint",
    "train_from_config",
]
