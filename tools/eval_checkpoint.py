"""Evaluate a trained checkpoint on a dataset split (hydra config configs/eval.yaml).

python tools/eval_checkpoint.py checkpoint=outputs/sahmr_small/checkpoints/best.pt \
    data.root=/data/synth split=test out=outputs/sahmr_small/eval_test [save_predictions=true]

Writes to ``out``: ``metrics.json`` / ``per_frame.csv`` / PNG plots as
``tools/score_predictions.py`` does (sahmr.evaluation.reports), with the method's own metrics
(e.g. RCNet root error and contact scores) and seconds per frame added to ``metrics.json``;
with ``save_predictions``, ``predictions/<split>-<index:06d>.npz`` (world-frame ``vertices``,
``scene``, and for a method that predicts scene contacts, e.g. SA-HMR's RCNet, their
``contact_points_world`` (P, 3) and ``contact_point_region`` (P,) 1..7) that
``tools/score_predictions.py --pred out/predictions --gt-dataset DATA --split SPLIT`` re-scores.

Temporal methods (a checkpoint trained with ``clip_length: T``, e.g. exp=vibe) are evaluated on
clips of T consecutive motion frames (``clip_length=...`` overrides T): every frame of a clip
is scored under its frame-dataset name; frames outside motion clips are not (the motions are
chosen as in training: the checkpoint's ``clip_motion_prefix``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sahmr.data.smplx_targets import BodyMismatchError, check_body_hash
from sahmr.engine.assembly import build_evaluator
from sahmr.engine.checkpoint import load_checkpoint, load_method
from sahmr.engine.data import (
    LoaderSettings,
    StepPreparer,
    build_loader,
    build_scene_bank,
    clip_dataset,
)
from sahmr.engine.distributed import resolve_device
from sahmr.engine.methods import can_predict
from sahmr.engine.validation import run_validation, write_json_atomic
from sahmr.evaluation.evaluator import JOINT_SETS, PROTOCOLS
from sahmr.evaluation.readers import BodyFrame
from sahmr.evaluation.reports import metrics_dict, summary_table, write_reports
from sahmr.models.contact_perturbation import ContactPerturbation, PerturbedContacts
from sahmr.records import BodyPrediction

logger = logging.getLogger("eval")


class PredictionWriter:
    """Writes each predicted frame as ``<folder>/<name>.npz`` (world vertices, scene, and the
    frame's extras: a method's predicted scene contacts in the world frame)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, frame: BodyFrame, pred: BodyPrediction, row: int) -> None:
        np.savez_compressed(
            self.folder / f"{name}.npz",
            vertices=np.asarray(frame.vertices, dtype=np.float32),
            scene=np.asarray(frame.scene or ""),
            **frame.extras,  # e.g. the predicted scene contacts (world frame)
        )


def check_inputs(cfg: DictConfig) -> None:
    """Refuse bad settings before any slow work: one line on stderr, exit 2, nothing written.

    Checks the checkpoint (readable, weights only, a config that builds only the project's
    classes), the data root and split, the device, the sizes and that ``out`` can be written.
    """
    from sahmr.cli.checks import (
        BadArgument,
        check_checkpoint,
        check_complete_split,
        check_data_folder,
        check_dataset_split,
        check_device,
        check_float,
        check_int,
        check_writable_folder,
        fail,
        is_synthetic_data,
    )

    try:
        check_checkpoint(cfg.checkpoint, "checkpoint=")
        split = str(cfg.data.split)
        synthetic = is_synthetic_data(cfg.data)
        if synthetic:
            meta = check_dataset_split(cfg.data.root, "data.root=", split, "split=")
        else:  # RICH / PROX: the dataset class checks its own layout
            check_data_folder(cfg.data.root, "data.root=")
        check_device(cfg.device, "device")
        check_int(cfg.batch_size, "batch_size")
        check_int(cfg.num_workers, "num_workers", minimum=0)
        check_int(cfg.max_batches, "max_batches", allow_none=True)
        check_int(cfg.get("frames"), "frames", allow_none=True)
        check_int(cfg.get("clip_length"), "clip_length", allow_none=True)
        check_float(cfg.sdf_voxel_size, "sdf_voxel_size")
        if str(cfg.get("joint_set", "smpl24")) not in JOINT_SETS:
            raise BadArgument(f"joint_set={cfg.joint_set}: must be one of "
                              f"{', '.join(sorted(JOINT_SETS))}")  # fmt: skip
        if str(cfg.get("protocol", "default")) not in PROTOCOLS:
            raise BadArgument(f"protocol={cfg.protocol}: must be one of {', '.join(PROTOCOLS)}")
        check_writable_folder(cfg.out, "out=")
        check_model_settings(cfg)
        contact_perturbation(cfg)
        scene_slide_cost(cfg)
        if not isinstance(cfg.get("scene_depenetrate", True), bool):
            raise BadArgument(f"scene_depenetrate={cfg.scene_depenetrate}: must be true or false")
        if cfg.save_predictions:
            check_writable_folder(Path(cfg.out) / "predictions", "out=")
        if synthetic and not cfg.get("allow_missing_shards", False):
            check_complete_split(cfg.data.root, meta, split, "data.root=",
                                 "allow_missing_shards=true")  # fmt: skip
    except BadArgument as exc:
        fail(exc)
    except OmegaConfBaseException as exc:  # e.g. a required value left at ???
        fail(f"config: {exc}")


def model_settings(cfg: DictConfig) -> list[str]:
    """``model_settings`` as the ``KEY=VALUE`` strings `load_method` applies."""
    return [str(item) for item in cfg.get("model_settings") or []]


def check_model_settings(cfg: DictConfig) -> None:
    """Build the method with ``model_settings`` once (CPU) so a malformed item or an unknown
    option is refused before any work.

    Raises:
        BadArgument: One line naming the settings and the error (its lines joined).
    """
    from sahmr.cli.checks import BadArgument

    settings = model_settings(cfg)
    if not settings:
        return
    try:
        load_method(cfg.checkpoint, "cpu", settings=settings)
    except (ValueError, TypeError, InstantiationException, OmegaConfBaseException) as exc:
        why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise BadArgument(f"model_settings={settings}: {why}") from None


def depenetrator(cfg: DictConfig, body_model: Any):
    """``scene_depenetrate`` (on by default): the joints of each penetrating body bent out of
    its scan, last (`sahmr.scene.depenetrate.Depenetrator`); None when it is off or the rooms'
    SDFs are not loaded (``scene_metrics=false``: skipped, like the slide)."""
    if not (cfg.get("scene_depenetrate", True) and cfg.get("scene_metrics", False)):
        return None
    from sahmr.scene.depenetrate import Depenetrator

    return Depenetrator(body_model)


def scene_slide_cost(cfg: DictConfig) -> float | None:
    """The price of the slide out of the scan (``scene_slide``, ``scene_slide_cost``; null:
    `sahmr.scene.ray_slide.SLIDE_COST`), or None when it is off. Raises `BadArgument`."""
    from sahmr.cli.checks import BadArgument
    from sahmr.scene.ray_slide import SLIDE_COST

    if not bool(cfg.get("scene_slide", False)):
        return None
    value = cfg.get("scene_slide_cost")
    if value is None:
        return SLIDE_COST
    try:
        cost = float(value)
    except (TypeError, ValueError):
        cost = float("nan")
    if not cost >= 0:
        raise BadArgument(f"scene_slide_cost={value}: must be a number >= 0 (or null)")
    return cost


def contact_perturbation(cfg: DictConfig) -> ContactPerturbation:
    """The ``contact_perturbation`` group as a `ContactPerturbation` (checked)."""
    group = cfg.get("contact_perturbation") or {}
    try:
        return ContactPerturbation(**{k: group[k] for k in group})
    except (TypeError, ValueError) as exc:
        from sahmr.cli.checks import fail

        fail(f"contact_perturbation: {exc}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Evaluate and write the reports."""
    check_inputs(cfg)
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    method, ckpt_cfg = load_method(cfg.checkpoint, device, settings=model_settings(cfg))
    perturbation = contact_perturbation(cfg)
    if perturbation.active:
        if getattr(method, "rcnet", None) is None:
            from sahmr.cli.checks import fail

            fail(f"contact_perturbation: {cfg.checkpoint} is not an SA-HMR model with an RCNet")
        method.rcnet = PerturbedContacts(method.rcnet, perturbation)
    body = instantiate(ckpt_cfg.body)
    frames = instantiate(cfg.data)
    try:
        stored = load_checkpoint(cfg.checkpoint).get("body_hash")
        if stored is not None and stored != body.content_hash:
            raise BodyMismatchError(
                f"{cfg.checkpoint} was trained on body {stored[:12]} but its body config gives "
                f"{body.content_hash[:12]} on this machine (a different body file)"
            )
        check_body_hash(frames, body.content_hash, what=f"{cfg.checkpoint}'s body")
    except BodyMismatchError as exc:
        from sahmr.cli.checks import fail

        fail(f"data: {exc}")
    clip_length = cfg.get("clip_length") or ckpt_cfg.get("clip_length")
    prefix = ckpt_cfg.get("clip_motion_prefix", "seq_")
    dataset = clip_dataset(frames, clip_length, motion_prefix=prefix)  # frames in one clip
    if len(dataset) == 0:
        from sahmr.cli.checks import fail

        what = f"no clips of {clip_length} frames" if clip_length else "no frames"
        fail(f"split={cfg.split}: nothing to evaluate in {cfg.data.root} ({what})")
    out.mkdir(parents=True, exist_ok=True)
    scenes = dataset.scene_points if bool(ckpt_cfg.get("needs_scene", True)) else None
    bank = build_scene_bank(
        scenes,
        device,
        max_points_per_scene=ckpt_cfg.get("max_points_per_scene"),
        seed=int(ckpt_cfg.get("seed", 0)),
    )
    prepare = StepPreparer(body.topology, device, bank, clip_length=clip_length)
    loader = build_loader(
        dataset,
        LoaderSettings(batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers)),
        train=False,
        device=device,
        clip_length=clip_length,
        items=cfg.get("frames"),
    )
    with_targets = cfg.with_targets
    if with_targets is None:
        with_targets = bool(ckpt_cfg.get("trainer", {}).get("val_with_targets", False))
    predicts = can_predict(method) or bool(with_targets)
    evaluator = None
    if predicts:
        evaluator = build_evaluator(
            body,
            frames,
            scene_metrics=bool(cfg.scene_metrics),
            sdf_cache_dir=cfg.sdf_cache_dir,
            sdf_voxel_size=float(cfg.sdf_voxel_size),
            joint_set=str(cfg.joint_set),
            protocol=str(cfg.get("protocol", "default")),
        )
    writer = PredictionWriter(out / "predictions") if cfg.save_predictions else None
    slide_cost = scene_slide_cost(cfg)
    bender = depenetrator(cfg, body.to(device))
    result = run_validation(
        method,
        loader,
        prepare,
        split=str(cfg.split),
        evaluator=evaluator,
        max_batches=cfg.max_batches,
        bf16=bool(cfg.bf16 and device.type == "cuda"),
        progress=bool(cfg.progress),
        gather_frames=True,
        on_prediction=writer if predicts else None,
        with_targets=bool(with_targets),
        settle_on_ground=bool(cfg.get("settle_on_ground", False)),
        scene_slide_cost=slide_cost,
        depenetrator=bender,
    )
    report: dict = {"frames": result.frames}
    if result.evaluation is not None:
        write_reports(result.evaluation, out)
        report = metrics_dict(result.evaluation)
    report.update(
        checkpoint=str(cfg.checkpoint),
        method=type(method).__name__,
        split=str(cfg.split),
        clip_length=clip_length,
        device=str(device),
        seconds_per_frame=result.seconds_per_frame,
        method_metrics=result.method_summary(),
        contact_perturbation=dataclasses.asdict(perturbation),
        settle_on_ground=bool(cfg.get("settle_on_ground", False)),
        settled_frames=result.settled_frames,
        scene_slide_cost=slide_cost,
        slid_frames=result.slid_frames,
        scene_depenetrate=bender is not None,  # as applied (needs the rooms' SDFs)
        depenetrated_frames=result.depenetrated_frames,
    )
    write_json_atomic(report, out / "metrics.json")
    if result.evaluation is not None:
        print(summary_table(result.evaluation))
    for name, value in result.method_summary().items():
        print(f"{name}: {value}")
    print(f"{result.frames} frames, {result.seconds_per_frame * 1000:.1f} ms per frame")
    print(f"reports in {out}")


def cli() -> None:
    """Check the inputs (composing the config as hydra will), then run `main`."""
    import sys

    from sahmr.cli.checks import compose_for_checks

    cfg = compose_for_checks(Path(__file__).resolve().parents[1] / "configs", "eval",
                             sys.argv[1:])  # fmt: skip
    if cfg is not None:
        check_inputs(cfg)  # before hydra makes its run folder: nothing is written on bad input
    main()


if __name__ == "__main__":
    cli()
