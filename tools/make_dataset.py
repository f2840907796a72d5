"""Generate a synthetic scene-interaction dataset (sahmr.synth.generate) from hydra config.

python tools/make_dataset.py out_dir=/data/synth num_samples=2000 workers=2
python tools/make_dataset.py out_dir=/data/synth shard=1/4 resume=true
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from sahmr.synth.generate import config_from_mapping, generate


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_dataset")
def main(cfg: DictConfig) -> None:
    """Runs the generator and prints the summary."""
    summary = generate(config_from_mapping(cfg))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
