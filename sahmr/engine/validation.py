"""Validation and evaluation of any method on a dataset split through the shared evaluator.

Predicted bodies (``method.predict``) are turned into world-frame `BodyFrame` records in
memory and scored against the batch's ground truth by `sahmr.evaluation.evaluator.Evaluator`
(the same code as ``tools/score_predictions.py``); methods with a ``metrics`` hook add their own
``(sum, count)`` entries (e.g. RCNet's root error and contact counts). Under DDP every rank
scores its share of the frames and sums and counts are all-reduced, so means are exact.
Frames are named ``<split>-<index:06d>`` (dataset index), like
`sahmr.evaluation.readers.SyntheticSplitReader`, so saved predictions can be re-scored.

In clip mode (`sahmr.engine.data`, temporal methods) the loader yields clips of T frames:
``predict`` returns one body per frame (B * T rows, clip-major), each named by its index in
the frame dataset; only frames inside a clip (motion frames, each once) are scored, and
``frames`` / ``seconds_per_frame`` count frames, not clips.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sahmr.atomic_write import atomic_write_json
from sahmr.engine.data import StepPreparer, StridedSampler, frame_indices
from sahmr.engine.distributed import all_gather_objects, all_reduce_sum, is_dist
from sahmr.engine.methods import (
    can_predict,
    has_metrics,
    has_per_frame_metrics,
    split_metric_sums,
    unwrap,
)
from sahmr.evaluation.evaluator import EvaluationResult, Evaluator
from sahmr.evaluation.readers import BodyFrame
from sahmr.evaluation.reduction import Accumulator
from sahmr.geometry.cameras import invert_rigid, transform_points
from sahmr.models.modes import eval_mode
from sahmr.records import BodyPrediction, frame_name
from sahmr.scene.depenetrate import SDF, grid_sdf
from sahmr.scene.ground import settle_on_ground as settle_ground
from sahmr.scene.ray_slide import sampler_sdf, slide_out_of_scene

logger = logging.getLogger(__name__)

PredictionCallback = Callable[[str, BodyFrame, BodyPrediction, int], None]
"""``(name, predicted world frame, batch prediction, row in batch)`` for each frame."""

Depenetrate = Callable[[BodyPrediction, Tensor, list[SDF | None]], tuple[BodyPrediction, Tensor]]
"""``(pred, T_w2c, sdfs) -> (pred, changed (B,))``: `sahmr.scene.depenetrate.Depenetrator`."""


class MemoryReader:
    """A `sahmr.evaluation.readers.FrameReader` over frames held in memory."""

    def __init__(self, frames: Mapping[str, BodyFrame]) -> None:
        self._frames = dict(frames)

    def names(self) -> list[str]:
        """Frame names, sorted."""
        return sorted(self._frames)

    def load(self, name: str) -> BodyFrame:
        """One frame (KeyError when absent)."""
        return self._frames[name]


@dataclass
class ValidationResult:
    """Scores of one pass over (part of) a split.

    Attributes:
        evaluation: Evaluator result (bodies), or None for methods without ``predict``.
        method_metrics: ``(sum, count)`` entries from the method's ``metrics`` hook.
        method_per_frame: ``name -> values`` from the method's ``per_frame_metrics`` hook (over
            all ranks); their medians join `method_summary` as ``<name>_median``.
        frames: Frames run (over all ranks).
        seconds: Wall time of the method's forward/predict calls (over all ranks).
        settled_frames: Bodies slid back onto their scene's ground (``settle_on_ground``;
            over all ranks).
        slid_frames: Bodies slid along their camera ray out of the scan (``scene_slide_cost``;
            over all ranks).
        depenetrated_frames: Bodies whose joints were bent out of the scan (``depenetrator``;
            over all ranks).
    """

    evaluation: EvaluationResult | None = None
    method_metrics: Accumulator = field(default_factory=Accumulator)
    method_per_frame: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0
    settled_frames: int = 0
    slid_frames: int = 0
    depenetrated_frames: int = 0

    @property
    def seconds_per_frame(self) -> float:
        """Method time per frame (NaN when no frame ran)."""
        return self.seconds / self.frames if self.frames else float("nan")

    def method_summary(self) -> dict[str, float | list[float]]:
        """Means of the method's entries; ``X_precision/recall/f1`` derived from summed
        ``X_tp``, ``X_fp``, ``X_fn`` entries (micro-averaged)."""
        acc = self.method_metrics
        out: dict[str, float | list[float]] = {}
        for name in acc.names():
            mean = acc.mean(name)
            out[name] = mean if isinstance(mean, float) else mean.tolist()
        for name in acc.names():
            if not name.endswith("_tp"):
                continue
            stem = name[: -len("_tp")]
            if f"{stem}_fp" not in acc or f"{stem}_fn" not in acc:
                continue
            tp, fp, fn = (acc.total(f"{stem}_{k}") for k in ("tp", "fp", "fn"))
            p = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1e-12), torch.nan)
            r = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1e-12), torch.nan)
            f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-12), torch.nan)
            for key, val in (("precision", p), ("recall", r), ("f1", f1)):
                out[f"{stem}_{key}"] = float(val) if val.ndim == 0 else val.tolist()
        for name, values in self.method_per_frame.items():
            finite = [v for v in values if math.isfinite(v)]
            out[f"{name}_median"] = float(np.median(finite)) if finite else float("nan")
        return out

    def scalars(self) -> dict[str, float]:
        """Flat ``name -> value`` of every scalar score (for TensorBoard and metrics.jsonl)."""
        out: dict[str, float] = {}
        if self.evaluation is not None:
            for name, rec in self.evaluation.summary().items():
                out[name] = float(rec["value"])
        for name, value in self.method_summary().items():
            if isinstance(value, float):
                out[name] = value
            else:
                for i, v in enumerate(value):
                    out[f"{name}/{i}"] = float(v)
        out["frames"] = float(self.frames)
        out["seconds_per_frame"] = self.seconds_per_frame
        return out


def merge_evaluation(into: EvaluationResult, part: EvaluationResult) -> None:
    """Add a partial evaluator result (another batch) into ``into``."""
    into.accumulator.merge(part.accumulator)
    into.per_frame.extend(part.per_frame)
    into.missing.extend(part.missing)
    into.failed.extend(part.failed)
    into.pen_depth_hist = into.pen_depth_hist + part.pen_depth_hist
    into.has_scene = into.has_scene or part.has_scene
    into.region_names = part.region_names or into.region_names


def prediction_from_output(output: Any) -> BodyPrediction:
    """A `BodyPrediction` from a forward output with absolute ``verts_cam`` (B, V, 3) and
    ``root_cam`` (B, 3) (joints: ``joints_cam`` if present, else the root).

    Raises:
        ValueError: The output has no ``verts_cam`` / ``root_cam``.
    """
    verts = getattr(output, "verts_cam", None)
    root = getattr(output, "root_cam", None)
    if not isinstance(verts, torch.Tensor) or not isinstance(root, torch.Tensor):
        raise ValueError(
            f"{type(output).__name__} has no verts_cam/root_cam: validate with predict instead"
        )
    joints = getattr(output, "joints_cam", None)
    if not isinstance(joints, torch.Tensor):
        joints = root[:, None]
    return BodyPrediction(verts_cam=verts.float(), joints_cam=joints.float(), root_cam=root.float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run_validation(
    method: nn.Module,
    loader: DataLoader,
    prepare: StepPreparer,
    *,
    split: str,
    evaluator: Evaluator | None = None,
    max_batches: int | None = None,
    bf16: bool = False,
    progress: bool = False,
    gather_frames: bool = False,
    on_prediction: PredictionCallback | None = None,
    with_targets: bool = False,
    settle_on_ground: bool = False,
    scene_slide_cost: float | None = None,
    depenetrator: Depenetrate | None = None,
) -> ValidationResult:
    """Run a method over a split (or its first ``max_batches`` batches) and score it.

    The method runs in eval mode (modes are restored afterwards) and the global RNG states
    are restored on return, so validating in the middle of training changes nothing.

    Args:
        method: The method (DDP-wrapped or not).
        loader: Evaluation loader (ordered; a `StridedSampler` under DDP), of frames or clips.
        prepare: Batch -> `sahmr.engine.data.Step` (same data mode as the loader).
        split: Split name used in frame names.
        evaluator: Scores bodies; None skips body metrics.
        max_batches: Batches per rank at most (None: all).
        bf16: Autocast to bfloat16 (CUDA only).
        progress: Show a tqdm bar.
        gather_frames: Gather every rank's per-frame rows onto every rank (reports).
        on_prediction: Called with each predicted frame (e.g. to write .npz files).
        with_targets: Run ``forward(inputs, targets)`` (eval mode) instead of ``predict`` and
            score its ``verts_cam`` / ``root_cam`` (see `prediction_from_output`): for a
            network whose ``predict`` needs parts not trained yet, e.g. SA-HMR's mesh network
            without RCNet (ground-truth root and contacts).
        settle_on_ground: Bodies whose centre lies under their scene's solid ground are slid
            back onto it along the camera ray before they are scored and written
            (`sahmr.scene.ground.settle_on_ground`; grounds from the evaluator's scenes).
        scene_slide_cost: Not None: then each body slides along its camera ray to where it
            penetrates its scene least at this price (mm of PenE per mm of slide;
            `sahmr.scene.ray_slide.slide_out_of_scene`; SDFs from the evaluator's scenes).
        depenetrator: Not None: last, ``(pred, T_w2c, sdfs) -> (pred, changed)`` bends each
            penetrating body's joints out of its scene (`sahmr.scene.depenetrate.Depenetrator`;
            differentiable SDFs from the evaluator's scenes).

    Returns:
        The `ValidationResult`, reduced over ranks.
    """
    model = unwrap(method)
    device = prepare.device
    sampler = loader.sampler
    indices = list(sampler.indices) if isinstance(sampler, StridedSampler) else None
    predicts, scores = can_predict(model) or with_targets, has_metrics(model)
    per_frame_scores = has_per_frame_metrics(model)
    result = ValidationResult()
    if evaluator is not None and predicts:
        result.evaluation = EvaluationResult()
        if hasattr(evaluator, "units"):  # the evaluator's protocol and units, not the defaults
            result.evaluation.protocol = evaluator.protocol
            result.evaluation.units = evaluator.units()
    frames = 0
    seconds = 0.0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(total=total, desc=f"eval {split}", unit="batch", disable=not progress)
    cursor = 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(model):
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            B = len(batch)  # dataset items: frames, or clips in clip mode
            idx = indices[cursor : cursor + B] if indices is not None else range(cursor, cursor + B)
            cursor += B
            names = [frame_name(split, i) for i in frame_indices(loader.dataset, idx)]
            step = prepare.step(batch)
            inputs, targets = step.inputs, step.targets
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
            _sync(device)
            t0 = time.perf_counter()
            with autocast:
                if with_targets:
                    if targets is None:
                        raise ValueError("with_targets needs ground truth in the batches")
                    output = model(inputs, targets)
                    pred = prediction_from_output(output)
                else:
                    pred = model.predict(inputs) if predicts else None
                    output = model(inputs) if scores and targets is not None else None
            _sync(device)
            seconds += time.perf_counter() - t0
            frames += step.num_frames
            if scores and output is not None and targets is not None:
                for name, (s, c) in split_metric_sums(model.metrics(output, targets)).items():
                    result.method_metrics.add(name, s, c)
            if per_frame_scores and output is not None and targets is not None:
                for name, values in model.per_frame_metrics(output, targets).items():
                    row = result.method_per_frame.setdefault(name, [])
                    row.extend(float(v) for v in values.detach().double().cpu().reshape(-1))
            if pred is not None:
                scenes = evaluator.scenes if evaluator is not None else None
                if settle_on_ground and scenes is not None:
                    grounds = [scenes.ground_of(s) for s in step.frames.scene_id]
                    pred, shift = settle_ground(pred, step.frames.T_w2c, grounds)
                    result.settled_frames += int((shift.abs().sum(dim=1) > 0).sum())
                if scene_slide_cost is not None and scenes is not None:
                    sdfs = [sampler_sdf(scenes.get(s)) for s in step.frames.scene_id]
                    pred, shift = slide_out_of_scene(pred, step.frames.T_w2c, sdfs,
                                                     slide_cost=scene_slide_cost)  # fmt: skip
                    result.slid_frames += int((shift.abs().sum(dim=1) > 0).sum())
                if depenetrator is not None and scenes is not None:
                    sdfs = [grid_sdf(scenes.get(s)) for s in step.frames.scene_id]
                    pred, changed = depenetrator(pred, step.frames.T_w2c, sdfs)
                    result.depenetrated_frames += int(changed.sum())
                _score_predictions(pred, step.frames, names, evaluator, result, on_prediction)
            bar.update(1)
    bar.close()
    _reduce(result, frames, seconds, gather_frames)
    return result


def predicted_contacts_world(
    pred: BodyPrediction, T_w2c: Tensor
) -> dict[str, list[np.ndarray]] | None:
    """A prediction's scene contact points per frame, world frame (None without them).

    Returns:
        ``{"contact_points_world": [(P_i, 3) float32], "contact_point_region": [(P_i,)
        int64]}``, one entry per frame of the batch (P_i = 0 for a frame without contacts).
    """
    if pred.contact_points_cam is None or pred.contact_batch_idx is None:
        return None
    T_c2w = invert_rigid(T_w2c.to(pred.contact_points_cam.device, torch.float64))
    frame_of = pred.contact_batch_idx
    points = pred.contact_points_cam.detach().to(torch.float64)
    regions = pred.contact_point_region
    out: dict[str, list[np.ndarray]] = {"contact_points_world": [], "contact_point_region": []}
    for i in range(T_w2c.shape[0]):
        mine = frame_of == i
        world = transform_points(T_c2w[i], points[mine])
        out["contact_points_world"].append(world.cpu().numpy().astype(np.float32))
        region = regions[mine] if regions is not None else torch.zeros(int(mine.sum()))
        out["contact_point_region"].append(region.cpu().numpy().astype(np.int64))
    return out


def _score_predictions(
    pred: BodyPrediction,
    batch: Any,
    names: list[str],
    evaluator: Evaluator | None,
    result: ValidationResult,
    on_prediction: PredictionCallback | None,
) -> None:
    vertices_world = pred.vertices_world(batch.T_w2c).detach().to(torch.float64).cpu().numpy()
    # only a writer keeps them (the evaluator scores bodies)
    contacts = predicted_contacts_world(pred, batch.T_w2c) if on_prediction is not None else None
    pred_frames, gt_frames = {}, {}
    for i, name in enumerate(names):
        frame = BodyFrame(name=name, vertices=vertices_world[i], scene=batch.scene_id[i])
        if contacts is not None:
            frame.extras = {k: v[i] for k, v in contacts.items()}
        pred_frames[name] = frame
        if on_prediction is not None:
            on_prediction(name, frame, pred, i)
        if batch.vertices_world is not None:
            contact = None
            if batch.vertex_contact is not None:
                contact = (batch.vertex_contact[i] > 0).cpu().numpy()
            gt_frames[name] = BodyFrame(
                name=name,
                vertices=batch.vertices_world[i].detach().to(torch.float64).cpu().numpy(),
                contact=contact,
                scene=batch.scene_id[i],
            )
    if evaluator is not None and result.evaluation is not None and gt_frames:
        part = evaluator.evaluate(
            MemoryReader(pred_frames), MemoryReader(gt_frames), progress=False
        )
        merge_evaluation(result.evaluation, part)


def _reduce(result: ValidationResult, frames: int, seconds: float, gather_frames: bool) -> None:
    """Sum counts over ranks (in place)."""
    counts = all_reduce_sum(torch.tensor([float(frames), seconds, float(result.settled_frames),
                                          float(result.slid_frames),
                                          float(result.depenetrated_frames)], dtype=torch.float64))
    result.frames, result.seconds = int(counts[0].item()), float(counts[1].item())
    result.settled_frames, result.slid_frames = int(counts[2].item()), int(counts[3].item())
    result.depenetrated_frames = int(counts[4].item())
    result.method_metrics.all_reduce()
    if is_dist() and result.method_per_frame:
        merged: dict[str, list[float]] = {}
        for part in all_gather_objects(result.method_per_frame):
            for name, values in part.items():
                merged.setdefault(name, []).extend(values)
        result.method_per_frame = merged
    ev = result.evaluation
    if ev is None or not is_dist():
        return
    ev.accumulator.all_reduce()
    ev.pen_depth_hist = all_reduce_sum(torch.from_numpy(ev.pen_depth_hist)).numpy()
    if gather_frames:
        parts = all_gather_objects((ev.per_frame, ev.missing, ev.failed))
        ev.per_frame = sorted((r for p in parts for r in p[0]), key=lambda r: r["name"])
        ev.missing = sorted(m for p in parts for m in p[1])
        ev.failed = sorted(f for p in parts for f in p[2])


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write JSON (NaN/inf as null) to a temporary file and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, _finite(obj), indent=2, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj
