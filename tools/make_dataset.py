"""Generate a synthetic scene-interaction dataset (sahmr.synth.generate) from hydra config.

python tools/make_dataset.py out_dir=/data/synth num_samples=2000 workers=2
python tools/make_dataset.py out_dir=/data/synth shard=1/4 resume=true
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sahmr.synth.generate import generate
from sahmr.synth.plan import config_from_mapping

STAGING_FOLDERS = {".hydra"}
"""Entries of ``out_dir`` that do not make it "another folder's" (hydra's run logs)."""


def check_inputs(cfg: DictConfig) -> None:
    """Refuse bad settings before any work: one line on stderr, exit 2, nothing written.

    Sizes must be positive integers, the shard spec ``i/N`` valid, the device available, and
    ``out_dir`` either new, empty, or a dataset of this very config (its ``dataset.json``
    has the same config hash: a resumed or sharded run). A folder holding a dataset of
    another config, or files that are not a dataset, is never written into.
    """
    from omegaconf.errors import OmegaConfBaseException

    from sahmr.cli.checks import (
        BadArgument,
        check_device,
        check_float,
        check_int,
        check_writable_folder,
        fail,
        one_line,
    )
    from sahmr.synth.plan import parse_shard_spec

    try:
        check_int(cfg.num_samples, "num_samples")
        check_int(cfg.seed, "seed", minimum=0)
        check_int(cfg.samples_per_shard, "samples_per_shard")
        for name, split in (cfg.get("splits") or {}).items():
            if split.get("samples_per_shard") is not None:
                check_int(split.samples_per_shard, f"splits.{name}.samples_per_shard")
        check_int(cfg.workers, "workers", minimum=0)
        check_int(cfg.crop_size, "crop_size", minimum=16)
        check_int(cfg.views_per_body, "views_per_body")
        check_int(cfg.sequence_frames, "sequence_frames")
        check_int(cfg.max_attempts_factor, "max_attempts_factor")
        quality = check_int(cfg.jpeg_quality, "jpeg_quality")
        if quality > 100:
            raise BadArgument(f"jpeg_quality={quality}: must be <= 100")
        check_float(cfg.sdf_voxel_size, "sdf_voxel_size")
        check_float(cfg.full_frame_scale, "full_frame_scale", inclusive=True)
        if str(cfg.placer) not in ("auto", "standing"):
            raise BadArgument(f"placer={cfg.placer}: choose auto or standing")
        if str(cfg.start_method) not in ("fork", "spawn", "forkserver"):
            raise BadArgument(f"start_method={cfg.start_method}: choose fork or spawn")
        if str(cfg.crop_format) not in ("jpeg", "png"):
            raise BadArgument(f"crop_format={cfg.crop_format}: choose jpeg or png")
        try:
            parse_shard_spec(cfg.shard)
        except ValueError as exc:
            raise BadArgument(f"shard={cfg.shard}: {one_line(exc)}") from None
        if str(cfg.placer) == "auto":
            check_device(cfg.sdf_device, "sdf_device")
        if cfg.body_model_path is not None and not Path(cfg.body_model_path).is_file():
            raise BadArgument(f"body_model_path={cfg.body_model_path}: no such file")
        try:
            gen_cfg = config_from_mapping(cfg)
        except (ValueError, TypeError, KeyError) as exc:
            raise BadArgument(f"config: {one_line(exc)}") from None
        check_writable_folder(cfg.out_dir, "out_dir=")
        check_dataset_folder(Path(cfg.out_dir), gen_cfg.content_hash())
    except BadArgument as exc:
        fail(exc)
    except OmegaConfBaseException as exc:  # e.g. out_dir left at ???
        fail(f"config: {exc}")


def check_dataset_folder(root: Path, config_hash: str) -> None:
    """Refuse an ``out_dir`` whose files would be replaced by this run.

    Raises:
        BadArgument: ``root`` holds a dataset of another config, an unreadable
            ``dataset.json``, or files of something that is not a dataset.
    """
    from sahmr.cli.checks import BadArgument, one_line

    if not root.is_dir():
        return
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        others = sorted(
            p.name for p in root.iterdir()
            if p.name not in STAGING_FOLDERS and not (p.is_dir() and not any(p.iterdir()))
        )  # empty folders (a run killed before its dataset.json) hold nothing to lose
        if others:
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            raise BadArgument(
                f"out_dir={root}: holds files that are not a dataset ({', '.join(others[:3])}"
                f"{more}); choose a new or empty folder"
            )
        return
    try:
        prev = json.loads(meta_path.read_text(encoding="utf-8"))
        prev_hash = prev.get("config_hash")
    except (OSError, ValueError, AttributeError) as exc:
        raise BadArgument(
            f"out_dir={root}: its dataset.json is unreadable ({one_line(exc)}); choose a new "
            "folder"
        ) from None
    if prev_hash != config_hash:
        raise BadArgument(
            f"out_dir={root}: holds another dataset (config hash {prev_hash}, this config "
            f"{config_hash}); writing here would replace its dataset.json and shards: choose a "
            "new out_dir, or give the same settings to resume or extend it"
        )


SHARED_FOLDER_MIN_AGE_S = 15 * 60.0
"""A sharded run (shard i/N, N > 1) may share out_dir with other machines, whose pids cannot be
checked here: their temporaries are removed only once untouched this long (seconds)."""


def remove_leftovers(root: Path, shard: str) -> list[Path]:
    """Delete the temporaries of killed runs in a dataset folder (rooms, shards, SDFs, JSON)."""
    from sahmr.cli.leftovers import remove_dead_temporaries
    from sahmr.synth.plan import parse_shard_spec

    if not root.is_dir():
        return []
    rooms = root / "rooms"
    folders = [root, root / "shards", rooms]
    if rooms.is_dir():
        folders += [p for p in rooms.iterdir() if p.is_dir() and not p.name.startswith(".")]
    _, parts = parse_shard_spec(shard)
    return remove_dead_temporaries(folders,
                                   min_age_s=SHARED_FOLDER_MIN_AGE_S if parts > 1 else 0.0)


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_dataset")
def main(cfg: DictConfig) -> None:
    """Runs the generator and prints the summary."""
    check_inputs(cfg)
    remove_leftovers(Path(cfg.out_dir), str(cfg.shard))
    summary = generate(config_from_mapping(cfg))
    print(json.dumps(summary, indent=1))


def cli() -> None:
    """Check the inputs (composing the config as hydra will), then run `main`."""
    import sys

    from sahmr.cli.checks import compose_for_checks

    cfg = compose_for_checks(Path(__file__).resolve().parents[1] / "configs", "make_dataset",
                             sys.argv[1:])  # fmt: skip
    if cfg is not None:
        check_inputs(cfg)  # before hydra makes out_dir/.hydra: nothing written on bad input
    main()


if __name__ == "__main__":
    cli()
