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
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sahmr.data.smplx_targets import BodyMismatchError
from sahmr.engine.assembly import train_from_config
from sahmr.engine.optimizers import SubmodulePathError


def check_inputs(cfg: DictConfig) -> None:
    """Refuse bad settings before any slow work: one line on stderr, exit 2.

    Checks the data root, the device, the batch sizes, the initial weights (a readable,
    weights-only sahmr checkpoint) and that the output folder can be written.
    """
    from omegaconf.errors import OmegaConfBaseException

    from sahmr.cli.checks import (
        BadArgument,
        check_data_folder,
        check_dataset_root,
        check_device,
        check_int,
        check_writable_folder,
        fail,
        is_synthetic_data,
        one_line,
    )

    try:
        if is_synthetic_data(cfg.data):
            check_dataset_root(cfg.data.root, "data.root=")
        else:  # RICH / PROX: the dataset class checks its own layout
            check_data_folder(cfg.data.root, "data.root=")
            check_same_body(cfg)
        if str(cfg.device) != "auto" or "LOCAL_RANK" not in os.environ:
            check_device(cfg.device, "device")
        check_int(cfg.trainer.batch_size, "trainer.batch_size")
        check_int(cfg.trainer.val_batch_size, "trainer.val_batch_size")
        check_int(cfg.trainer.num_workers, "trainer.num_workers", minimum=0)
        from sahmr.engine.trainer_config import TrainerConfig

        try:  # every trainer setting (lr, epochs, clip...) before the output folder is made
            TrainerConfig.from_mapping(cfg.trainer)
        except (TypeError, ValueError) as exc:
            text = one_line(exc)
            raise BadArgument(text if text.startswith("trainer.") else f"trainer: {text}") \
                from None
        weights = (cfg.get("init") or {}).get("weights")
        if weights:
            from sahmr.engine.checkpoint import load_checkpoint

            if not Path(weights).is_file():
                raise BadArgument(f"init.weights={weights}: no such file")
            try:
                load_checkpoint(weights)  # weights only: its config is not used
            except ValueError as exc:
                raise BadArgument(f"init.weights={one_line(exc)}") from None
        check_writable_folder(cfg.paths.output_dir, "paths.output_dir=")
    except BadArgument as exc:
        fail(exc)
    except OmegaConfBaseException as exc:  # e.g. a required value left at ???
        fail(f"config: {exc}")


def check_same_body(cfg: DictConfig) -> None:
    """The body a RICH / PROX config builds its targets on must be the training body.

    Raises:
        BadArgument: The two files hold different bodies (by content hash).
    """
    from sahmr.cli.checks import BadArgument

    targets = cfg.data.get("targets")
    if targets is None:
        return
    data_path, body_path = targets.get("body_model_path"), cfg.body.get("model_path")
    if data_path == body_path:
        return
    from sahmr.body.io import content_hash, load_body_model_data
    from sahmr.body.model import license_free_model_path

    def body_hash(path: str | None, allow_pickle: bool) -> str:
        data = load_body_model_data(path or license_free_model_path(), allow_pickle=allow_pickle)
        return content_hash(data)

    try:
        h_data = body_hash(data_path, bool(targets.get("allow_pickle", False)))
        h_body = body_hash(body_path, bool(cfg.body.get("allow_pickle", False)))
    except (OSError, ValueError, PermissionError) as exc:
        raise BadArgument(f"body file: {exc}") from None
    if h_data != h_body:
        raise BadArgument(
            f"data.targets.body_model_path={data_path} (body {h_data[:12]}) and "
            f"body.model_path={body_path} (body {h_body[:12]}) are different bodies: the "
            "targets would not match the model; use the same file for both"
        )


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Train; only rank 0 logs below WARNING and prints the result."""
    check_inputs(cfg)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train_from_config(cfg)
    except BodyMismatchError as exc:  # data built on another body than the model's
        from sahmr.cli.checks import fail

        fail(f"data: {exc}")
    except SubmodulePathError as exc:  # e.g. trainer.frozen_batchnorm=[a_typo]
        from sahmr.cli.checks import fail

        fail(str(exc))
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


def cli() -> None:
    """Check the inputs (composing the config as hydra will), then run `main`."""
    import sys

    from sahmr.cli.checks import compose_for_checks

    cfg = compose_for_checks(Path(__file__).resolve().parents[1] / "configs", "train",
                             sys.argv[1:])  # fmt: skip
    if cfg is not None:
        check_inputs(cfg)  # before hydra makes its run folder: nothing is written on bad input
    main()


if __name__ == "__main__":
    cli()
