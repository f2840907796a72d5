"""Score any method's bodies against ground truth and a scene.

Frames are matched by name. Each matched pair is turned into world-frame vertices (meshes as
given, SMPL-format parameters through the body model); joints are always regressed from the
vertices (``J_regressor`` for SMPL's 24 joints, the topology's H36M regressor for 17 / 14
joints), so mesh files and parameter files are scored identically. The body errors of one
frame come from :func:`body_errors`, which the demo uses too (one function, one number).

Scene metrics (PenE, ConFE, contact) need a signed distance per scene, provided by
:class:`SceneSDFs`, which wraps ``sahmr.scene.sdf.load_scene_sdf``: the cached grid, with
exact point-to-mesh distances for every vertex the grid puts inside or near a surface
(negative inside furniture / below the floor). Contact follows the one definition of
`sahmr.scene.contact`: a vertex of the 7 contact regions within 7 cm of the scan, on both
sides of the comparison. Ground-truth contact labels come from the GT file's ``contact``
array when present, otherwise from the GT mesh.

Two protocols (docs/evaluation.md states every definition):

* ``"default"``: this toolkit's metrics (SMPL's 24 joints, PenE / ConFE in mm, contact
  precision / recall / F1, PA-MPVE, mesh edge-length error).
* ``"sahmr"``: the official SA-HMR evaluation (its ``tools/eval_results.py``): 14 H36M joints,
  MPJPE / MPVE aligned by the H36M pelvis only, PenE = sum over the vertices of penetration
  depth and ConFE = PenE on non-contact vertices + |SDF| on ground-truth contact vertices,
  both in metres summed over the vertices as the official script reports them (ConFE = PenE
  without contact labels, as on PROX); SMPL-X ground truth mapped to SMPL topology with a
  user-given deformation-transfer matrix (:func:`sahmr.evaluation.topology_map.load_vertex_map`).
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

from sahmr.body.constants import MAX_BODY_EXTENT_M
from sahmr.evaluation import metrics as M
from sahmr.evaluation.readers import BodyFrame, FrameError, FrameReader
from sahmr.evaluation.reduction import Accumulator
from sahmr.scene.contact import CONTACT_THRESHOLD_M, NUM_CONTACT_REGIONS, vertex_contact
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

PEN_DEPTH_BINS_MM = np.linspace(0.0, 100.0, 51)
"""Bin edges (mm) of the penetration-depth histogram; deeper vertices go in the last bin."""

JOINT_SETS: dict[str, int | list[int]] = {"smpl24": 0, "h36m17": 0, "lsp14": [2, 3]}
"""Joint set -> pelvis index (or the indices averaged: LSP's right and left hip)."""

PROTOCOLS = ("default", "sahmr")
"""Evaluation protocols (see the module docstring and docs/evaluation.md)."""

SAHMR_PENE_UNIT = "m (sum over vertices per frame; official SA-HMR)"
"""Unit of PenE / ConFE under the ``sahmr`` protocol: metres summed over the vertices."""

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
    "edge_error": "% (mean relative edge-length error)",
    "contact_precision": "fraction",
    "contact_recall": "fraction",
    "contact_f1": "fraction",
    "scene_contact_precision": "fraction (mean over classes 1..7 present in pred or GT)",
    "scene_contact_recall": "fraction (mean over classes 1..7 present in pred or GT)",
    "scene_contact_iou": "fraction (mean over classes 1..7 present in pred or GT)",
}


def body_units_problem(vertices: Tensor, label: str) -> str | None:
    """Why ``vertices`` (V, 3) cannot be a body in metres, or None: it spans more than
    `sahmr.body.constants.MAX_BODY_EXTENT_M`. A collapsed mesh (an untrained method's) is no
    unit error: it is scored as it is."""
    extent = float((vertices.amax(0) - vertices.amin(0)).max())
    if extent <= MAX_BODY_EXTENT_M:
        return None
    return (f"{label} spans {extent:.4g} m, more than any body in metres ({MAX_BODY_EXTENT_M:g} "
            "m): in millimetres or centimetres? scale it to metres")


class SDFSampler(Protocol):
    """The part of ``sahmr.scene.sdf.SDFGrid`` the evaluator uses."""

    def sample(self, points: Tensor) -> Tensor:
        """Signed distances (...,) in metres of world points (..., 3)."""
        ...


SDFLoader = Callable[..., SDFSampler]


def _default_sdf_loader(mesh_path: Path, **kwargs: Any) -> SDFSampler:
    """``sahmr.scene.sdf.load_scene_sdf`` (grid + exact mesh distances), imported lazily."""
    from sahmr.scene.sdf import load_scene_sdf

    return load_scene_sdf(mesh_path, **kwargs)


class SceneSDFs:
    """Scene name -> SDF, loaded (or built and cached) on first use.

    Args:
        scene_mesh: One scene mesh used for every frame, or None.
        scene_dir: Folder where a frame's ``scene`` name is resolved as ``<name>.<ext>``
            (``.ply``, ``.obj``, ``.glb``, ``.off``) or ``<name>/mesh.*``, or None.
        voxel_size: SDF voxel size in metres.
        cache_dir: SDF cache folder passed to the loader.
        loader: ``(mesh_path, voxel_size=..., cache_dir=..., ground=...) -> SDFSampler``;
            default ``sahmr.scene.sdf.load_scene_sdf`` (grid + exact mesh distances).
        ground: The scans' solid ground (``sahmr.scene.sdf.resolve_ground``): ``"auto"`` (the
            default: the ground each scan's ``meta.json`` declares, as generated rooms do;
            none for a scan without one), ``"none"``, or a height in metres along the up
            axis, for every scan.
    """

    MESH_EXTS = (".ply", ".obj", ".glb", ".off", ".stl")

    def __init__(
        self,
        scene_mesh: str | Path | None = None,
        scene_dir: str | Path | None = None,
        *,
        voxel_size: float = SDF_VOXEL_SIZE_M,
        cache_dir: str | Path | None = None,
        loader: SDFLoader | None = None,
        ground: str | float | None = "auto",
    ) -> None:
        self.scene_mesh = Path(scene_mesh) if scene_mesh is not None else None
        self.ground = ground
        self.scene_dir = Path(scene_dir) if scene_dir is not None else None
        self.voxel_size = voxel_size
        self.cache_dir = cache_dir
        self._loader = loader or _default_sdf_loader
        self._cache: dict[Path, SDFSampler] = {}
        self._grounds: dict[Path, Any] = {}

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

    def ground_of(self, scene_name: str | None) -> Any:
        """The solid ground of a frame's scene (``sahmr.scene.sdf.resolve_ground`` of the
        ``ground`` setting), or None; read without building the SDF."""
        from sahmr.scene.sdf import resolve_ground

        path = self.resolve(scene_name)
        if path not in self._grounds:
            self._grounds[path] = resolve_ground(path, self.ground)
        return self._grounds[path]

    def get(self, scene_name: str | None) -> SDFSampler:
        """The SDF of a frame's scene."""
        path = self.resolve(scene_name)
        if path not in self._cache:
            logger.info("loading the SDF of %s", path)
            self._cache[path] = self._loader(
                path, voxel_size=self.voxel_size, cache_dir=self.cache_dir, ground=self.ground
            )
        return self._cache[path]


def body_errors(
    pred_verts: Tensor,
    gt_verts: Tensor,
    regressor: Tensor,
    *,
    pelvis: int | list[int] = 0,
    joint_subset: list[int] | None = None,
    edges: Tensor | None = None,
) -> dict[str, Tensor]:
    """Every body error of a batch of frames, from vertices alone (evaluator and demo).

    Joints are ``regressor @ vertices`` on both sides; the pelvis is joint ``pelvis`` of the
    regressed set (or the mean of several), taken before ``joint_subset`` selects the
    joints that are scored (the official SA-HMR protocol takes the H36M pelvis, then scores
    14 joints that do not include it). ``root_error`` is the distance between the two
    pelvises, so any method's mesh gets the same root error wherever it was computed.

    Args:
        pred_verts: Tensor of shape (B, V, 3), metres, world frame.
        gt_verts: Tensor of shape (B, V, 3), metres, world frame.
        regressor: Tensor of shape (J, V), same dtype.
        pelvis: Index (or indices averaged) of the pelvis in the regressed joints.
        joint_subset: Rows of the regressed joints that are scored (default all).
        edges: Optional (E, 2) mesh edges: adds ``edge_error`` (%).

    Returns:
        Dict of Tensors of shape (B,), millimetres (``edge_error`` percent): ``mpjpe``,
        ``pa_mpjpe``, ``mpve``, ``pa_mpve``, ``g_mpjpe``, ``g_mpve``, ``root_error``.
    """
    pj, gj = regressor @ pred_verts, regressor @ gt_verts  # (B, J, 3)
    pp, gp = M._pelvis(pj, pelvis), M._pelvis(gj, pelvis)
    if joint_subset is not None:
        pj, gj = pj[:, joint_subset], gj[:, joint_subset]
    out = {
        "mpjpe": M.mpjpe(pj, gj, pred_pelvis=pp, gt_pelvis=gp),
        "pa_mpjpe": M.pa_mpjpe(pj, gj),
        "mpve": M.mpve(pred_verts, gt_verts, pp, gp),
        "pa_mpve": M.pa_mpve(pred_verts, gt_verts),
        "g_mpjpe": M.g_mpjpe(pj, gj),
        "g_mpve": M.g_mpve(pred_verts, gt_verts),
        "root_error": M.root_error(pp, gp),
    }
    if edges is not None:
        out["edge_error"] = M.edge_length_error(pred_verts, gt_verts, edges)
    return out


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
        protocol: ``"default"`` or ``"sahmr"``.
        units: Metric name -> unit of this result (the protocol's).
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
    protocol: str = "default"
    units: dict[str, str] = field(default_factory=lambda: dict(METRIC_UNITS))

    @property
    def num_frames(self) -> int:
        """Frames scored."""
        return len(self.per_frame)

    def _spread(self, name: str) -> dict[str, float]:
        """``{"median", "p90"}`` over frames of a per-frame metric (NaN rows left out), or {}."""
        values = np.array([float(r[name]) for r in self.per_frame
                           if r.get(name) is not None], np.float64)  # fmt: skip
        values = values[np.isfinite(values)]
        if values.size == 0:
            return {}
        return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Metric name -> ``{"value", "unit", "count"[, "median", "p90"]}``.

        ``count`` is the number of frames behind the value (the mean over frames). Metrics
        scored per frame also give the ``median`` and 90th percentile (``p90``) over frames:
        PenE in particular is heavy-tailed (one body placed under the ground can hold most of
        a split's mean). Contact precision / recall / F1
        are micro-averaged from counts summed over frames; their ``count`` is the number of
        frames on which the value is defined (something predicted for precision, something
        labelled for recall, either for F1). Undefined values are NaN (null in JSON), never 1.
        """
        acc = self.accumulator
        out: dict[str, dict[str, Any]] = {}
        for name in (
            "mpjpe",
            "pa_mpjpe",
            "mpve",
            "pa_mpve",
            "edge_error",
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
                    "unit": self.units[name],
                    "count": int(acc.count(name)),
                    **self._spread(name),
                }
        keys = ("precision", "recall", "f1")
        if "contact_tp" in acc:
            prf = M.precision_recall_f1(*(acc.total(f"contact_{k}") for k in ("tp", "fp", "fn")))
            for k in keys:
                out[f"contact_{k}"] = {
                    "value": float(prf[k]),
                    "unit": "fraction",
                    "count": int(acc.total(f"contact_defined_{k}")),
                }
        if "region_tp" in acc:
            prf = M.precision_recall_f1(*(acc.total(f"region_{k}") for k in ("tp", "fp", "fn")))
            for k in keys:
                defined = acc.total(f"region_defined_{k}")
                for i, region in enumerate(self.region_names):
                    out[f"contact_{k}/{region}"] = {
                        "value": float(prf[k][i]),
                        "unit": "fraction",
                        "count": int(defined[i]),
                    }
        if "scene_tp" in acc:
            counts = [acc.total(f"scene_{k}") for k in ("tp", "fp", "fn")]
            prf = M.precision_recall_f1(*counts)
            for k in ("precision", "recall", "iou"):
                vals = prf[k]
                ok = torch.isfinite(vals)
                mean = float(vals[ok].mean()) if ok.any() else float("nan")
                out[f"scene_contact_{k}"] = {
                    "value": mean,
                    "unit": METRIC_UNITS[f"scene_contact_{k}"],
                    "count": int(acc.count("scene_tp")[0]),
                }
                for c in range(NUM_CONTACT_REGIONS):
                    out[f"scene_contact_{k}/class{c + 1}"] = {
                        "value": float(vals[c]),
                        "unit": "fraction",
                        "count": int(acc.count("scene_tp")[c]),
                    }
        return out


class Evaluator:
    """Matches, converts and scores frames.

    Args:
        body_model: A ``sahmr.body.BodyModel`` (for parameter files, joint regressors, faces
            and the contact regions).
        scenes: Scene SDFs, or None to skip scene metrics (PenE, ConFE, contact).
        joint_set: ``"smpl24"``, ``"h36m17"`` or ``"lsp14"`` for the joint metrics (the
            ``sahmr`` protocol always uses its 14 H36M joints with the H36M pelvis).
        contact_threshold: Metres; predicted vertex contact is ``|sdf| < threshold`` on a
            contact-region vertex.
        gt_contact_threshold: Metres; GT contact derived from the GT mesh when the GT file
            has no ``contact`` labels.
        batch_size: Frames converted and scored together.
        protocol: ``"default"`` or ``"sahmr"`` (the official SA-HMR definitions).
        gt_vertex_map: Optional (V, V_gt) matrix (dense Tensor / array or scipy sparse)
            mapping ground-truth vertices of another topology (SMPL-X's 10,475) to this body's
            V vertices, applied to every ground-truth mesh with V_gt vertices (the official
            SA-HMR deformation transfer; :func:`sahmr.evaluation.topology_map.load_vertex_map`).
        h36m_regressor: Optional (17, V) H36M joint regressor (the official
            ``J_regressor_h36m_correct``); default the body topology's own.
    """

    def __init__(
        self,
        body_model: Any,
        scenes: SceneSDFs | None = None,
        *,
        joint_set: str = "smpl24",
        contact_threshold: float = CONTACT_THRESHOLD_M,
        gt_contact_threshold: float = CONTACT_THRESHOLD_M,
        batch_size: int = 64,
        protocol: str = "default",
        gt_vertex_map: Any = None,
        h36m_regressor: Any = None,
    ) -> None:
        if joint_set not in JOINT_SETS:
            raise ValueError(f"joint_set must be one of {sorted(JOINT_SETS)}; got {joint_set!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
        self.body_model = body_model
        self.scenes = scenes
        self.protocol = protocol
        self.joint_set = "h36m17" if protocol == "sahmr" else joint_set
        self.contact_threshold = contact_threshold
        self.gt_contact_threshold = gt_contact_threshold
        self.batch_size = batch_size
        self.num_vertices = int(body_model.v_template.shape[0])
        self._regions = _contact_regions(body_model)
        self._h36m = None if h36m_regressor is None else _dense64(h36m_regressor)
        if self._h36m is not None and self._h36m.shape != (17, self.num_vertices):
            raise ValueError(
                f"h36m_regressor has shape {tuple(self._h36m.shape)}, not (17, {self.num_vertices})"
            )
        self._regressor = self._joint_regressor()
        self._edges = M.mesh_edges(torch.as_tensor(np.asarray(body_model.faces, np.int64)))
        self._vertex_map = _vertex_map(gt_vertex_map, self.num_vertices)

    def _joint_regressor(self) -> Tensor:
        """(J, V) float64 regressor of the chosen joint set."""
        if self.joint_set == "smpl24":
            return _dense64(self.body_model.J_regressor)
        reg = self._h36m
        if reg is None:
            reg = _dense64(self.body_model.topology.j_regressor_h36m)
        if self.joint_set == "lsp14":
            from sahmr.body.constants import H36M_TO_J14

            reg = reg[list(H36M_TO_J14)]
        return reg

    def _joint_spec(self) -> tuple[int | list[int], list[int] | None]:
        """(pelvis of the regressed joints, scored subset) of the protocol / joint set."""
        if self.protocol == "sahmr":
            from sahmr.body.constants import H36M_TO_J14

            return 0, list(H36M_TO_J14)
        return JOINT_SETS[self.joint_set], None

    def units(self) -> dict[str, str]:
        """Metric name -> unit under this evaluator's protocol."""
        units = dict(METRIC_UNITS)
        if self.protocol == "sahmr":
            units.update(pene=SAHMR_PENE_UNIT, confe=SAHMR_PENE_UNIT)
        return units

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

    def _map_gt(self, gt: BodyFrame, vertices: Tensor) -> tuple[Tensor, np.ndarray | None]:
        """GT vertices (and contact labels) in this body's topology, via the vertex map."""
        contact = gt.contact
        if self._vertex_map is None or vertices.shape[0] == self.num_vertices:
            return vertices, contact
        n_src = vertices.shape[0]
        if self._vertex_map.shape[1] < n_src:
            raise FrameError(
                f"ground truth has {n_src} vertices; the vertex map takes "
                f"{self._vertex_map.shape[1]}"
            )
        vmap = self._vertex_map[:, :n_src]  # the official script's [:, :10475]
        mapped = torch.from_numpy(np.asarray(vmap @ vertices.numpy(), np.float64))
        if contact is not None and contact.shape == (n_src,):
            weight = np.asarray(vmap @ contact.astype(np.float64)).reshape(-1)
            contact = weight >= 0.5
        return mapped, contact

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

        result = EvaluationResult(
            region_names=tuple(CONTACT_REGION_NAMES[1:]),
            protocol=self.protocol,
            units=self.units(),
        )
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
        good: list[tuple[int, Tensor, np.ndarray | None]] = []
        for i, (p, g) in enumerate(pairs):
            try:
                gv, gt_contact = self._map_gt(g, gt_v[i])
            except FrameError as exc:
                logger.error("failed %s: %s", p.name, exc)
                result.failed.append((p.name, str(exc)))
                continue
            for label, v in (("prediction", pred_v[i]), ("ground truth", gv)):
                if v.shape != (self.num_vertices, 3) or not torch.isfinite(v).all():
                    reason = (
                        f"{label} has {tuple(v.shape)} vertices (non-finite or not "
                        f"({self.num_vertices}, 3))"
                    )
                else:
                    reason = body_units_problem(v, label)
                if reason is not None:
                    logger.error("failed %s: %s", p.name, reason)
                    result.failed.append((p.name, reason))
                    break
            else:
                good.append((i, gv, gt_contact))
        rows = []
        for i, gv, gt_contact in good:
            try:
                rows.append(
                    self._score_frame(pairs[i][0], pairs[i][1], pred_v[i], gv, gt_contact, result)
                )
            except FrameError as exc:
                logger.error("failed %s: %s", pairs[i][0].name, exc)
                result.failed.append((pairs[i][0].name, str(exc)))
        result.per_frame.extend(rows)

    def _gt_contact(
        self, labels: np.ndarray | None, sdf: SDFSampler | None, gv: Tensor
    ) -> Tensor | None:
        """(1, V) bool ground-truth contact under the one definition (region vertices only)."""
        if labels is not None:
            if labels.shape != (self.num_vertices,):
                raise FrameError(f"ground-truth contact has shape {labels.shape}")
            gt = torch.from_numpy(np.asarray(labels, bool))[None]
            return gt if self._regions is None else gt & (self._regions > 0)
        if sdf is None:
            return None
        sdf_gt = _sample(sdf, gv, self._band(sdf))[None]
        if self._regions is None:
            return M.predicted_contact(sdf_gt, self.gt_contact_threshold)
        return vertex_contact(sdf_gt, self._regions, self.gt_contact_threshold) > 0

    def _band(self, sdf: SDFSampler) -> float:
        """Values below this band are exact (every threshold the metrics use is below it)."""
        cell = float(getattr(sdf, "voxel_size", 0.0) or 0.0)
        return max(self.contact_threshold, self.gt_contact_threshold, 0.0) + max(3 * cell, 0.01)

    def _score_frame(
        self,
        pred: BodyFrame,
        gt: BodyFrame,
        pv: Tensor,
        gv: Tensor,
        gt_labels: np.ndarray | None,
        result: EvaluationResult,
    ) -> dict[str, Any]:
        """Score one frame; scene lookups may raise FrameError before anything is added."""
        scene_name = gt.scene or pred.scene
        sdf_pred = None
        gt_contact = None  # the one definition: region vertices only
        confe_mask = None  # the vertices ConFE treats as contact
        if self.scenes is not None:
            sdf = self.scenes.get(scene_name)
            gt_contact = self._gt_contact(gt_labels, sdf, gv)
            if self.protocol == "sahmr":
                # official: the dataset's labels as given; none (PROX) -> ConFE = PenE
                confe_mask = torch.zeros(1, self.num_vertices, dtype=torch.bool)
                if gt_labels is not None:
                    confe_mask = torch.from_numpy(np.asarray(gt_labels, bool))[None]
            else:
                confe_mask = gt_contact
            sdf_pred = _sample(sdf, pv, self._band(sdf), exact=confe_mask[0])[None]
        elif gt_labels is not None and gt_labels.shape != (self.num_vertices,):
            raise FrameError(f"ground-truth contact has shape {gt_labels.shape}")

        pelvis, subset = self._joint_spec()
        values = body_errors(
            pv[None], gv[None], self._regressor, pelvis=pelvis, joint_subset=subset,
            edges=self._edges,
        )
        acc = result.accumulator
        row: dict[str, Any] = {"name": pred.name, "scene": scene_name or ""}
        for key, val in values.items():
            acc.update(key, val, valid=torch.isfinite(val))  # NaN: undefined, not averaged
            row[key] = float(val[0])
        if sdf_pred is not None:
            pen = M.penetration(sdf_pred)
            confe = M.contact_fitting_error(sdf_pred, confe_mask)
            scale = 1.0 / M.MM_PER_M if self.protocol == "sahmr" else 1.0
            acc.update("pene", pen["pene"] * scale)
            acc.update("confe", confe * scale)
            acc.update("pen_depth_mean", pen["pene"], counts=pen["pen_count"])
            acc.update("pen_fraction", pen["pen_fraction"])
            depths = (-sdf_pred[sdf_pred < 0]).numpy() * M.MM_PER_M
            hist, _ = np.histogram(
                np.minimum(depths, PEN_DEPTH_BINS_MM[-1] - 1e-9), PEN_DEPTH_BINS_MM
            )
            result.pen_depth_hist += hist
            row.update(
                pene=float(pen["pene"][0] * scale),
                pen_count=int(pen["pen_count"][0]),
                pen_fraction=float(pen["pen_fraction"][0]),
                confe=float(confe[0] * scale),
            )
            c = M.vertex_contact_counts(
                sdf_pred, gt_contact, threshold=self.contact_threshold, regions=self._regions
            )
            prf = M.precision_recall_f1(c["tp"], c["fp"], c["fn"])
            for k in ("tp", "fp", "fn"):
                acc.update(f"contact_{k}", c[k])
                row[f"contact_{k}"] = int(c[k][0])
            for k in ("precision", "recall", "f1"):
                acc.update(f"contact_defined_{k}", torch.isfinite(prf[k]).double())
                row[f"contact_{k}"] = float(prf[k][0])
            if "region_tp" in c:
                rprf = M.precision_recall_f1(c["region_tp"], c["region_fp"], c["region_fn"])
                for k in ("tp", "fp", "fn"):
                    acc.update(f"region_{k}", c[f"region_{k}"])
                for k in ("precision", "recall", "f1"):
                    acc.update(f"region_defined_{k}", torch.isfinite(rprf[k]).double())
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


def _dense64(matrix: Any) -> Tensor:
    """A (dense or sparse) matrix as a dense float64 CPU Tensor."""
    if hasattr(matrix, "toarray"):  # scipy sparse
        matrix = matrix.toarray()
    t = torch.as_tensor(matrix) if not isinstance(matrix, Tensor) else matrix
    t = t.to_dense() if t.is_sparse else t
    return t.detach().to(torch.float64).cpu()


def _vertex_map(matrix: Any, num_vertices: int) -> Any:
    """The GT vertex map, checked: a float64 scipy CSR matrix (kept sparse: SMPL-X -> SMPL
    is 6890 x 10475) or a dense float64 array."""
    if matrix is None:
        return None
    if hasattr(matrix, "tocsr"):
        out = matrix.tocsr().astype(np.float64)
    else:
        if isinstance(matrix, Tensor):
            matrix = matrix.to_dense() if matrix.is_sparse else matrix
            matrix = matrix.detach().cpu().numpy()
        out = np.asarray(matrix, np.float64)
    if out.ndim != 2 or out.shape[0] != num_vertices:
        raise ValueError(
            f"the ground-truth vertex map has shape {tuple(out.shape)}; it must be "
            f"({num_vertices}, number of ground-truth vertices)"
        )
    return out


def _sample(
    sdf: SDFSampler, vertices: Tensor, band: float | None = None, exact: Tensor | None = None
) -> Tensor:
    """SDF (V,) float64 metres at world vertices (V, 3).

    With ``band``: a sampler with ``sample_exact`` (`sahmr.scene.sdf.ExactSceneSDF`) gives
    exact point-to-mesh distances below the band and at ``exact`` vertices; one with only
    ``sample_banded`` (`sahmr.scene.sdf.SDFGrid`) exact grid values there; lower bounds
    above the band either way.
    """
    with torch.no_grad():
        points = vertices.to(torch.float64)
        if band is not None and hasattr(sdf, "sample_exact"):
            out = sdf.sample_exact(points, band, exact=exact)
        elif band is not None and hasattr(sdf, "sample_banded"):
            out = sdf.sample_banded(points.to(torch.float32), band, exact=exact)
        else:
            out = sdf.sample(points.to(torch.float32))
    return torch.as_tensor(out).detach().to(torch.float64).cpu().reshape(-1)


def _contact_regions(body_model: Any) -> Tensor | None:
    """Per-vertex contact region labels (V,) from the model's topology, if it has them."""
    try:
        topo = body_model.topology
    except Exception as exc:  # topology derivation is optional for the metrics
        logger.warning(
            "no body topology (%s): contact over all vertices, per-region scores skipped", exc
        )
        return None
    labels = getattr(topo, "contact_regions", None)
    if labels is None:
        levels = getattr(topo, "contact_labels", None)
        labels = levels[0] if levels else None
    return None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def frame_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the scored frames, in order."""
    return [r["name"] for r in rows]
