"""Train a method (hydra config configs/train.yaml; the loop is sahmr.engine.trainer).

python tools/train.py exp=sahmr_small data.root=/data/synth
python tools/train.py exp=rcnet_small data.root=/data/synth trainer.max_minutes=9 resume=true
torchrun --nproc_per_node 2 tools/train.py exp=metro_small data.root=/data/synth

Baselines (docs/baselines.md): the engine steps HMR's / VIBE's discriminator with a second
optimiser, passes SPIN its sample keys and feeds VIBE clips (``clip_length`` of its exp):
python tools/train.py exp=hmr data.root=/data/synth
python tools/train.py exp=spin data.root=/data/synth
python tools/train.py exp=vibe data.root=/data/synth_motions   # needs motions in the data
"""

from __future__ import annotations

import json
import logging
import os

import hydra
from omegaconf import DictConfig

from sahmr.engine.trainer import train_from_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Train; only rank 0 logs below WARNING and prints the result."""
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)
    result = train_from_config(cfg)
    if main_rank:
        print(
            json.dumps(
                {
                    "stopped": result.stopped,
                    "step": result.step,
                    "epoch": result.epoch,
                    "best": result.best,
                    "checkpoint": str(result.checkpoint),
                    "validation": result.last_validation,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
