"""Refit an SA-HMR checkpoint's parametric head on its own frozen encoder outputs.

The parametric head (`sahmr.models.param_head`) is a small network at the very end of
SA-HMR: everything before it (RCNet, backbone, scene-aware encoder) can stay frozen while
the head learns something new, e.g. the crop-scale input a checkpoint was trained without.
Then one forward pass per frame is enough: `collect_head_inputs` runs the whole model once
(eval mode, RCNet's own root and contacts, exactly as at test time) and keeps what the head
reads plus the frame's ground-truth parameters; `refit_head` then trains the head alone on
that cache for many epochs - minutes on a CPU instead of GPU time.

Loss per frame (the parametric terms of `sahmr.losses.mesh.ParamTerms`, same meaning):
L1 on the 24 rotation matrices, L1 on the shape coefficients (``w_betas``), L1 on the
root-relative vertices and J14 joints of the posed body, and the mean distance of the placed
body's vertices (given root + the head's root offset) to the ground truth. The ground-truth
body is the body model posed by the frame's parameters, once when the cache is built (the
generator's bodies are exactly that; tests/models/test_head_refit.py checks it against the
stored vertices).

Optional scene term (``RefitWeights.penetration`` > 0): the mean over frames of the mean over
vertices of ``relu(-sdf)`` (metres) of the placed body, the SDF read from a local crop of the
room cached per frame (``HeadCache.sdf_crop``): a cube of ``SDF_CROP_NODES``^3 nodes,
``SDF_CROP_SPACING_M`` apart, centred on the frame's ground-truth root and aligned with the
CAMERA axes, node ``[k, j, i]`` at ``root_cam + SDF_CROP_SPACING_M * (i - c, j - c, k - c)``
(``c`` the centre index), holding the room's world SDF at that node's world position
(`sdf_crop_cam`). The loss reads it trilinearly (`crop_sdf`), so the room's grid never
travels with the batch. Validation then also reports the crop's PenE (`validation_scores`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.engine.optimizers import WarmupCosine
from sahmr.evaluation.metrics import MM_PER_M, penetration
from sahmr.geometry.cameras import camera_to_world, world_to_camera
from sahmr.losses.mesh import target_rotmats
from sahmr.models.modes import eval_mode
from sahmr.models.param_head import BodyHead, BodyParams
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M, SDFGrid

logger = logging.getLogger(__name__)

# The crop must hold the placed predicted body around the ground-truth pelvis it is centred
# on: an adult's vertices lie within about 1.1 m of the pelvis (feet of a standing body about
# 1.0 m below it, head top 0.9 m above, a raised hand a little more), and RCNet's root is
# usually within 0.2 m of the truth; a half side of 16 * 0.08 = 1.28 m covers both (a vertex
# beyond it contributes nothing). 8 cm keeps a frame's crop at 33^3 float16 = 72 KB (6000
# train frames: 0.43 GB in memory; 4 cm over the same cube would be 3.3 GB); trilinear
# interpolation is exact on planes (floors, walls, seats: what a body sinks into most) and
# reads edges and corners shallower within one cell. An odd count puts a node on the root.
SDF_CROP_NODES = 33
"""Nodes per side of a frame's SDF crop (``HeadCache.sdf_crop``)."""

SDF_CROP_SPACING_M = 0.08
"""Node spacing of a frame's SDF crop, metres."""

OUTSIDE_CROP_SDF_M = 1.0e3
"""Signed distance (metres) `crop_sdf` gives a point outside the crop: far outside anything,
so it adds no penetration (and no gradient)."""

SDFCropSource = Callable[[Sequence[str], Tensor, Tensor], Tensor]
"""``(scene names (B), T_w2c (B, 4, 4), root_cam (B, 3)) -> crops (B, G, G, G)``, as
`RoomSDFCrops` builds them (`sdf_crop_cam`)."""


@dataclass
class HeadCache:
    """What the head reads for N frames, and their ground truth (camera frame, metres).

    Attributes:
        tokens: Tensor (N, Q, C) float16 encoder outputs of the mesh query tokens.
        xyz_rel: Tensor (N, Q, 3) their regressed root-relative positions.
        crop_side_m: Tensor (N,) metres the crop spans at the given root's depth.
        root_given_cam: Tensor (N, 3) the root the body is placed at (RCNet's).
        betas: Tensor (N, NB) ground-truth shape coefficients.
        rotmats: Tensor (N, 24, 3, 3) ground-truth global orientation (camera axes) and joint
            rotations.
        root_cam: Tensor (N, 3) ground-truth root (pelvis).
        verts_rel: Tensor (N, V, 3) the ground-truth body's vertices minus its root (posed
            once here, not in every step).
        joints14_rel: Tensor (N, 14, 3) its J14 joints minus its root.
        sdf_crop: Tensor (N, G, G, G) float16 signed distances (metres) of the room on a cube
            of nodes centred on ``root_cam`` in camera axes (`sdf_crop_cam`), or None (not
            collected; caches saved before it existed load so).
    """

    tokens: Tensor
    xyz_rel: Tensor
    crop_side_m: Tensor
    root_given_cam: Tensor
    betas: Tensor
    rotmats: Tensor
    root_cam: Tensor
    verts_rel: Tensor
    joints14_rel: Tensor
    sdf_crop: Tensor | None = None

    OPTIONAL = ("sdf_crop",)
    """Fields that may be None (absent from the saved file)."""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor]) -> HeadCache:
        """A cache of ``fn`` applied to every tensor (a field that is None stays None)."""
        return HeadCache(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v)
                            for f in fields(self)})  # fmt: skip

    def rows(self, index: Tensor) -> HeadCache:
        """The frames ``index`` (a copy)."""
        return self._map(lambda v: v[index])

    def to(self, device: torch.device | str) -> HeadCache:
        """The same frames with every tensor on ``device`` (dtypes kept): a refit on a GPU
        holds its whole cache there and indexes batches without host copies."""
        return self._map(lambda v: v.to(device))

    def save(self, path: str | Path) -> None:
        """Writes the tensors atomically (a dict of tensors: loads with ``weights_only``); a
        field that is None is left out."""
        from sahmr.engine.checkpoint import atomic_torch_save

        atomic_torch_save({f.name: v for f in fields(self)
                           if (v := getattr(self, f.name)) is not None}, path)  # fmt: skip

    @staticmethod
    def load(path: str | Path) -> HeadCache:
        """A cache written by `save` (``torch.load(weights_only=True)``); an optional field
        the file lacks (written before the field existed) is None."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        return HeadCache(**{f.name: data.get(f.name) if f.name in HeadCache.OPTIONAL
                            else data[f.name] for f in fields(HeadCache)})  # fmt: skip

    @staticmethod
    def cat(parts: list[HeadCache]) -> HeadCache:
        """Frames of several caches, in order.

        Raises:
            ValueError: An optional field present in some parts only.
        """
        out = {}
        for f in fields(HeadCache):
            values = [getattr(p, f.name) for p in parts]
            missing = sum(v is None for v in values)
            if missing == len(values):
                out[f.name] = None
            elif missing:
                raise ValueError(f"{f.name} is in {len(values) - missing} of {len(values)} "
                                 "caches only: collect it for all or none")  # fmt: skip
            else:
                out[f.name] = torch.cat(values)
        return HeadCache(**out)


def crop_offsets_cam(dtype: torch.dtype = torch.float64, nodes: int = SDF_CROP_NODES) -> Tensor:
    """Offsets of the crop's nodes from its centre, camera axes, metres.

    Returns:
        Tensor of shape (G, G, G, 3): ``[k, j, i] = SDF_CROP_SPACING_M * (i - c, j - c, k - c)``
        with ``c = (G - 1) / 2``, i.e. the (D, H, W) = (z, y, x) layout `grid_sample` reads
        with grid coordinates (x, y, z).
    """
    steps = (torch.arange(nodes, dtype=dtype) - (nodes - 1) / 2) * SDF_CROP_SPACING_M
    k, j, i = torch.meshgrid(steps, steps, steps, indexing="ij")
    return torch.stack([i, j, k], dim=-1)


def sdf_crop_cam(
    sdf: SDFGrid, root_cam: Tensor, T_w2c: Tensor, values: Tensor | None = None
) -> Tensor:
    """The room's signed distances on each frame's crop cube (float64 throughout).

    Node positions ``p_cam = root_cam + crop_offsets_cam()`` go to the world frame
    (``p_world = R_world_cam @ p_cam + t_world_cam``) and read the room's grid trilinearly
    (`SDFGrid.sample`). A node beyond the grid (it spans the scan plus a margin) takes the
    value at the nearest point of the grid's box: `SDFGrid.sample` would add the distance to
    the box, a positive over-estimate that turns the sign a few decimetres below a floor, and a
    crop reaching 1.28 m from a pelvis often goes there; the border value keeps the sign.

    Args:
        sdf: The room's grid (`SDFGrid`, or anything with its ``origin``, ``voxel_size``,
            ``shape_xyz`` and ``sample``, e.g. `sahmr.scene.sdf.ExactSceneSDF`), world frame.
        root_cam: Tensor (B, 3), crop centres (the ground-truth roots), camera frame, metres.
        T_w2c: Tensor (B, 4, 4) world -> camera of each frame.
        values: Optional ``sdf.to_torch()[0]`` in float64 (not re-converted per call).

    Returns:
        Tensor (B, G, G, G) float64, metres; ``[b, k, j, i]`` at offset (i, j, k) steps.
    """
    B = root_cam.shape[0]
    offsets = crop_offsets_cam(torch.float64)
    G = offsets.shape[0]
    nodes_cam = root_cam.double()[:, None] + offsets.reshape(1, -1, 3)  # (B, G^3, 3)
    nodes_world = camera_to_world(T_w2c.double(), nodes_cam)
    lo = torch.as_tensor(sdf.origin, dtype=torch.float64)
    hi = lo + torch.tensor([(n - 1) * sdf.voxel_size for n in sdf.shape_xyz], dtype=torch.float64)
    nodes_world = torch.minimum(torch.maximum(nodes_world, lo), hi)
    with torch.no_grad():
        return sdf.sample(nodes_world, values).reshape(B, G, G, G)


def crop_sdf(points_cam: Tensor, root_cam: Tensor, crop: Tensor) -> Tensor:
    """Signed distance at camera-frame points, read trilinearly from each frame's crop.

    Differentiable in ``points_cam`` (and ``root_cam``). A point outside the crop's cube gets
    ``OUTSIDE_CROP_SDF_M`` (no penetration, no gradient).

    Args:
        points_cam: Tensor (B, V, 3), camera frame, metres.
        root_cam: Tensor (B, 3), the crops' centres (``HeadCache.root_cam``).
        crop: Tensor (B, G, G, G), `sdf_crop_cam`'s layout (any float dtype).

    Returns:
        Tensor (B, V), metres, dtype of ``points_cam``.
    """
    B, V, _ = points_cam.shape
    half_side = SDF_CROP_SPACING_M * (crop.shape[-1] - 1) / 2
    # grid_sample's grid is (x, y, z) over the input's (W, H, D): the crop's (i, j, k)
    grid = (points_cam - root_cam[:, None]) / half_side  # (B, V, 3), the cube is [-1, 1]^3
    values = F.grid_sample(crop.to(points_cam.dtype)[:, None], grid.view(B, V, 1, 1, 3),
                           mode="bilinear", padding_mode="border",
                           align_corners=True).view(B, V)  # fmt: skip
    inside = (grid.abs() <= 1.0).all(dim=-1)
    return torch.where(inside, values, torch.full_like(values, OUTSIDE_CROP_SDF_M))


class RoomSDFCrops:
    """`SDFCropSource` of the rooms of one scene folder (resolved by frame scene name as the
    evaluator does, `sahmr.evaluation.evaluator.SceneSDFs`), one room's grid held at a time:
    the split's frames come room by room, and all of a split's grids would not fit.

    Args:
        scene_dir: Folder of the rooms (a generated dataset's ``rooms/``).
        voxel_size: The rooms' SDF pitch, metres (the evaluator's: its cached grids serve).
        cache_dir: SDF cache folder (default `sahmr.scene.sdf.default_cache_dir`).
        loader: ``(mesh_path, voxel_size=..., cache_dir=...) -> SDFGrid``; default
            `sahmr.scene.sdf.load_or_build_sdf` (the grid alone: no mesh is read).
    """

    def __init__(
        self,
        scene_dir: str | Path,
        *,
        voxel_size: float = SDF_VOXEL_SIZE_M,
        cache_dir: str | Path | None = None,
        loader: Callable[..., SDFGrid] | None = None,
    ) -> None:
        from sahmr.evaluation.evaluator import SceneSDFs
        from sahmr.scene.sdf import load_or_build_sdf

        self.scenes = SceneSDFs(scene_dir=scene_dir, voxel_size=voxel_size, cache_dir=cache_dir)
        self._loader = loader or load_or_build_sdf
        self._held: tuple[Path, SDFGrid, Tensor] | None = None
        self.loads = 0

    def grid(self, scene_name: str) -> tuple[SDFGrid, Tensor]:
        """``(grid, its values (1, 1, D, H, W) float64)`` of a scene (loaded, or held).

        Raises:
            ValueError: No room of that name in the folder.
        """
        from sahmr.evaluation.readers import FrameError

        try:
            path = self.scenes.resolve(scene_name)
        except FrameError as err:
            raise ValueError(str(err)) from err
        if self._held is None or self._held[0] != path:
            self._held = None  # let the previous grid go first
            grid = self._loader(path, voxel_size=self.scenes.voxel_size,
                                cache_dir=self.scenes.cache_dir)  # fmt: skip
            self._held = (path, grid, grid.to_torch()[0].double())
            self.loads += 1
        return self._held[1], self._held[2]

    def __call__(self, scene_names: Sequence[str], T_w2c: Tensor, root_cam: Tensor) -> Tensor:
        """Crops (B, G, G, G) float16 of B frames (`sdf_crop_cam`), on the CPU."""
        out = torch.empty(len(scene_names), *(SDF_CROP_NODES,) * 3, dtype=torch.float16)
        T_w2c, root_cam = T_w2c.detach().cpu(), root_cam.detach().cpu()
        for name in dict.fromkeys(scene_names):  # each room once, in order of appearance
            rows = torch.tensor([i for i, n in enumerate(scene_names) if n == name])
            grid, values = self.grid(name)
            out[rows] = sdf_crop_cam(grid, root_cam[rows], T_w2c[rows], values).half()
        return out


def collect_head_inputs(
    model: nn.Module, steps: Iterable, sdf_crops: SDFCropSource | None = None
) -> HeadCache:
    """Runs SA-HMR on prepared steps and keeps its head's inputs and the ground truth.

    Args:
        model: An SA-HMR (`sahmr.models.sahmr.SAHMR`) with an RCNet and a parametric head.
        steps: Prepared steps (``.inputs`` `FrameInputs`, ``.frame_targets`` `FrameTargets`
            with ``betas``, ``global_orient_cam`` and ``body_pose``; with ``sdf_crops`` also
            ``.frames.scene_id``, the frames' room names).
        sdf_crops: Also keep each frame's room crop around its true root (``sdf_crop``), e.g.
            a `RoomSDFCrops`; None: no crops.

    Returns:
        `HeadCache` on the CPU.

    Raises:
        ValueError: If the model has no parametric head or the targets no parameters.
    """
    head = getattr(model.mesh_net, "param_head", None)
    if head is None:
        raise ValueError("the model has no parametric head to refit")
    seen: list[tuple[Tensor, ...]] = []

    def keep(_module: nn.Module, args: tuple) -> None:
        # (tokens, xyz_rel, crop_side_m): SA-HMR passes the crop side at the root it places at
        tokens, xyz, side = args
        seen.append((tokens.detach().half().cpu(), xyz.detach().float().cpu(),
                     side.detach().float().cpu()))  # fmt: skip

    parts = []
    handle = head.register_forward_pre_hook(keep)
    try:
        with eval_mode(model), torch.no_grad():
            for step in steps:
                t = step.frame_targets
                rotmats = target_rotmats(t)
                if t.betas is None or rotmats is None:
                    raise ValueError("the frames carry no body parameters to refit on")
                seen.clear()
                out = model(step.inputs)
                tokens, xyz, side = seen[-1]
                given = out.root_given_cam if out.root_given_cam is not None else out.root_cam
                gt = head.pose_body(rotmats, t.betas.float())
                crop = None
                if sdf_crops is not None:  # centred on the true root stored below
                    crop = sdf_crops(step.frames.scene_id, t.T_w2c, t.root_cam).half().cpu()
                parts.append(
                    HeadCache(
                        tokens=tokens,
                        xyz_rel=xyz,
                        crop_side_m=side,
                        root_given_cam=given.float().cpu(),
                        betas=t.betas.float().cpu(),
                        rotmats=rotmats.cpu(),
                        root_cam=t.root_cam.float().cpu(),
                        verts_rel=gt.verts_rel.float().cpu(),
                        joints14_rel=gt.joints14_rel.float().cpu(),
                        sdf_crop=crop,
                    )
                )
    finally:
        handle.remove()
    return HeadCache.cat(parts)


@dataclass
class RefitWeights:
    """Weights of the refit loss terms (see the module docstring); ``penetration`` (per metre
    of mean vertex depth in the room) needs caches with ``sdf_crop``."""

    rot: float = 1.0
    betas: float = 0.3
    verts: float = 1.0
    joints3d: float = 1.0
    verts_abs: float = 1.0
    penetration: float = 0.0


def placed_vertices(body: BodyParams, batch: HeadCache) -> Tensor:
    """Tensor (B, V, 3): the predicted body at the given root plus its predicted offset,
    camera frame, metres."""
    root = batch.root_given_cam
    if body.root_offset is not None:
        root = root + body.root_offset
    return body.verts_rel + root[:, None]


def placed_bodies(head: BodyHead, batch: HeadCache) -> tuple[BodyParams, Tensor]:
    """``(predicted body, placed-vertex distance (B, V) metres)``: the predicted body at the
    given root plus its offset against the ground truth at its root."""
    body = head(batch.tokens.float(), batch.xyz_rel, batch.crop_side_m)
    placed = placed_vertices(body, batch)
    dist = (placed - batch.verts_rel - batch.root_cam[:, None]).norm(dim=-1)
    return body, dist


def scene_penetration(points_cam: Tensor, root_cam: Tensor, crop: Tensor) -> Tensor:
    """Tensor (B,): mean over the points of their depth in the room, ``relu(-sdf)``, metres,
    read from each frame's crop (`crop_sdf`; a point outside its crop adds 0).

    Args:
        points_cam: Tensor (B, V, 3), e.g. `placed_vertices`, camera frame, metres.
        root_cam: Tensor (B, 3), the crops' centres (``HeadCache.root_cam``).
        crop: Tensor (B, G, G, G) (``HeadCache.sdf_crop``).
    """
    return torch.relu(-crop_sdf(points_cam, root_cam, crop)).mean(dim=1)


def head_losses(head: BodyHead, batch: HeadCache, weights: RefitWeights) -> Tensor:
    """Weighted loss of the head on cached frames (scalar); the scene term only when its weight
    is > 0 and the frames carry crops."""
    body, dist = placed_bodies(head, batch)
    nb = min(body.betas.shape[-1], batch.betas.shape[-1])
    terms = {
        "param_rot": weights.rot * (body.rotmats - batch.rotmats).abs().mean(),
        "param_betas": weights.betas * (body.betas[:, :nb] - batch.betas[:, :nb]).abs().mean(),
        "param_verts": weights.verts * (body.verts_rel - batch.verts_rel).abs().mean(),
        "param_joints3d": weights.joints3d * (body.joints14_rel - batch.joints14_rel).abs().mean(),
        "param_verts_abs": weights.verts_abs * dist.mean(),
    }
    if weights.penetration > 0 and batch.sdf_crop is not None:
        pen = scene_penetration(placed_vertices(body, batch), batch.root_cam, batch.sdf_crop)
        terms["scene_penetration"] = weights.penetration * pen.mean()
    return torch.stack(list(terms.values())).sum()


@torch.no_grad()
def validation_scores(head: BodyHead, cache: HeadCache, batch_size: int = 64) -> dict[str, float]:
    """The head's scores over ``cache``, per frame then averaged over frames.

    Returns:
        ``"val_mm"``: mean distance (mm) of the placed body's vertices to the ground truth
        (camera frame; the same number as the world-frame G-MPVE, a rigid transform apart);
        with crops also ``"val_pene_mm"``: PenE (mm, sum over the vertices of their depth in
        the room, `sahmr.evaluation.metrics.penetration`) read from the crops, so vertices
        outside a crop count nothing, and the crop's 8 cm trilinear reads edges shallower than
        the evaluator's 2 cm grid with exact distances.
    """
    total, pene, count = 0.0, 0.0, 0
    with eval_mode(head):
        for start in range(0, len(cache), batch_size):
            rows = cache.rows(torch.arange(start, min(start + batch_size, len(cache))))
            body, dist = placed_bodies(head, rows)
            total += float(dist.mean(dim=1).sum())
            if rows.sdf_crop is not None:
                sdf = crop_sdf(placed_vertices(body, rows), rows.root_cam, rows.sdf_crop)
                pene += float(penetration(sdf)["pene"].sum())
            count += len(rows)
    scores = {"val_mm": MM_PER_M * total / max(count, 1)}
    if cache.sdf_crop is not None:
        scores["val_pene_mm"] = pene / max(count, 1)
    return scores


def placed_vertex_error_mm(head: BodyHead, cache: HeadCache, batch_size: int = 64) -> float:
    """Mean distance (mm) of the placed body's vertices to the ground truth over ``cache``
    (``validation_scores(...)["val_mm"]``)."""
    return validation_scores(head, replace(cache, sdf_crop=None), batch_size)["val_mm"]


def refit_head(
    head: BodyHead,
    train: HeadCache,
    val: HeadCache | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-4,
    weights: RefitWeights | None = None,
    val_every: int = 200,
    seed: int = 0,
    progress: bool = False,
    on_best: Callable[[dict], None] | None = None,
) -> dict:
    """Trains ``head`` (its body model stays frozen) on cached frames; keeps the weights that
    scored best on ``val`` (placed-body vertex error), or the last without ``val``.

    Args:
        head: The parametric head, trained in place.
        train: Training frames.
        val: Validation frames (other rooms), or None.
        steps: Optimiser steps (AdamW, cosine decay to 0 after a 5 % warm-up).
        batch_size: Frames per step.
        lr: Peak learning rate.
        weights: Loss weights.
        val_every: Validate every this many steps.
        seed: Seed of the batch order.
        progress: Show a progress bar.
        on_best: Called with the validation row each time val improves, while ``head``
            holds those weights (e.g. to save them: a stopped refit keeps its best).

    Returns:
        ``{"history": [{"step", "loss", "val_mm"[, "val_pene_mm"]}...], "best_step",
        "best_val_mm", "start_val_mm"}``, and ``"start_val_pene_mm"``, ``"best_val_pene_mm"``
        (the crop PenE at the start and at the best step, `validation_scores`) when ``val``
        has crops. The best step is still the one of the lowest ``val_mm``.

    Raises:
        ValueError: A negative penetration weight, or a positive one without train crops.
    """
    from tqdm import tqdm

    weights = weights or RefitWeights()
    if weights.penetration < 0:
        raise ValueError(f"the penetration weight must be >= 0, got {weights.penetration}")
    if weights.penetration > 0 and train.sdf_crop is None:
        raise ValueError("a penetration weight needs training frames with SDF crops "
                         "(collect_head_inputs(..., sdf_crops=...))")  # fmt: skip
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(steps, max(1, steps // 20)))
    gen = torch.Generator().manual_seed(seed)
    start = validation_scores(head, val) if val is not None else {}
    best = {"step": 0, **start, "state": copy_state(head)}
    history = []
    running = 0.0
    head.train()
    for i in tqdm(range(steps), desc="refit head", disable=not progress):
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        loss = head_losses(head, train.rows(idx), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (i + 1) % val_every == 0 or i + 1 == steps:
            row = {"step": i + 1, "loss": running / val_every}
            running = 0.0
            if val is not None:
                row.update(validation_scores(head, val))
                if row["val_mm"] < best["val_mm"]:
                    best = {**row, "state": copy_state(head)}
                    if on_best is not None:
                        on_best(row)
                head.train()
            history.append(row)
            logger.info("refit step %d: %s", i + 1, row)
    if val is not None:
        head.load_state_dict(best["state"])
    head.eval()
    report = {
        "history": history,
        "best_step": best["step"] if val is not None else steps,
        "best_val_mm": best.get("val_mm"),
        "start_val_mm": start.get("val_mm"),
    }
    if "val_pene_mm" in start:
        report.update(start_val_pene_mm=start["val_pene_mm"], best_val_pene_mm=best["val_pene_mm"])
    return report


def encoder_digest(model: nn.Module, head_prefix: str = "mesh_net.param_head.") -> str:
    """sha256 (hex) of every weight and buffer of ``model`` outside the head (names starting
    with ``head_prefix``): what a head cache depends on. Two checkpoints that differ only in
    their heads (a refit of a refit) share their caches; any other change rebuilds them."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if name.startswith(head_prefix):
            continue
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def sdf_crop_spec(source: Literal["stored", "exact"] = "exact") -> dict:
    """What a cache's SDF crops are (stored in its key): nodes, spacing, the rooms' grids
    (``"stored"``: `sahmr.scene.sdf_store.stored_or_built_sdf`; ``"exact"``: the evaluator's,
    of this pitch), and that they hold the rooms' declared solid ground (crops made before
    they did lack the key and are remade)."""
    return {"nodes": SDF_CROP_NODES, "spacing_m": SDF_CROP_SPACING_M, "source": source,
            "sdf_voxel_m": SDF_VOXEL_SIZE_M, "ground": "declared"}  # fmt: skip


def cache_key(
    encoder: str,
    data: str | Path,
    split: str,
    frames: int,
    length: int,
    scene: bool,
    *,
    sdf_crop: bool = False,
    crop_source: Literal["stored", "exact"] = "exact",
) -> dict:
    """What a cache file holds (`write_cache_key` stores it beside the file; `cache_action`
    compares it with the key wanted): the encoder's weights (`encoder_digest`), the split of
    which dataset, which frames (``frames`` spread over ``length``), whether contacts were on,
    and the SDF crops (`sdf_crop_spec` of ``crop_source``, or None without crops)."""
    return {"encoder_sha256": encoder, "data": str(Path(data).resolve()), "split": split,
            "frames": min(frames, length), "of": length, "scene": scene,
            "sdf_crop": sdf_crop_spec(crop_source) if sdf_crop else None}  # fmt: skip


def cache_action(stored: dict | None, wanted: dict) -> Literal["reuse", "add_crops", "build"]:
    """What to do with a cache whose key is ``stored`` (None: no cache) for the key ``wanted``.

    The network's part (every entry but ``sdf_crop``; a key written before crops existed has
    none) must match, or the cache is built again (``"build"``). The crops depend only on the
    frames' true roots, cameras and rooms, not on the network: a matching cache without the
    crops wanted (or with crops of another `sdf_crop_spec`) gets them added (``"add_crops"``,
    see `with_sdf_crops`) instead of running the network again. A cache with crops serves a
    run that wants none (``"reuse"``; the caller may drop them).
    """
    if stored is None:
        return "build"
    if {k: v for k, v in stored.items() if k != "sdf_crop"} != {
        k: v for k, v in wanted.items() if k != "sdf_crop"
    }:
        return "build"
    crops = wanted.get("sdf_crop")
    return "reuse" if crops is None or stored.get("sdf_crop") == crops else "add_crops"


def frame_cameras(dataset: Any, indices: Sequence[int]) -> tuple[list[str], Tensor, Tensor]:
    """Room, camera and true root of dataset frames, read without the network (no steps).

    Args:
        dataset: Items with ``scene_id``, ``T_w2c`` (4, 4) and ``joints_world`` (24, 3)
            (`sahmr.data.sample.Sample`), e.g. a `sahmr.data.synthetic.SyntheticDataset`.
        indices: Which items.

    Returns:
        ``(scene names (N), T_w2c (N, 4, 4) float64, root_cam (N, 3) float64)``, the root the
        pelvis (joint 0) in the camera frame, as `sahmr.data.prepare.prepare_targets` has it.
    """
    names, cams, roots = [], [], []
    for i in indices:
        sample = dataset[int(i)]
        T = torch.as_tensor(sample.T_w2c, dtype=torch.float64)
        names.append(str(sample.scene_id))
        cams.append(T)
        pelvis_world = torch.as_tensor(sample.joints_world, dtype=torch.float64)[:1]
        roots.append(world_to_camera(T, pelvis_world)[0])
    return names, torch.stack(cams), torch.stack(roots)


def with_sdf_crops(
    cache: HeadCache,
    scene_names: Sequence[str],
    T_w2c: Tensor,
    root_cam: Tensor,
    sdf_crops: SDFCropSource,
    *,
    batch_size: int = 64,
    atol_m: float = 1e-3,
) -> HeadCache:
    """``cache`` with each frame's SDF crop, from the frames' rooms and cameras (`frame_cameras`)
    instead of running the network again; centred on the cache's own roots.

    Raises:
        ValueError: The frames are not the cache's (another count, or a true root more than
            ``atol_m`` from the cached one).
    """
    if len(scene_names) != len(cache):
        raise ValueError(f"{len(scene_names)} frames for a cache of {len(cache)}")
    off = float((root_cam.double() - cache.root_cam.double()).norm(dim=-1).max())
    if off > atol_m:
        raise ValueError(f"the frames' true roots are up to {off:.3f} m from the cached ones: "
                         "not the frames the cache holds (delete it to rebuild)")  # fmt: skip
    parts = [sdf_crops(scene_names[s:s + batch_size], T_w2c[s:s + batch_size],
                       cache.root_cam[s:s + batch_size]).half().cpu()
             for s in range(0, len(cache), batch_size)]  # fmt: skip
    return replace(cache, sdf_crop=torch.cat(parts))


def write_cache_key(path: str | Path, key: dict) -> None:
    """Store ``key`` beside the cache file ``path`` (``<path>.json``)."""
    Path(path).with_suffix(".json").write_text(json.dumps(key, indent=1), encoding="utf-8")


def read_cache_key(path: str | Path) -> dict | None:
    """The key stored beside the cache file ``path``, or None (none, or unreadable)."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def copy_state(module: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``module``'s state dict (the best weights a refit keeps)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
