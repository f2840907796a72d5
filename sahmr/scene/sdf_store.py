"""Room SDF grids of many rooms held once on a device, looked up per frame in one pass.

Training with a scene penetration term (`sahmr.losses.mesh.ParamTerms`, ``penetration``) reads,
for every frame of a batch, the signed distance of its predicted body's vertices in that
frame's room. `SceneSDFStore` keeps each room's `sahmr.scene.sdf.SDFGrid` as float16 nodes in
one flat tensor with per-room offsets, dims, origin and pitch (float16 rounds a distance of
d metres by at most ``d / 2048``: under 0.1 mm within 20 cm of a surface, where the term
acts); `SceneSDFStore.frames` gathers the per-frame description (`FrameSDFs`) and
`sample_frames` interpolates every frame's points in its own room at once: the trilinear
lookup of `SDFGrid.sample` (nodes clamped to the grid, plus the distance to the grid for a
point outside it) joined with the room's solid ground (``min`` with the height above it),
written as gathers so that no per-frame Python runs in the training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sahmr.scene.room_index import RoomIndex
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M, SDFGrid, resolve_ground

NO_GROUND_M = 1.0e6
"""Height above the ground (metres) a room without a solid ground reports everywhere: far
above anything, so ``min`` with it changes nothing."""


@dataclass
class FrameSDFs:
    """Where each of B frames finds its room's grid in a `SceneSDFStore`.

    Attributes:
        values: Tensor (total,) float16, every room's nodes ``(D, H, W)`` flattened, packed.
        base: Tensor (B,) int64 offset of the frame's room in ``values``.
        dims: Tensor (B, 3) int64 nodes along x, y, z (W, H, D).
        origin: Tensor (B, 3) float64 world position of node (0, 0, 0), metres.
        voxel: Tensor (B,) float64 node spacing, metres.
        ground_normal: Tensor (B, 3) float64 the ground's up direction (zeros: no ground).
        ground_height: Tensor (B,) float64 its height along that direction, metres
            (``-NO_GROUND_M`` without ground).
    """

    values: Tensor
    base: Tensor
    dims: Tensor
    origin: Tensor
    voxel: Tensor
    ground_normal: Tensor
    ground_height: Tensor

    @property
    def batch_size(self) -> int:
        """Number of frames B."""
        return int(self.base.shape[0])


class SceneSDFStore(RoomIndex):
    """SDF grids of rooms (world frame) on one device, indexed like `sahmr.data.memory.SceneStore`.

    Args:
        device: Where the grids live.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self._host: list[Tensor] = []
        self._meta: list[tuple[list[int], list[float], float, list[float], float]] = []
        self.values = torch.zeros(0, dtype=torch.float16, device=self.device)
        self._dirty = False

    @property
    def nbytes(self) -> int:
        """Bytes the grids' nodes take."""
        return 2 * sum(int(v.numel()) for v in self._host)

    def add(self, scene_id: str, grid: SDFGrid) -> int:
        """Add a room's grid (its solid ground included; no-op when present); its index."""
        if scene_id in self._index:
            return self._index[scene_id]
        values = np.asarray(grid.values)
        if values.ndim != 3 or min(values.shape) < 2:
            raise ValueError(f"room {scene_id!r}: an SDF grid needs >= 2 nodes per axis, "
                             f"got shape {values.shape}")  # fmt: skip
        normal, height = [0.0, 0.0, 0.0], -NO_GROUND_M
        if grid.ground is not None:  # set by with_solid_ground, which joined it to the nodes
            normal[grid.ground.axis] = grid.ground.sign
            height = float(grid.ground.height)
        index = self._register(scene_id)
        self._host.append(
            torch.from_numpy(np.ascontiguousarray(values, np.float32)).half().reshape(-1)
        )
        D, H, W = values.shape
        origin = [float(o) for o in np.asarray(grid.origin, np.float64)]
        self._meta.append(([W, H, D], origin, float(grid.voxel_size), normal, height))
        self._dirty = True
        return index

    def _pack(self) -> None:
        if not self._dirty:
            return
        self.values = torch.cat(self._host).to(self.device)
        sizes = [int(v.numel()) for v in self._host]
        base = [0, *np.cumsum(sizes)[:-1].tolist()]
        dims, origin, voxel, normal, height = zip(*self._meta)
        # per room, in FrameSDFs' order after values: base, dims, origin, voxel, ground
        self._per_room = [
            torch.tensor(base, dtype=torch.int64, device=self.device),
            torch.tensor(dims, dtype=torch.int64, device=self.device),
            *(torch.tensor(v, dtype=torch.float64, device=self.device)
              for v in (origin, voxel, normal, height)),
        ]  # fmt: skip
        self._dirty = False

    def frames(self, scene_index: Tensor) -> FrameSDFs:
        """The `FrameSDFs` of B frames given each frame's room index (B,) (any device; the
        training step passes the cache's CPU indices, checked without a device sync).

        Raises:
            IndexError: A CPU index names no stored room.
        """
        self._pack()
        if len(self) == 0:
            raise IndexError("the SDF store holds no rooms")
        if scene_index.device.type == "cpu" and scene_index.numel():  # no device sync
            if int(scene_index.min()) < 0 or int(scene_index.max()) >= len(self):
                raise IndexError(f"room index out of range (store holds {len(self)} rooms)")
        idx = scene_index.to(self.device, torch.int64)
        base, dims, origin, voxel, normal, height = (t[idx] for t in self._per_room)
        return FrameSDFs(self.values, base, dims, origin, voxel, normal, height)


def sample_frames(points_world: Tensor, frames: FrameSDFs) -> Tensor:
    """Signed distance (metres) of each frame's points in its own room, differentiable in the
    points (the interpolation weights carry the gradient; the ground term too).

    The lookup of `SDFGrid.sample` on the float16 nodes: trilinear inside the grid, clamped
    to it plus the distance to it outside, then ``min`` with the height above the room's
    solid ground. Computed in float32 (float64 points stay float64).

    Args:
        points_world: Tensor (B, N, 3) world frame, metres.
        frames: The B frames' rooms (`SceneSDFStore.frames`).

    Returns:
        Tensor (B, N), float32 (float64 for float64 points).
    """
    dtype = torch.promote_types(points_world.dtype, torch.float32)
    p = points_world.to(dtype)
    B, N, _ = p.shape
    dims = frames.dims
    voxel = frames.voxel.to(dtype)[:, None, None]
    q = (p - frames.origin.to(dtype)[:, None]) / voxel  # node units, (B, N, 3)
    top = (dims - 1).to(dtype)[:, None]  # (B, 1, 3) last node along x, y, z
    qc = torch.minimum(q.clamp_min(0.0), top)
    i0 = torch.minimum(qc.detach().floor(), (top - 1).clamp_min(0)).long()  # cell's low node
    f = qc - i0.to(dtype)  # (B, N, 3) in [0, 1]
    W, H = dims[:, 0, None], dims[:, 1, None]  # (B, 1)
    flat = (i0[..., 2] * H + i0[..., 1]) * W + i0[..., 0] + frames.base[:, None]  # (B, N)
    steps = torch.stack([torch.ones_like(W), W, W * H], dim=-1)  # (B, 1, 3) x, y, z strides
    corners = []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                off = dx * steps[..., 0] + dy * steps[..., 1] + dz * steps[..., 2]
                corners.append(frames.values[flat + off].to(dtype))
    c = torch.stack(corners, dim=-1).view(B, N, 2, 2, 2)  # (.., z, y, x)
    fx, fy, fz = f.unbind(-1)
    cx = torch.lerp(c[..., 0], c[..., 1], fx[..., None, None])  # (B, N, z, y)
    cy = torch.lerp(cx[..., 0], cx[..., 1], fy[..., None])  # (B, N, z)
    d = torch.lerp(cy[..., 0], cy[..., 1], fz)
    outside = (q - qc).norm(dim=-1) * voxel[..., 0]
    normal, height = frames.ground_normal.to(dtype), frames.ground_height.to(dtype)
    above_ground = (p * normal[:, None]).sum(-1) - height[:, None]
    return torch.minimum(d + outside, above_ground)


def stored_or_built_sdf(
    mesh_path: str | Path,
    *,
    voxel_size: float = SDF_VOXEL_SIZE_M,
    cache_dir: str | Path | None = None,
) -> SDFGrid:
    """A generated room's SDF grid for training (the refit's crops, `SceneSDFStore`), read
    where the generator left one.

    A generated room's folder holds the contact placer's grid (``placer_sdf_<pitch in 0.1
    mm>.npz``, `sahmr.synth.room_store.sdf_cache_path`; the whole room up to 2.4 m, above any
    body's vertices): the finest one is read, so 148 training rooms cost seconds instead of
    ~15 s each for the evaluator's 2 cm grid. Any other room gets the evaluator's grid
    (`sahmr.scene.sdf.load_or_build_sdf`, built and cached on first use). Both are finer than
    the refit crops' 8 cm spacing, and both are joined with the solid ground the room's
    ``meta.json`` declares (`sahmr.scene.sdf.declared_ground`).

    Args:
        mesh_path: The room's mesh (``rooms/<name>/mesh.ply``).
        voxel_size: Pitch of the evaluator's grid when one is built, metres.
        cache_dir: Its cache folder.
    """
    from sahmr.scene import sdf  # looked up per call (tests stand in for the builder)

    # the 4-digit pitch in the names sorts the finest first
    stored = sorted(Path(mesh_path).parent.glob("placer_sdf_[0-9][0-9][0-9][0-9].npz"))
    if stored:  # grids stored before rooms declared their ground lack it
        return SDFGrid.load(stored[0]).with_solid_ground(resolve_ground(mesh_path, "auto"))
    return sdf.load_or_build_sdf(mesh_path, voxel_size=voxel_size, cache_dir=cache_dir)


__all__ = [
    "NO_GROUND_M",
    "FrameSDFs",
    "SceneSDFStore",
    "sample_frames",
    "stored_or_built_sdf",
]
