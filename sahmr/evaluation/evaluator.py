"""Score any method's bodies against ground truth and a scene.

Frames are matched by name. Each matched pair is turned into world-frame vertices (meshes as
given, SMPL-format parameters through the body model); joints are always regressed from the
vertices (``J_regressor`` for SMPL's 24 joints, the topology's H36M regressor for 17 / 14
joints), so mesh files and parameter files are scored identically.

Scene metrics (PenE, ConFE, contact) need a signed distance field per scene, provided by
:class:`SceneSDFs`, which wraps ``sahmr.scene.sdf.load_or_build_sdf`` (negative inside
furniture / below the floor). Ground-truth contact labels come from the GT file's
``contact`` array when present, otherwise from the GT mesh: ``|sdf(gt vertex)| < 0.07 m``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from sahmr.evaluation import metrics as M
from sahmr.evaluation.readers import BodyFrame, FrameError, FrameReader
from sahmr.evaluation.reduction import Accumulator

logger = logging.getLogger(__name__)

PEN_DEPTH_BINS_MM = np.linspace(0.0, 100.0, 51)
"""Bin edges (mm) of the penetration-depth histogram; deeper vertices go in the last bin."""

JOINT_SETS: dict[str, int | list[int]] = {"smpl24": 0, "h36m17": 0, "lsp14": [2, 3]}
"""Joint set -> pelvis index (or the indices averaged: LSP's right and left hip)."""

METRIC_UNITS: dict[str, str] = {
    "mpjpe": "mm",
    "pa_mpjpe": "mm",
    "mpve": "mm",
    "pa_mpve": "mm",
    "g_mpjpe": "mm",
    "g_mpve": "mm",
    "root_error": "mm",
    "pene": "mm (sum over vertices per frame)",
    "pen_depth_mean": "mm (per penetrating vertex)",
    "pen_fraction": "% of vertices",
    "confe": "mm (sum over vertices per frame)",
    "contact_precision": "fraction",
    "contact_recall": "fraction",
    "contact_f1": "fraction",
    "scene_contact_precision": "fraction (mean over classes 1..7 present in pred or GT)",
    "scene_contact_recall": "fraction (mean over classes 1..7 present in pred or GT)",
    "scene_contact_iou": "fraction (mean over classes 1..7 present in pred or GT)",
}


class SDFSampler(Protocol):
    """The part of ``sahmr.scene.sdf.SDFGrid`` the evaluator uses."""

    def sample(self, points: Tensor) -> Tensor:
        """Signed distances (...,) in metres of world points (..., 3)."""
        ...


SDFLoader = Callable[..., SDFSampler]


def _default_sdf_loader(mesh_path: Path, **kwargs: Any) -> SDFSampler:
    """``sahmr.scene.sdf.load_or_build_sdf``, imported lazily (it needs open3d)."""
    from sahmr.scene.sdf import load_or_build_sdf

    return load_or_build_sdf(mesh_path, **kwargs)


class SceneSDFs:
    """Scene name -> SDF, loaded (or built and cached) on first use.

    Args:
        scene_mesh: One scene mesh used for every frame, or None.
        scene_dir: Folder where a frame's ``scene`` name is resolved as ``<name>.<ext>``
            (``.ply``, ``.obj``, ``.glb``, ``.off``) or ``<name>/mesh.*``, or None.
        voxel_size: SDF voxel size in metres.
        cache_dir: SDF cache folder passed to the loader.
        loader: ``(mesh_path, voxel_size=..., cache_dir=...) -> SDFSampler``; default
            ``sahmr.scene.sdf.load_or_build_sdf``.
    """

    MESH_EXTS = (".ply", ".obj", ".glb", ".off", ".stl")

    def __init__(
        self,
        scene_mesh: str | Path | None = None,
        scene_dir: str | Path | None = None,
        *,
        voxel_size: float = 0.02,
        cache_dir: str | Path | None = None,
        loader: SDFLoader | None = None,
    ) -> None:
        self.scene_mesh = Path(scene_mesh) if scene_mesh is not None else None
        self.scene_dir = Path(scene_dir) if scene_dir is not None else None
        self.voxel_size = voxel_size
        self.cache_dir = cache_dir
        self._loader = loader or _default_sdf_loader
        self._cache: dict[Path, SDFSampler] = {}

    def resolve(self, scene_name: str | None) -> Path:
        """The mesh file for a frame's scene name.

        Raises:
            FrameError: No scene can be found for the frame.
        """
        if self.scene_mesh is not None:
            return self.scene_mesh
        if self.scene_dir is None or not scene_name:
            raise FrameError("no scene: give --scene, or --scene-dir with per-frame 'scene'")
        for candidate in [self.scene_dir / scene_name] + [
            p
            for ext in self.MESH_EXTS
            for p in (
                self.scene_dir / f"{scene_name}{ext}",
                self.scene_dir / scene_name / f"mesh{ext}",
            )
        ]:
            if candidate.is_file():
                return candidate
        raise FrameError(f"scene {scene_name!r} not found in {self.scene_dir}")

    def get(self, scene_name: str | None) -> SDFSampler:
        """The SDF of a frame's scene."""
        path = self.resolve(scene_name)
        if path not in self._cache:
            logger.info("loading the SDF of %s", path)
            self._cache[path] = self._loader(
                path, voxel_size=self.voxel_size, cache_dir=self.cache_dir
            )
        return self._cache[path]


@dataclass
class EvaluationResult:
    """Everything the reports need.

    Attributes:
        accumulator: Count-weighted sums of every metric (see :meth:`summary`).
        per_frame: One dict per scored frame (name, scene, per-frame metric values).
        missing: GT frame names with no prediction.
        failed: ``(name, reason)`` for frames that could not be scored.
        pen_depth_hist: Counts of penetrating vertices per ``PEN_DEPTH_BINS_MM`` bin.
        region_names: Names of the contact regions of the per-region counts.
        has_scene: Whether scene metrics were computed.
    """

    accumulator: Accumulator = field(default_factory=Accumulator)
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pen_depth_hist: np.ndarray = field(
        default_factory=lambda: np.zeros(len(PEN_DEPTH_BINS_MM) - 1, dtype=np.int64)
    )
    region_names: tuple[str, ...] = ()
    has_scene: bool = False

    @property
    def num_frames(self) -> int:
        """Frames scored."""
        return len(self.per_frame)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Metric name -> ``{"value", "unit", "count"}`` (count = frames, or vertices/points
        for count-weighted entries); contact scores are micro-averaged from summed counts."""
        acc = self.accumulator
        out: dict[str, dict[str, Any]] = {}
        for name in (
            "mpjpe",
            "pa_mpjpe",
            "mpve",
            "pa_mpve",
            "g_mpjpe",
            "g_mpve",
            "root_error",
            "pene",
            "pen_depth_mean",
            "pen_fraction",
            "confe",
        ):
            if name in acc:
                out[name] = {
                    "value": acc.mean(name),
                    "unit": METRIC_UNITS[name],
                    "count": int(acc.count(name)),
                }
        if "contact_tp" in acc:
            prf = M.precision_recall_f1(*(acc.total(f"contact_{k}") for k in ("tp", "fp", "fn")))
            frames = int(acc.count("contact_tp"))
            for k in ("precision", "recall", "f1"):
                out[f"contact_{k}"] = {"value": float(prf[k]), "unit": "fraction", "count": frames}
        if "region_tp" in acc:
            prf = M.precision_recall_f1(*(acc.total(f"region_{k}") for k in ("tp", "fp", "fn")))
            for i, region in enumerate(self.region_names):
                for k in ("precision", "recall", "f1"):
                    out[f"contact_{k}/{region}"] = {
                        "value": float(prf[k][i]),
                        "unit": "fraction",
                        "count": int(acc.count("region_tp")[i]),
                    }
        if "scene_tp" in acc:
            counts = [acc.total(f"scene_{k}") for k in ("tp", "fp", "fn")]
            prf = M.precision_recall_f1(*counts)
            present = (counts[0] + counts[1] + counts[2]) > 0  # classes seen in pred or GT
            for k in ("precision", "recall", "iou"):
                mean = float(prf[k][present].mean()) if present.any() else float("nan")
                out[f"scene_contact_{k}"] = {
                    "value": mean,
                    "unit": METRIC_UNITS[f"scene_contact_{k}"],
                    "count": int(acc.count("scene_tp")[0]),
                }
                for c in range(M.NUM_CONTACT_CLASSES):
                    out[f"scene_contact_{k}/class{c + 1}"] = {
                        "value": float(prf[k][c]) if present[c] else float("nan"),
                        "unit": "fraction",
                        "count": int(acc.count("scene_tp")[c]),
                    }
        return out


class Evaluator:
    """Matches, converts and scores frames.

    Args:
        body_model: A ``sahmr.body.BodyModel`` (for parameter files and joint regressors).
        scenes: Scene SDFs, or None to skip scene metrics (PenE, ConFE, contact).
        joint_set: ``"smpl24"``, ``"h36m17"`` or ``"lsp14"`` for the joint metrics.
        contact_threshold: Metres; predicted vertex contact is ``|sdf| < threshold``.
        gt_contact_threshold: Metres; GT contact derived from the GT mesh when the GT file
            has no ``contact`` labels.
        batch_size: Frames converted and scored together.
    """

    def __init__(
        self,
        body_model: Any,
        scenes: SceneSDFs | None = None,
        *,
        joint_set: str = "smpl24",
        contact_threshold: float = M.DEFAULT_CONTACT_THRESHOLD_M,
        gt_contact_threshold: float = M.DEFAULT_CONTACT_THRESHOLD_M,
        batch_size: int = 64,
    ) -> None:
        if joint_set not in JOINT_SETS:
            raise ValueError(f"joint_set must be one of {sorted(JOINT_SETS)}; got {joint_set!r}")
        self.body_model = body_model
        self.scenes = scenes
        self.joint_set = joint_set
        self.contact_threshold = contact_threshold
        self.gt_contact_threshold = gt_contact_threshold
        self.batch_size = batch_size
        self.num_vertices = int(body_model.v_template.shape[0])
        self._regions = _contact_regions(body_model)
        self._regressor = self._joint_regressor()

    def _joint_regressor(self) -> Tensor:
        """(J, V) float64 regressor of the chosen joint set."""
        if self.joint_set == "smpl24":
            reg = self.body_model.J_regressor
        else:
            reg = torch.as_tensor(self.body_model.topology.j_regressor_h36m)
            if self.joint_set == "lsp14":
                from sahmr.body.constants import H36M_TO_J14

                reg = reg[list(H36M_TO_J14)]
        reg = reg.to_dense() if reg.is_sparse else reg
        return reg.detach().to(torch.float64).cpu()

    # ------------------------------------------------------------------ conversion

    def _vertices(self, frames: list[BodyFrame]) -> list[Tensor]:
        """World vertices (V, 3) float64 per frame; raises FrameError per bad frame later."""
        out: list[Tensor | None] = [None] * len(frames)
        param_idx = [i for i, f in enumerate(frames) if f.vertices is None]
        for i, f in enumerate(frames):
            if f.vertices is not None:
                out[i] = torch.from_numpy(np.asarray(f.vertices, dtype=np.float64))
        if param_idx:
            dtype = self.body_model.v_template.dtype
            nb = int(self.body_model.shapedirs.shape[-1])

            def stack(key: str, size: int | None = None) -> Tensor:
                rows = []
                for i in param_idx:
                    v = frames[i].params[key]  # type: ignore[index]
                    if size is not None:
                        v = np.concatenate([v, np.zeros(max(0, size - v.size))])[:size]
                    rows.append(torch.from_numpy(np.asarray(v, dtype=np.float64)))
                return torch.stack(rows).to(dtype)

            with torch.no_grad():
                body = self.body_model(
                    betas=stack("betas", nb),
                    global_orient=stack("global_orient"),
                    body_pose=stack("body_pose"),
                    transl=stack("transl"),
                )
            for k, i in enumerate(param_idx):
                out[i] = body.vertices[k].to(torch.float64)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ scoring

    def evaluate(
        self,
        predictions: FrameReader,
        ground_truth: FrameReader,
        *,
        progress: bool = True,
    ) -> EvaluationResult:
        """Score every ground-truth frame that has a prediction.

        Args:
            predictions: Reader of predicted frames.
            ground_truth: Reader of ground-truth frames.
            progress: Show a tqdm bar.

        Returns:
            The :class:`EvaluationResult`; frames without prediction are listed in
            ``missing``, unreadable or inconsistent ones in ``failed``.
        """
        from sahmr.body.constants import CONTACT_REGION_NAMES

        result = EvaluationResult(region_names=tuple(CONTACT_REGION_NAMES[1:]))
        result.has_scene = self.scenes is not None
        pred_names = set(predictions.names())
        names = ground_truth.names()
        for name in sorted(pred_names - set(names)):
            logger.warning("prediction %r has no ground truth; ignored", name)
        bar = tqdm(total=len(names), desc="evaluate", unit="frame", disable=not progress)
        for start in range(0, len(names), self.batch_size):
            batch_names = names[start : start + self.batch_size]
            pairs: list[tuple[BodyFrame, BodyFrame]] = []
            for name in batch_names:
                if name not in pred_names:
                    logger.warning("missing prediction: %s", name)
                    result.missing.append(name)
                    continue
                try:
                    pairs.append((predictions.load(name), ground_truth.load(name)))
                except (FrameError, KeyError, OSError) as exc:
                    logger.error("failed to read %s: %s", name, exc)
                    result.failed.append((name, str(exc)))
            self._score_batch(pairs, result)
            bar.update(len(batch_names))
        bar.close()
        return result

    def _score_batch(
        self, pairs: list[tuple[BodyFrame, BodyFrame]], result: EvaluationResult
    ) -> None:
        if not pairs:
            return
        try:
            pred_v = self._vertices([p for p, _ in pairs])
            gt_v = self._vertices([g for _, g in pairs])
        except Exception as exc:  # a bad parameter shape fails the whole forward: go one by one
            if len(pairs) == 1:
                result.failed.append((pairs[0][0].name, f"{type(exc).__name__}: {exc}"))
                logger.error("failed to convert %s: %s", pairs[0][0].name, exc)
                return
            for pair in pairs:
                self._score_batch([pair], result)
            return
        good: list[int] = []
        for i, (p, _) in enumerate(pairs):
            for label, v in (("prediction", pred_v[i]), ("ground truth", gt_v[i])):
                if v.shape != (self.num_vertices, 3) or not torch.isfinite(v).all():
                    reason = (
                        f"{label} has {tuple(v.shape)} vertices (non-finite or not "
                        f"({self.num_vertices}, 3))"
                    )
                    logger.error("failed %s: %s", p.name, reason)
                    result.failed.append((p.name, reason))
                    break
            else:
                good.append(i)
        rows = []
        for i in good:
            try:
                rows.append(self._score_frame(pairs[i][0], pairs[i][1], pred_v[i], gt_v[i], result))
            except FrameError as exc:
                logger.error("failed %s: %s", pairs[i][0].name, exc)
                result.failed.append((pairs[i][0].name, str(exc)))
        result.per_frame.extend(rows)

    def _score_frame(
        self, pred: BodyFrame, gt: BodyFrame, pv: Tensor, gv: Tensor, result: EvaluationResult
    ) -> dict[str, Any]:
        """Score one frame; scene lookups may raise FrameError before anything is added."""
        scene_name = gt.scene or pred.scene
        sdf_pred = sdf_gt = None
        gt_contact = None
        if gt.contact is not None:
            if gt.contact.shape != (self.num_vertices,):
                raise FrameError(f"ground-truth contact has shape {gt.contact.shape}")
            gt_contact = torch.from_numpy(gt.contact)[None]
        if self.scenes is not None:
            sdf = self.scenes.get(scene_name)
            # Values are exact below this band (and at GT contact vertices, for ConFE); every
            # metric only thresholds the SDF below it (see SDFGrid.sample_banded).
            band = max(self.contact_threshold, self.gt_contact_threshold, 0.0) + 0.01
            if gt_contact is None:
                sdf_gt = _sample(sdf, gv, band)[None]
                gt_contact = M.predicted_contact(sdf_gt, self.gt_contact_threshold)
            sdf_pred = _sample(sdf, pv, band, exact=gt_contact[0].bool())[None]

        P, G = pv[None], gv[None]
        pj, gj = self._regressor @ P, self._regressor @ G  # (1, J, 3)
        pelvis = JOINT_SETS[self.joint_set]
        pp = M._pelvis(pj, pelvis)
        gp = M._pelvis(gj, pelvis)
        values = {
            "mpjpe": M.mpjpe(pj, gj, pred_pelvis=pp, gt_pelvis=gp),
            "pa_mpjpe": M.pa_mpjpe(pj, gj),
            "mpve": M.mpve(P, G, pp, gp),
            "pa_mpve": M.pa_mpve(P, G),
            "g_mpjpe": M.g_mpjpe(pj, gj),
            "g_mpve": M.g_mpve(P, G),
            "root_error": M.root_error(pp, gp),
        }
        acc = result.accumulator
        row: dict[str, Any] = {"name": pred.name, "scene": scene_name or ""}
        for key, val in values.items():
            acc.update(key, val)
            row[key] = float(val[0])
        if sdf_pred is not None:
            pen = M.penetration(sdf_pred)
            acc.update("pene", pen["pene"])
            acc.update("pen_depth_mean", pen["pene"], counts=pen["pen_count"])
            acc.update("pen_fraction", pen["pen_fraction"])
            depths = (-sdf_pred[sdf_pred < 0]).numpy() * M.MM_PER_M
            hist, _ = np.histogram(
                np.minimum(depths, PEN_DEPTH_BINS_MM[-1] - 1e-9), PEN_DEPTH_BINS_MM
            )
            result.pen_depth_hist += hist
            row.update(
                pene=float(pen["pene"][0]),
                pen_count=int(pen["pen_count"][0]),
                pen_fraction=float(pen["pen_fraction"][0]),
            )
            if gt_contact is not None:
                confe = M.contact_fitting_error(sdf_pred, gt_contact)
                acc.update("confe", confe)
                c = M.vertex_contact_counts(
                    sdf_pred, gt_contact, threshold=self.contact_threshold, regions=self._regions
                )
                for k in ("tp", "fp", "fn"):
                    acc.update(f"contact_{k}", c[k])
                    row[f"contact_{k}"] = int(c[k][0])
                    if "region_tp" in c:
                        acc.update(f"region_{k}", c[f"region_{k}"])
                prf = M.precision_recall_f1(c["tp"], c["fp"], c["fn"])
                row.update(confe=float(confe[0]), contact_f1=float(prf["f1"][0]))
        if pred.scene_contact_labels is not None and gt.scene_contact_labels is not None:
            if pred.scene_contact_labels.shape != gt.scene_contact_labels.shape:
                logger.warning("%s: scene contact labels differ in shape; skipped", pred.name)
            else:
                sc = M.scene_contact_class_counts(
                    torch.from_numpy(pred.scene_contact_labels)[None],
                    torch.from_numpy(gt.scene_contact_labels)[None],
                )
                for k in ("tp", "fp", "fn"):
                    acc.update(f"scene_{k}", sc[k])
        return row


def _sample(
    sdf: SDFSampler, vertices: Tensor, band: float | None = None, exact: Tensor | None = None
) -> Tensor:
    """SDF (V,) float64 metres at world vertices (V, 3).

    With ``band`` and a sampler that has ``sample_banded`` (`sahmr.scene.sdf.SDFGrid`),
    values are exact below the band and at ``exact`` vertices, lower bounds above it.
    """
    with torch.no_grad():
        points = vertices.to(torch.float32)
        if band is not None and hasattr(sdf, "sample_banded"):
            out = sdf.sample_banded(points, band, exact=exact)
        else:
            out = sdf.sample(points)
    return torch.as_tensor(out).detach().to(torch.float64).cpu().reshape(-1)


def _contact_regions(body_model: Any) -> Tensor | None:
    """Per-vertex contact region labels (V,) from the model's topology, if it has them."""
    try:
        topo = body_model.topology
    except Exception as exc:  # topology derivation is optional for the metrics
        logger.warning("no body topology (%s): per-region contact scores skipped", exc)
        return None
    labels = getattr(topo, "contact_regions", None)
    if labels is None:
        levels = getattr(topo, "contact_labels", None)
        labels = levels[0] if levels else None
    return None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def frame_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the scored frames, in order."""
    return [r["name"] for r in rows]
