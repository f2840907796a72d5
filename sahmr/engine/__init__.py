"""Training and evaluation engine: data loading, the training loop, checkpoints, DDP.

Importable without open3d (the GPU machine has none); scene metrics load it lazily.
"""

from sahmr.engine.checkpoint import (
    load_checkpoint,
    load_initial_weights,
    load_method,
    save_checkpoint,
)
from sahmr.engine.trainer import FitResult, Trainer, TrainerConfig, train_from_config

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
