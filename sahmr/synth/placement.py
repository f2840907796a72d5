"""Place posed bodies into a room so that they touch what the action needs and penetrate nothing.

Pipeline of :meth:`Placer.sample_batch` (one action, a batch of candidates):

1. Sample a pose (:func:`sahmr.synth.poses.sample_pose_euler`) and betas per candidate.
2. Pick a target surface of the action's primary contact kind and a facing direction
   (away from the backrest when sitting, towards the wall/table when touching, ...), and
   translate the body so that the required regions land on it (rules per
   :attr:`sahmr.synth.poses.ActionSpec.placement`).
3. Refine all candidates together by a short Adam optimisation (float32) on the room SDF
   over translation, yaw, a small root tilt and the body joint Euler angles (clamped to
   :data:`sahmr.synth.poses.JOINT_LIMITS` after every step). The body is skinned on a
   subset of its vertices (>= 150 vertices of each contact region, every 6th other one)
   for speed, with SMPL's pose blend shapes frozen at the sampled pose; the loss is
   penetration (``relu(margin - sdf)`` over the subset) + contact
   (mean of the lowest ``1/10`` of ``|sdf|`` over each required region) + a prior keeping
   the joint angles near the sampled pose.
4. Evaluate the full mesh (exact :class:`sahmr.body.BodyModel` forward) on the SDF and
   accept a candidate only if every required region touches (min ``|sdf|`` of its vertices
   ``<= contact_tol``, 2 cm), the deepest vertex penetrates ``<= penetration_tol`` (1 cm)
   and, for standing actions, the pelvis and ankles are over walkable floor.

Frames: the ROOM (world) frame is z up, floor at z = 0, metres. Body parameters in
:class:`PlacedBody` are in the room frame: the body's y-up frame is rotated to z up (body
+z, the facing direction, becomes room -y at zero yaw) and then yawed about +z.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform
from torch import Tensor

from sahmr.body.model import BodyModel
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.scene.sdf import SDFGrid, build_sdf_grid
from sahmr.synth.furniture import Surface
from sahmr.synth.poses import (
    ACTIONS,
    JOINT_LIMITS,
    ActionSpec,
    body_euler_to_matrix,
    euler_to_matrix,
    sample_betas,
    sample_pose_euler,
)
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

__all__ = [
    "CONTACT_THRESHOLD",
    "PlacedBody",
    "PlacementStats",
    "Placer",
    "body_to_room_rotation",
    "facing_to_yaw",
]

CONTACT_THRESHOLD = 0.07
"""Distance (m) under which a body vertex counts as touching the scene (SA-HMR's 7 cm)."""

_BODY_TO_ROOM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking the body frame (y up, facing +z) to the room frame (z up, facing -y)."""

_STANDING_MODES = ("floor",)


def facing_to_yaw(facing_xy: np.ndarray) -> float:
    """Yaw (rad, about room +z) that turns the body to face a horizontal direction.

    Args:
        facing_xy: (2,) direction in the room's x-y plane (need not be unit).

    Returns:
        Yaw angle in radians.
    """
    return float(np.arctan2(facing_xy[0], -facing_xy[1]))


def body_to_room_rotation(yaw: float) -> np.ndarray:
    """(3, 3) rotation from the body frame to the room frame for a given yaw (rad)."""
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ _BODY_TO_ROOM


@dataclass
class PlacedBody:
    """A body placed in a room (all quantities in the ROOM frame, z up, metres).

    Attributes:
        betas: (10,) shape coefficients.
        global_orient: (3,) root rotation, axis-angle (rad), room frame.
        body_pose: (69,) joint rotations, axis-angle (rad), SMPL order.
        transl: (3,) SMPL translation, metres, room frame; ``BodyModel`` with these four
            reproduces ``vertices_world``.
        vertices_world: float32 (V, 3) mesh vertices.
        joints_world: float32 (24, 3) SMPL joints.
        vertex_contact: int64 (V,) contact label: the vertex's region (1..7) if its
            ``|sdf| < 0.07`` m, else 0.
        contact_points_world: float32 (P, 3) scene surface points touched: each labelled
            contact vertex projected onto the scene surface along the SDF gradient
            (three steps of ``p <- p - sdf(p) * grad / |grad|``), so each lies within 7 cm
            of its vertex (up to the SDF grid's interpolation error, ~1 cm at sharp edges);
            points that end up farther than 7 cm from their vertex are dropped.
        contact_point_region: int64 (P,) region label (1..7) of each contact point.
        action: action name (key of :data:`sahmr.synth.poses.ACTIONS`).
        object_id: id of the target object in ``Room.objects``; -1 for the floor or a wall.
        surface_kind: kind of the target surface.
        max_penetration: depth (m, >= 0) of the deepest vertex inside the scene (SDF).
        contact_gap: required region label -> min ``|sdf|`` (m) of its vertices.
        frame_index: frame number in a sequence (0 for single samples).
    """

    betas: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    vertices_world: np.ndarray
    joints_world: np.ndarray
    vertex_contact: np.ndarray
    contact_points_world: np.ndarray
    contact_point_region: np.ndarray
    action: str
    object_id: int
    surface_kind: str
    max_penetration: float
    contact_gap: dict[int, float]
    frame_index: int = 0


@dataclass
class PlacementStats:
    """Counters of the placer: candidates tried, accepted and rejected (by reason) per action.

    Attributes:
        attempts: action -> candidates refined.
        accepts: action -> candidates accepted.
        reasons: action -> Counter of rejection reasons (``"penetration"``,
            ``"contact:<region>"``, ``"not_walkable"``, ``"no_target"``).
        seconds: action -> wall time spent (s).
    """

    attempts: Counter = field(default_factory=Counter)
    accepts: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    seconds: Counter = field(default_factory=Counter)

    def rejects(self, action: str) -> int:
        """Rejected candidates of an action."""
        return self.attempts[action] - self.accepts[action]

    def acceptance_rate(self, action: str) -> float:
        """Accepted / attempted candidates (0 when none attempted)."""
        n = self.attempts[action]
        return self.accepts[action] / n if n else 0.0

    def seconds_per_accept(self, action: str | None = None) -> float:
        """Wall time per accepted sample (s), for one action or overall."""
        if action is None:
            acc, sec = sum(self.accepts.values()), sum(self.seconds.values())
        else:
            acc, sec = self.accepts[action], self.seconds[action]
        return sec / acc if acc else float("inf")

    def summary(self) -> str:
        """One line per action: attempts, acceptance rate, ms per accept, top reasons."""
        lines = []
        for a in sorted(self.attempts):
            top = ", ".join(f"{k}={v}" for k, v in self.reasons[a].most_common(3))
            lines.append(
                f"{a}: {self.accepts[a]}/{self.attempts[a]} accepted "
                f"({100 * self.acceptance_rate(a):.0f}%), "
                f"{1000 * self.seconds_per_accept(a):.1f} ms/accept; rejects: {top or '-'}"
            )
        return "\n".join(lines)

    def log(self) -> None:
        """Log :meth:`summary` at INFO level."""
        for line in self.summary().splitlines():
            logger.info("placement %s", line)


class _SDFLookup(torch.autograd.Function):
    """Trilinear SDF lookup whose backward uses the analytic cell gradient (no grid_sample).

    Same values as :meth:`SDFGrid.sample` (clamped to the grid plus the distance outside
    it); about twice as fast on CPU for the refinement's many small batches.
    """

    @staticmethod
    def forward(ctx, points: Tensor, grid: Tensor, origin: Tensor, voxel: float) -> Tensor:
        D, H, W = grid.shape
        q = (points - origin) / voxel
        hi = torch.tensor([W - 1.0001, H - 1.0001, D - 1.0001], dtype=q.dtype, device=q.device)
        qc = torch.minimum(torch.clamp_min(q, 0.0), hi)
        outside = (q - qc).norm(dim=-1) * voxel
        i0 = qc.floor().long()
        f = qc - i0
        base = (i0[..., 2] * H + i0[..., 1]) * W + i0[..., 0]
        offs = torch.tensor(
            [0, 1, W, W + 1, H * W, H * W + 1, H * W + W, H * W + W + 1], device=q.device
        )
        c = grid.reshape(-1)[base[..., None] + offs].reshape(*base.shape, 2, 2, 2)  # z, y, x
        fx, fy, fz = f[..., 0, None, None], f[..., 1, None], f[..., 2]
        cx = c[..., 0] * (1 - fx) + c[..., 1] * fx  # (..., 2z, 2y)
        cy = cx[..., 0] * (1 - fy) + cx[..., 1] * fy  # (..., 2z)
        d = cy[..., 0] * (1 - fz) + cy[..., 1] * fz
        dx = c[..., 1] - c[..., 0]
        fy1, fz1 = f[..., 1], f[..., 2]
        gx = (dx[..., 0, 0] * (1 - fy1) + dx[..., 0, 1] * fy1) * (1 - fz1) + (
            dx[..., 1, 0] * (1 - fy1) + dx[..., 1, 1] * fy1
        ) * fz1
        gy = (cx[..., 0, 1] - cx[..., 0, 0]) * (1 - fz1) + (cx[..., 1, 1] - cx[..., 1, 0]) * fz1
        gz = cy[..., 1] - cy[..., 0]
        ctx.save_for_backward(torch.stack([gx, gy, gz], dim=-1) / voxel)
        return d + outside

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out[..., None] * grad, None, None, None


@dataclass
class _Target:
    """Initial placement of one candidate (room frame)."""

    object_id: int
    surface: Surface
    yaw: float
    anchor: np.ndarray  # (3,) point the placement rule aligns to
    facing: np.ndarray  # (3,) horizontal unit facing direction


def _horizontal_axis(surface: Surface) -> tuple[np.ndarray, float]:
    """The in-plane axis of a vertical surface that is horizontal, and its half size."""
    if abs(surface.axis_u[2]) < 0.5:
        return surface.axis_u, float(surface.half_size[0])
    return surface.axis_v, float(surface.half_size[1])


def _z_range(surface: Surface) -> tuple[float, float]:
    c = surface.corners()[:, 2]
    return float(c.min()), float(c.max())


def clip_mesh_to_box(mesh, lo: np.ndarray, hi: np.ndarray):
    """Clip a trimesh to an axis-aligned box (faces cut at the box planes).

    Args:
        mesh: trimesh.Trimesh, world frame.
        lo: (3,) box minimum, metres.
        hi: (3,) box maximum, metres.

    Returns:
        trimesh.Trimesh: the part of the mesh inside the box.
    """
    import trimesh
    from trimesh.intersections import slice_faces_plane

    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    for axis in range(3):
        n = np.zeros(3)
        n[axis] = 1.0
        if vertices[:, axis].min() < lo[axis]:
            vertices, faces = slice_faces_plane(vertices, faces, n, lo * n)[:2]
        if vertices[:, axis].max() > hi[axis]:
            vertices, faces = slice_faces_plane(vertices, faces, -n, hi * n)[:2]
    return trimesh.Trimesh(vertices, faces, process=False)


class Placer:
    """Samples bodies placed in contact with a room's surfaces (see the module docstring).

    The SDF (built once, or given), the body's per-vertex region labels and the skinning
    subset are cached per placer. Use :attr:`stats` for acceptance rates.
    """

    def __init__(
        self,
        room: Room,
        body: BodyModel,
        sdf: SDFGrid | None = None,
        device: str | torch.device = "cpu",
        *,
        voxel_size: float = 0.025,
        region_xy: np.ndarray | None = None,
        num_candidates: int = 8,
        iterations: int = 25,
        learning_rate: float = 0.015,
        contact_tol: float = 0.02,
        penetration_tol: float = 0.01,
        subset_stride: int = 6,
        max_batches: int = 6,
        margin: float = 0.004,
        penetration_weight: float = 2.0,
    ) -> None:
        """Builds the placer.

        Args:
            room: the room (z up, metres).
            body: body model; its ``topology.contact_labels[0]`` defines the regions.
            sdf: the room's SDF; None builds it with ``voxel_size`` (clipped to
                ``region_xy`` when given, and to 2.4 m height).
            device: torch device for the refinement.
            voxel_size: SDF pitch (m) when the SDF is built here.
            region_xy: optional (2, 2) ``[[xmin, ymin], [xmax, ymax]]`` (m): only place
                bodies whose anchor lies inside (keeps the SDF small in tests).
            num_candidates: candidates refined together per batch.
            iterations: Adam steps of the refinement.
            learning_rate: Adam step size (m for translation, rad for angles).
            contact_tol: max gap (m) between a required region and the scene.
            penetration_tol: max penetration depth (m).
            subset_stride: keep every n-th non-region vertex in the refinement.
            max_batches: batches tried by :meth:`sample` before giving up.
            margin: the refinement pushes subset vertices this far (m) out of the scene,
                covering the vertices it does not skin.
            penetration_weight: weight of the penetration term.
        """
        self.room = room
        self.body = body
        self.device = torch.device(device)
        self.region_xy = None if region_xy is None else np.asarray(region_xy, np.float64)
        self.num_candidates = num_candidates
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.contact_tol = contact_tol
        self.penetration_tol = penetration_tol
        self.max_batches = max_batches
        self.margin = margin
        self.penetration_weight = penetration_weight
        self.stats = PlacementStats()
        self._queue: dict[str, list[PlacedBody]] = defaultdict(list)
        self._feasible: list[str] | None = None
        if sdf is None:
            mesh = room.mesh
            lo = np.array([-1e3, -1e3, -1.0])
            hi = np.array([1e3, 1e3, 2.4])
            if self.region_xy is not None:
                lo[:2] = self.region_xy[0] - 1.0
                hi[:2] = self.region_xy[1] + 1.0
            mesh = clip_mesh_to_box(mesh, lo, hi)
            t0 = time.perf_counter()
            sdf = build_sdf_grid(mesh, voxel_size=voxel_size, margin=0.2)
            logger.info("placer SDF built in %.2f s", time.perf_counter() - t0)
        self.sdf = sdf
        self._sdf_values = sdf.to_torch(self.device)[0]
        self._sdf_origin = torch.as_tensor(sdf.origin, dtype=torch.float32, device=self.device)
        self._prepare_body(subset_stride)

    # ------------------------------------------------------------------ body caches
    def _prepare_body(self, stride: int) -> None:
        labels = np.asarray(self.body.topology.contact_labels[0], dtype=np.int64)
        self.vertex_region = labels
        keep = [np.flatnonzero(labels == 0)[::stride]]
        for r in range(1, 8):  # large regions are thinned too, keeping >= 150 vertices
            idx = np.flatnonzero(labels == r)
            keep.append(idx[:: max(1, len(idx) // 150)])
        subset = np.sort(np.concatenate(keep))
        self._subset = torch.as_tensor(subset, device=self.device)
        sub_labels = labels[subset]
        self._sub_region_idx = {
            r: torch.as_tensor(np.flatnonzero(sub_labels == r), device=self.device)
            for r in range(1, 8)
        }
        self._full_region_idx = {r: np.flatnonzero(labels == r) for r in range(1, 8)}
        bm = self.body
        dev = self.device
        f32 = torch.float32
        V = bm.num_vertices
        self._v_template = bm.v_template.to(dev, f32)
        self._shapedirs = bm.shapedirs.to(dev, f32)
        self._J_regressor = bm.J_regressor.to(dev, f32)
        self._parents = bm.parents.to(dev)
        posedirs = bm.posedirs.to(dev, f32).reshape(-1, V, 3)
        self._posedirs_sub = posedirs[:, self._subset].reshape(posedirs.shape[0], -1)
        self._weights_sub = bm.lbs_weights.to(dev, f32)[self._subset]
        self._limits = torch.as_tensor(JOINT_LIMITS, dtype=f32, device=dev)
        self._body_to_room = torch.as_tensor(_BODY_TO_ROOM, dtype=f32, device=dev)

    def _sdf_fast(self, points: Tensor) -> Tensor:
        """SDF (m) at room-frame points (..., 3), differentiable in the points."""
        return _SDFLookup.apply(
            points, self._sdf_values[0, 0], self._sdf_origin, float(self.sdf.voxel_size)
        )

    def _pose_blend_subset(self, v_shaped_sub: Tensor, body_rot: Tensor) -> Tensor:
        """Shaped subset vertices (B, S, 3) plus SMPL's pose blend shapes for ``body_rot``."""
        B = v_shaped_sub.shape[0]
        pose_feature = (body_rot - torch.eye(3, device=self.device)).reshape(B, -1)
        return v_shaped_sub + (pose_feature @ self._posedirs_sub).reshape(B, -1, 3)

    def _skin_subset(
        self, v_posed: Tensor, joints_rest: Tensor, root_rot: Tensor, body_rot: Tensor
    ) -> Tensor:
        """Linear blend skinning of the vertex subset.

        Args:
            v_posed: (B, S, 3) rest vertices of the subset, shaped and pose-blended.
            joints_rest: (B, 24, 3) rest joints of the shaped body.
            root_rot: (B, 3, 3) root rotation (room frame).
            body_rot: (B, 23, 3, 3) joint rotations.

        Returns:
            (B, S, 3) posed subset vertices without translation, room frame, metres.
        """
        B = v_posed.shape[0]
        rots = torch.cat([root_rot[:, None], body_rot], dim=1)
        _, A = batch_rigid_transform(rots, joints_rest, self._parents)
        T = (self._weights_sub @ A.reshape(B, 24, 16)).reshape(B, -1, 4, 4)
        return (T[..., :3, :3] @ v_posed[..., None])[..., 0] + T[..., :3, 3]

    def _root_rotation(self, yaw: Tensor, root_delta: Tensor, root_body: Tensor) -> Tensor:
        """Room-frame root rotation ``Rz(yaw) @ B2R @ exp(delta) @ R_body`` (B, 3, 3)."""
        zero = torch.zeros_like(yaw)
        rz = euler_to_matrix(torch.stack([zero, zero, yaw], dim=-1))
        return rz @ self._body_to_room @ axis_angle_to_matrix(root_delta) @ root_body

    # ------------------------------------------------------------------ targets
    def _surface_targets(self, spec: ActionSpec) -> list[tuple[int, Surface]]:
        out = []
        for oid, s in self.room.surfaces():
            if s.kind not in spec.target_surfaces:
                continue
            cat = self.room.objects[oid].category
            if spec.categories and cat not in spec.categories:
                continue
            if s.kind == "wall":
                z0, z1 = _z_range(s)
                if z0 > 0.05 or z1 < 1.8 or _horizontal_axis(s)[1] < 0.4:
                    continue
            if self.region_xy is not None and s.kind not in ("floor", "wall"):
                if not self._in_region(s.center[:2]):
                    continue
            out.append((oid, s))
        return out

    def _in_region(self, xy: np.ndarray) -> bool:
        if self.region_xy is None:
            return True
        return bool(np.all(xy >= self.region_xy[0]) and np.all(xy <= self.region_xy[1]))

    def feasible_actions(self) -> list[str]:
        """Actions whose primary surface kind (and object category) exists in the room."""
        if self._feasible is None:
            self._feasible = [a for a, spec in ACTIONS.items() if self._surface_targets(spec)]
        return list(self._feasible)

    def _walkable_point(self, rng: np.random.Generator) -> np.ndarray | None:
        fs = self.room.free_space
        centers = fs.cell_centers()[fs.walkable]
        if self.region_xy is not None:
            inside = np.all((centers >= self.region_xy[0]) & (centers <= self.region_xy[1]), 1)
            centers = centers[inside]
        if len(centers) == 0:
            return None
        xy = centers[rng.integers(len(centers))]
        xy = xy + rng.uniform(-0.5, 0.5, 2) * fs.cell_size
        return np.array([xy[0], xy[1], 0.0])

    def _choose_target(self, spec: ActionSpec, rng: np.random.Generator) -> _Target | None:
        targets = self._surface_targets(spec)
        if not targets:
            return None
        for _ in range(10):
            oid, s = targets[rng.integers(len(targets))]
            t = self._target_on(spec, oid, s, rng)
            if t is not None and self._in_region(t.anchor[:2]):
                return t
        return None

    def _target_on(
        self, spec: ActionSpec, oid: int, s: Surface, rng: np.random.Generator
    ) -> _Target | None:
        mode = spec.placement
        jitter = np.deg2rad(rng.normal(0.0, 6.0))
        fs = self.room.free_space
        if mode == "floor" or (mode == "lie" and s.kind == "floor"):
            anchor = self._walkable_point(rng)
            if anchor is None:
                return None
            yaw = rng.uniform(-np.pi, np.pi)
            facing = body_to_room_rotation(yaw) @ np.array([0.0, 0.0, 1.0])
            return _Target(oid, s, yaw, anchor, facing)
        if mode == "seat":
            front = self.room.objects[oid].front
            facing = np.array([front[0], front[1], 0.0]) if front is not None else None
            if facing is None or np.linalg.norm(facing) < 1e-6:
                facing = np.append(rng.normal(size=2), 0.0)
            facing /= np.linalg.norm(facing)
            off = rng.uniform(-0.25, 0.25, 2) * s.half_size
            anchor = s.center + off[0] * s.axis_u + off[1] * s.axis_v
            return _Target(oid, s, facing_to_yaw(facing) + jitter, anchor, facing)
        if mode == "edge" or (mode == "face" and s.kind == "tabletop"):
            edges = []
            for axis, half in ((s.axis_u, s.half_size[0]), (s.axis_v, s.half_size[1])):
                for sign in (1.0, -1.0):
                    d = sign * axis
                    outside = s.center[:2] + d[:2] * (half + 0.45)
                    if fs.is_walkable(outside):
                        edges.append(
                            (
                                d,
                                half,
                                s.half_size[1] if axis is s.axis_u else s.half_size[0],
                                s.axis_v if axis is s.axis_u else s.axis_u,
                            )
                        )
            if not edges:
                return None
            d, half, half_t, tang = edges[rng.integers(len(edges))]
            t_off = rng.uniform(-0.5, 0.5) * max(half_t - 0.3, 0.0)
            edge_point = s.center + d * half + tang * t_off
            if mode == "edge":
                facing = d.copy()
                anchor = edge_point - d * 0.2
            else:
                facing = -d
                anchor = edge_point - d * 0.1
            facing[2] = 0.0
            facing /= np.linalg.norm(facing)
            return _Target(oid, s, facing_to_yaw(facing) + jitter, anchor, facing)
        if mode == "lie":
            long_axis = s.axis_u if s.half_size[0] >= s.half_size[1] else s.axis_v
            head = long_axis * (1.0 if rng.random() < 0.5 else -1.0)
            yaw = float(np.arctan2(-head[0], head[1])) + 0.5 * jitter
            off = rng.uniform(-0.15, 0.15, 2) * s.half_size
            anchor = s.center + off[0] * s.axis_u + off[1] * s.axis_v
            facing = body_to_room_rotation(yaw) @ np.array([0.0, 0.0, 1.0])
            return _Target(oid, s, yaw, anchor, facing)
        if mode in ("face", "back_to"):  # walls
            h, half_h = _horizontal_axis(s)
            t_off = rng.uniform(-1.0, 1.0) * (half_h - 0.35)
            anchor = s.center + h * t_off
            anchor[2] = 0.0
            outward = np.array([s.normal[0], s.normal[1], 0.0])
            outward /= np.linalg.norm(outward)
            if not fs.is_walkable(anchor[:2] + outward[:2] * 0.5):
                return None
            facing = -outward if mode == "face" else outward
            return _Target(-1, s, facing_to_yaw(facing) + 0.5 * jitter, anchor, facing)
        raise ValueError(f"unknown placement mode {mode!r}")

    def _initial_translation(
        self, spec: ActionSpec, target: _Target, verts: np.ndarray, pelvis: np.ndarray
    ) -> np.ndarray:
        """Translation (3,) putting posed vertices (S, 3) (room frame, no transl) on target."""
        labels = self.vertex_region[self._subset.cpu().numpy()]
        prim = np.isin(labels, spec.contacts[0].regions)
        s, mode = target.surface, spec.placement
        t = np.zeros(3)
        if mode == "floor":
            t[:2] = target.anchor[:2] - pelvis[:2]
            t[2] = target.anchor[2] - verts[:, 2].min()
        elif mode in ("seat", "edge"):
            c = verts[prim].mean(0)
            t[:2] = target.anchor[:2] - c[:2]
            t[2] = s.center[2] - verts[prim, 2].min()
        elif mode == "lie":
            c = verts.mean(0)
            t[:2] = target.anchor[:2] - c[:2]
            t[2] = target.anchor[2] - verts[:, 2].min()
        else:  # face / back_to: feet on the floor, the primary regions at the surface
            f = target.facing
            t[2] = -verts[:, 2].min()
            pv = verts[prim]
            c = pv.mean(0)
            lateral = np.array([-f[1], f[0], 0.0])
            if s.kind == "tabletop":
                along = target.anchor @ f - c @ f
            elif mode == "face":
                along = s.center @ f - (pv @ f).max()
            else:
                along = s.center @ f - (pv @ f).min()
            t += f * along + lateral * ((target.anchor - c) @ lateral)
        return t

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, action: str | None = None) -> PlacedBody | None:
        """Sample one accepted placement.

        Candidates of a batch that are accepted but not returned are queued and returned by
        later calls for the same action (so the amortised cost is per accepted sample).

        Args:
            rng: numpy random generator (all randomness comes from it).
            action: action name, or None for a random feasible one.

        Returns:
            A :class:`PlacedBody`, or None after ``max_batches`` batches without success.
        """
        if action is None:
            feasible = self.feasible_actions()
            if not feasible:
                return None
            action = feasible[rng.integers(len(feasible))]
        queue = self._queue[action]
        for _ in range(self.max_batches):
            if queue:
                break
            queue.extend(self.sample_batch(rng, action))
        return queue.pop(0) if queue else None

    def sample_batch(
        self, rng: np.random.Generator, action: str, num_candidates: int | None = None
    ) -> list[PlacedBody]:
        """Sample, place and refine a batch of candidates; return the accepted ones.

        Args:
            rng: numpy random generator.
            action: action name.
            num_candidates: batch size (default: the placer's ``num_candidates``).

        Returns:
            Accepted placements (possibly empty), in candidate order.
        """
        spec = ACTIONS[action]
        n = num_candidates or self.num_candidates
        t0 = time.perf_counter()
        targets, poses, betas = [], [], []
        for _ in range(n):
            tgt = self._choose_target(spec, rng)
            if tgt is None:
                self.stats.attempts[action] += 1
                self.stats.reasons[action]["no_target"] += 1
                continue
            root, body = sample_pose_euler(action, rng)
            targets.append(tgt)
            poses.append((np.deg2rad(root), np.deg2rad(body)))
            betas.append(sample_betas(rng))
        if not targets:
            self.stats.seconds[action] += time.perf_counter() - t0
            return []
        root_body = euler_to_matrix(torch.as_tensor(np.stack([p[0] for p in poses])))
        out = self._place(
            spec, targets, np.stack(betas), root_body.numpy(), np.stack([p[1] for p in poses])
        )
        self.stats.seconds[action] += time.perf_counter() - t0
        logger.debug(
            "%s: %d/%d accepted in %.0f ms (running rate %.0f%%)",
            action,
            len(out),
            len(targets),
            1000 * (time.perf_counter() - t0),
            100 * self.stats.acceptance_rate(action),
        )
        return out

    def _place(
        self,
        spec: ActionSpec,
        targets: list[_Target],
        betas: np.ndarray,
        root_body: np.ndarray,
        body_euler: np.ndarray,
        init_transl: np.ndarray | None = None,
        iterations: int | None = None,
        prior_weight: float = 1.0,
        smooth_weight: float = 0.0,
        keep_all: bool = False,
    ) -> list[PlacedBody]:
        """Initial placement, refinement and acceptance of a batch (see module docstring).

        Args:
            spec: the action.
            targets: per-candidate targets (length B).
            betas: (B, 10).
            root_body: (B, 3, 3) root rotation in the BODY frame (the yaw of each target and
                the body-to-room rotation are applied on top).
            body_euler: (B, 23, 3) joint Euler angles, rad.
            init_transl: optional (B, 3) translations replacing the placement rule.
            iterations: Adam steps (default: the placer's).
            prior_weight: weight of the pose prior.
            smooth_weight: weight of a second-difference penalty on the translations of
                consecutive candidates (frames of a sequence).
            keep_all: return every candidate (no rejection, stats untouched).

        Returns:
            Accepted placements (all candidates with ``keep_all``).
        """
        dev, f32 = self.device, torch.float32
        B = len(targets)
        betas_t = torch.as_tensor(betas, dtype=f32, device=dev)
        with torch.no_grad():
            v_shaped = self._v_template + torch.einsum("bl,vcl->bvc", betas_t, self._shapedirs)
            joints_rest = torch.einsum("jv,bvc->bjc", self._J_regressor, v_shaped)
            v_shaped_sub = v_shaped[:, self._subset]
        root_body = torch.as_tensor(root_body, dtype=f32, device=dev)
        euler0 = torch.as_tensor(body_euler, dtype=f32, device=dev)
        yaw = torch.as_tensor([t.yaw for t in targets], dtype=f32, device=dev)
        root_delta = torch.zeros(B, 3, device=dev)
        with torch.no_grad():
            # Pose blend shapes are frozen at the sampled pose inside the loop (the pose moves
            # little; this halves the backward pass). The final check is the exact model.
            rot0 = body_euler_to_matrix(euler0)
            v_posed_sub = self._pose_blend_subset(v_shaped_sub, rot0)
        if init_transl is None:
            with torch.no_grad():
                rot = self._root_rotation(yaw, root_delta, root_body)
                verts = self._skin_subset(v_posed_sub, joints_rest, rot, rot0)
            # SMPL rotates about the rest root joint, so the pelvis stays at J_0 + transl.
            verts_np, pelvis_np = verts.cpu().numpy(), joints_rest[:, 0].cpu().numpy()
            init_transl = np.stack(
                [
                    self._initial_translation(spec, targets[b], verts_np[b], pelvis_np[b])
                    for b in range(B)
                ]
            )
        transl = torch.as_tensor(init_transl, dtype=f32, device=dev).clone()
        euler = euler0.clone()
        params = [transl, yaw, root_delta, euler]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.learning_rate)
        lo, hi = self._limits[..., 0], self._limits[..., 1]
        for _ in range(self.iterations if iterations is None else iterations):
            opt.zero_grad(set_to_none=True)
            rot = self._root_rotation(yaw, root_delta, root_body)
            verts = self._skin_subset(v_posed_sub, joints_rest, rot, body_euler_to_matrix(euler))
            verts = verts + transl[:, None]
            sdf = self._sdf_fast(verts)  # (B, S)
            pen = torch.relu(self.margin - sdf).sum(-1)
            contact = torch.zeros(B, device=dev)
            for req in spec.contacts:
                for r in req.regions:
                    d = (sdf[:, self._sub_region_idx[r]] - 0.5 * self.margin).abs()
                    k = max(3, d.shape[1] // 10)
                    contact = contact + d.topk(k, dim=1, largest=False).values.mean(1)
            prior = ((euler - euler0) ** 2).sum((1, 2)) + (root_delta**2).sum(-1)
            loss = (10.0 * contact + self.penetration_weight * pen + prior_weight * prior).sum()
            if smooth_weight > 0 and B > 2:
                acc = transl[2:] - 2 * transl[1:-1] + transl[:-2]
                loss = loss + smooth_weight * (acc**2).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                euler.copy_(torch.maximum(torch.minimum(euler, hi), lo))
        with torch.no_grad():
            rot = self._root_rotation(yaw, root_delta, root_body)
            global_orient = matrix_to_axis_angle(rot)
            body_pose = matrix_to_axis_angle(body_euler_to_matrix(euler)).reshape(B, -1)
        return self._accept(
            spec, targets, betas_t, global_orient, body_pose, transl.detach(), keep_all
        )

    def _accept(
        self,
        spec: ActionSpec,
        targets: list[_Target],
        betas: Tensor,
        global_orient: Tensor,
        body_pose: Tensor,
        transl: Tensor,
        keep_all: bool = False,
    ) -> list[PlacedBody]:
        """Exact full-mesh checks; build :class:`PlacedBody` for accepted candidates."""
        action = spec.name
        with torch.no_grad():
            out = self.body(
                betas=betas.to(self.body.v_template.dtype),
                global_orient=global_orient,
                body_pose=body_pose,
                transl=transl,
            )
            verts = out.vertices.float()
            sdf = self.sdf.sample(verts, values=self._sdf_values)
        sdf_np = sdf.cpu().numpy()
        verts_np = verts.cpu().numpy()
        joints_np = out.joints.float().cpu().numpy()
        accepted = []
        for b, tgt in enumerate(targets):
            depth = float(max(0.0, -sdf_np[b].min()))
            gaps = {
                r: float(np.abs(sdf_np[b, self._full_region_idx[r]]).min())
                for req in spec.contacts
                for r in req.regions
            }
            reason = None
            if depth > self.penetration_tol:
                reason = "penetration"
            else:
                for r, g in gaps.items():
                    if g > self.contact_tol:
                        reason = f"contact:{r}"
                        break
            if reason is None and spec.placement in _STANDING_MODES:
                pts = joints_np[b, [0, 7, 8], :2]
                if not np.all(self.room.free_space.is_walkable(pts)):
                    reason = "not_walkable"
            if not keep_all:
                self.stats.attempts[action] += 1
                if reason is not None:
                    self.stats.reasons[action][reason] += 1
                    continue
                self.stats.accepts[action] += 1
            labels, points, point_region = self._contacts(verts[b], sdf[b])
            accepted.append(
                PlacedBody(
                    betas=betas[b].cpu().numpy().astype(np.float64),
                    global_orient=global_orient[b].cpu().numpy().astype(np.float64),
                    body_pose=body_pose[b].cpu().numpy().astype(np.float64),
                    transl=transl[b].cpu().numpy().astype(np.float64),
                    vertices_world=verts_np[b].astype(np.float32),
                    joints_world=joints_np[b].astype(np.float32),
                    vertex_contact=labels,
                    contact_points_world=points,
                    contact_point_region=point_region,
                    action=action,
                    object_id=tgt.object_id if tgt.surface.kind not in ("floor", "wall") else -1,
                    surface_kind=tgt.surface.kind,
                    max_penetration=depth,
                    contact_gap=gaps,
                )
            )
        return accepted

    def _contacts(self, verts: Tensor, sdf: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vertex contact labels (7 cm rule) and projected scene contact points.

        Args:
            verts: (V, 3) room-frame vertices.
            sdf: (V,) their signed distances.

        Returns:
            ``(labels (V,) int64, points (P, 3) float32, point_region (P,) int64)``.
        """
        region = torch.as_tensor(self.vertex_region, device=verts.device)
        close = (sdf.abs() < CONTACT_THRESHOLD) & (region > 0)
        labels = torch.where(close, region, torch.zeros_like(region))
        idx = torch.nonzero(close).squeeze(1)
        if idx.numel() == 0:
            return labels.cpu().numpy(), np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
        points = verts[idx].detach().clone()
        for _ in range(3):  # Newton-like steps onto the zero level set (sharp edges need >1)
            p = points.clone().requires_grad_(True)
            with torch.enable_grad():
                d = self._sdf_fast(p)
                (grad,) = torch.autograd.grad(d.sum(), p)
            n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            points = (points - d.detach()[:, None] * n).detach()
        keep = (points - verts[idx]).norm(dim=-1) <= CONTACT_THRESHOLD
        return (
            labels.cpu().numpy().astype(np.int64),
            points[keep].cpu().numpy().astype(np.float32),
            region[idx][keep].cpu().numpy().astype(np.int64),
        )
