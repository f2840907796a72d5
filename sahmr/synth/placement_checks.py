"""The placer's verdicts on full body meshes: penetration, contact, surface kinds, labels.

A candidate is accepted when its deepest vertex penetrates at most ``penetration_tol``, every
required region comes within ``contact_tol`` of the scene and the touching vertices of each
required region lie on a surface of a required kind. Distances come from the room's SDF grid
where it settles the verdict (its trilinear value is off by at most ``sum_c w_c |p - node_c|``,
:meth:`PlacementChecks.grid_error`) and from the exact room-mesh distance everywhere else.
Vertex contact labels follow the 7 cm rule (`sahmr.scene.contact.CONTACT_THRESHOLD_M`) on the
same distances.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sahmr.body.pose_library import ActionSpec
from sahmr.scene.contact import CONTACT_THRESHOLD_M
from sahmr.scene.sdf import MeshSignedDistance, SDFGrid, trilinear_sdf
from sahmr.synth.placement_rules import Target
from sahmr.synth.rooms import Room


class PlacementChecks:
    """Acceptance checks and contact labels of one room, for one body's regions.

    Args:
        room: The room (z up, metres).
        sdf: The room's SDF grid.
        sdf_values: The grid's values as a tensor (``sdf.to_torch(device)[0]``).
        sdf_origin: (3,) the grid's origin as a float32 tensor on the same device.
        vertex_region: (V,) contact region of each body vertex (0: none).
        contact_tol: Max gap (m) between a required region and the scene.
        penetration_tol: Max penetration depth (m).
        surface_tol: A required region's touching vertices must lie within
            ``contact_tol + surface_tol`` (m) of a surface rectangle of a required kind.
        mesh_distance: The room mesh's exact distance (built on first use when None).
    """

    def __init__(
        self,
        room: Room,
        sdf: SDFGrid,
        sdf_values: Tensor,
        sdf_origin: Tensor,
        vertex_region: np.ndarray,
        *,
        contact_tol: float,
        penetration_tol: float,
        surface_tol: float,
        mesh_distance: MeshSignedDistance | None = None,
    ) -> None:
        self.room = room
        self.sdf = sdf
        self._sdf_values = sdf_values
        self._sdf_origin = sdf_origin
        self.vertex_region = vertex_region
        self.region_idx = {r: np.flatnonzero(vertex_region == r) for r in range(1, 8)}
        """Region label -> indices of its vertices."""
        self.contact_tol = contact_tol
        self.penetration_tol = penetration_tol
        self.surface_tol = surface_tol
        self._exact = mesh_distance
        self._rect_cache: dict[tuple, tuple[np.ndarray, ...] | None] = {}

    @property
    def mesh_distance(self) -> MeshSignedDistance:
        """Exact signed distance to the room mesh (open3d when it imports, else culled
        brute force in torch on the CPU), built on first use."""
        if self._exact is None:
            mesh = self.room.mesh
            self._exact = MeshSignedDistance(
                np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces), device="cpu",
                ground=self.room.ground,
            )
        return self._exact

    def grid_error(self, verts: np.ndarray) -> np.ndarray:
        """Bound (m) of the grid's trilinear error at each vertex (V, 3) -> (V,).

        Each node holds the exact distance, which is 1-Lipschitz, so the interpolated value
        is off by at most ``sum_c w_c |p - node_c|`` (at most sqrt(3) voxels); outside the
        grid the bound is infinite.
        """
        vox = float(self.sdf.voxel_size)
        q = (verts - self.sdf.origin) / vox
        hi = np.array(self.sdf.shape_xyz) - 1
        f = q - np.floor(q)
        wx, wy, wz = (np.stack([1 - f[:, k], f[:, k]], 1) for k in range(3))
        dx, dy, dz = (np.stack([f[:, k], 1 - f[:, k]], 1) for k in range(3))
        w = wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]
        d = np.sqrt(dx[:, :, None, None] ** 2 + dy[:, None, :, None] ** 2
                    + dz[:, None, None, :] ** 2)  # fmt: skip
        bound = vox * (w * d).reshape(len(verts), -1).sum(1)
        outside = np.any((q < 0) | (q > hi), axis=1)
        return np.where(outside, np.inf, bound)

    def decide(self, sdf: np.ndarray, regions: list[int], err: np.ndarray | None) -> str | None:
        """Penetration / contact verdict from signed distances (V,) known up to ``err`` (V,)
        metres (None: exact): a reason when certainly rejected, else None."""
        e = 0.0 if err is None else err
        if np.any(sdf + e < -self.penetration_tol):
            return "penetration"
        gap = np.abs(sdf) - e
        for r in regions:
            if gap[self.region_idx[r]].min() > self.contact_tol:
                return f"contact:{r}"
        return None

    def exact_near(
        self, verts: np.ndarray, sdf: np.ndarray, regions: list[int], err: np.ndarray
    ) -> np.ndarray:
        """Grid values (V,) with the exact mesh distance at every vertex the grid cannot
        settle: possibly deeper than ``penetration_tol``, or of a required region and
        possibly within ``contact_tol``; all of them lie within ``|sdf| + err`` of the mesh.
        """
        need = sdf - err < -self.penetration_tol
        for r in regions:
            idx = self.region_idx[r]
            need[idx] |= np.abs(sdf[idx]) - err[idx] <= self.contact_tol
        return self.exact_where(verts, sdf, err, need)

    def exact_where(
        self, verts: np.ndarray, sdf: np.ndarray, err: np.ndarray, need: np.ndarray
    ) -> np.ndarray:
        """``sdf`` (V,) with the exact mesh distance at the vertices where ``need`` (V,) is
        true; each lies within ``|sdf| + err`` of the mesh."""
        idx = np.flatnonzero(need)
        out = sdf.copy()
        if idx.size:
            reach = float(np.max(np.abs(sdf[idx]) + err[idx])) + 1e-3
            out[idx] = self.mesh_distance(verts[idx].astype(np.float64), max_distance=reach)
        return out

    def exact_at_threshold(self, verts: np.ndarray, sdf: np.ndarray, err: np.ndarray) -> np.ndarray:
        """Grid values (V,) with the exact mesh distance at every contact-region vertex whose
        label the grid cannot settle (``| |sdf| - CONTACT_THRESHOLD_M | <= err``), so the
        labels follow the evaluator's definition (exact distance, 7 cm) at every vertex."""
        region = np.asarray(self.vertex_region)
        need = (region > 0) & (np.abs(np.abs(sdf) - CONTACT_THRESHOLD_M) <= err + 1e-4)
        return self.exact_where(verts, sdf, err, need)

    def surface_check(
        self, spec: ActionSpec, target: Target, verts: np.ndarray, sdf: np.ndarray
    ) -> str | None:
        """``"surface:<region>"`` when a required region touches no surface of its kinds.

        Args:
            spec: the action.
            target: the candidate's target (its object's surfaces are preferred).
            verts: (V, 3) room-frame vertices.
            sdf: (V,) their signed distances (m).
        """
        limit = self.contact_tol + self.surface_tol
        for req in spec.contacts:
            if "floor" in req.surfaces:
                continue
            rects = self.rectangles(req.surfaces, target.object_id)
            if rects is None:
                continue
            for r in req.regions:
                idx = self.region_idx[r]
                touching = verts[idx[np.abs(sdf[idx]) <= self.contact_tol]]
                if len(touching) == 0:
                    return f"contact:{r}"
                if rectangle_distance(touching, *rects).min() > limit:
                    return f"surface:{r}"
        return None

    def rectangles(self, kinds: tuple[str, ...], object_id: int) -> tuple[np.ndarray, ...] | None:
        """Stacked rectangles of the given kinds: the target object's if it has any, else the
        room's; None when the room has none."""
        key = (kinds, object_id)
        if key not in self._rect_cache:
            surf = []
            if object_id >= 0:
                surf = [s for s in self.room.objects[object_id].surfaces if s.kind in kinds]
            if not surf:
                surf = [s for _, s in self.room.surfaces() if s.kind in kinds]
            self._rect_cache[key] = (
                None
                if not surf
                else tuple(
                    np.stack([getattr(s, a) for s in surf])
                    for a in ("center", "axis_u", "axis_v", "half_size")
                )
            )
        return self._rect_cache[key]

    def contacts(
        self, verts: Tensor, sdf: Tensor
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Vertex contact labels (7 cm rule) and projected scene contact points.

        Args:
            verts: (B, V, 3) room-frame vertices.
            sdf: (B, V) their signed distances.

        Returns:
            Per body ``(labels (V,) int64, points (P, 3) float32, point_region (P,) int64)``.
        """
        region = torch.as_tensor(self.vertex_region, device=verts.device)
        close = (sdf.abs() < CONTACT_THRESHOLD_M) & (region > 0)
        labels = torch.where(close, region, torch.zeros_like(region)).cpu().numpy()
        bi, vi = torch.nonzero(close, as_tuple=True)
        start = verts[bi, vi]
        points = start.clone()
        grid = self._sdf_values[0, 0]
        for _ in range(3):  # Newton-like steps onto the zero level set (sharp edges need >1)
            d, grad = trilinear_sdf(points, grid, self._sdf_origin, float(self.sdf.voxel_size))
            n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            points = points - d[:, None] * n
        keep = ((points - start).norm(dim=-1) <= CONTACT_THRESHOLD_M).cpu().numpy()
        bi_np = bi.cpu().numpy()
        pts_np = points.cpu().numpy().astype(np.float32)
        reg_np = region[vi].cpu().numpy().astype(np.int64)
        out = []
        for b in range(verts.shape[0]):
            sel = (bi_np == b) & keep
            out.append((labels[b].astype(np.int64), pts_np[sel], reg_np[sel]))
        return out


def rectangle_distance(
    points: np.ndarray, center: np.ndarray, u: np.ndarray, v: np.ndarray, half: np.ndarray
) -> np.ndarray:
    """Distance (m) of points (P, 3) to rectangles (K,) given by centres (K, 3), unit axes
    (K, 3) and half sizes (K, 2): array of shape (P, K)."""
    local = points[:, None, :] - center[None]
    a = np.clip(np.einsum("pkc,kc->pk", local, u), -half[:, 0], half[:, 0])
    b = np.clip(np.einsum("pkc,kc->pk", local, v), -half[:, 1], half[:, 1])
    closest = center[None] + a[..., None] * u[None] + b[..., None] * v[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=-1)
