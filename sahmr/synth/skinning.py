"""Fast, differentiable skinning of a vertex subset, for the placer's refinement loop.

The placer optimises many small batches (8 candidates, a few hundred to two thousand
vertices each) on CPU, where the cost of a step is dominated by the number of tensor
operations, not by arithmetic. This module keeps that number small:

* :func:`rigid_transforms` chains the joint transforms one kinematic-tree LEVEL at a time
  (8 batched products for SMPL's 24 joints instead of 23, as ``smplx.lbs``'s loop does);
* :class:`SubsetSkinner` blends the per-joint 3x4 transforms with the subset's skinning
  weights in one matrix product and applies them with one broadcast multiply-sum (no
  batched 3x3 @ 3x1 products per vertex, whose backward is slow on CPU).

Frames: the body model's own frame (y up at rest, metres); rotations are applied about the
rest joints exactly as in ``smplx.lbs.lbs``, so ``root_rot`` may be any frame's rotation
(the placer passes room-frame root rotations).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "KinematicPlan",
    "SubsetSkinner",
    "kinematic_levels",
    "rigid_transforms",
    "subset_vertices",
]


def kinematic_levels(parents: np.ndarray | Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Joints grouped by depth in the kinematic tree.

    Args:
        parents: (J,) parent index per joint, ``parents[0] < 0`` for the root; every parent
            index is smaller than its child's (as in SMPL).

    Returns:
        One ``(joints, parent_slot)`` pair per level >= 1: ``joints`` (n_l,) the joint ids of
        the level, ``parent_slot`` (n_l,) the position of each joint's parent within the
        previous level's ``joints`` (level 0 is the root alone).
    """
    par = np.asarray(parents, dtype=np.int64).reshape(-1)
    depth = np.zeros(len(par), dtype=np.int64)
    for j in range(1, len(par)):
        if not 0 <= par[j] < j:
            raise ValueError(f"joint {j}: parent {par[j]} must precede it")
        depth[j] = depth[par[j]] + 1
    prev = np.array([0])
    levels = []
    for d in range(1, int(depth.max()) + 1):
        joints = np.flatnonzero(depth == d)
        slot = {int(j): i for i, j in enumerate(prev)}
        levels.append((joints, np.array([slot[int(par[j])] for j in joints], dtype=np.int64)))
        prev = joints
    return levels


class KinematicPlan:
    """Level-by-level evaluation order of a kinematic tree (built once per body model).

    Joints are visited in LEVEL ORDER (the root, then every joint of depth 1, ...); within
    a level a joint's parent is fetched from the previous level by a slice, a broadcast or,
    only where neither fits, an index.

    Args:
        parents: (J,) parent index per joint (see :func:`kinematic_levels`).
    """

    def __init__(self, parents: np.ndarray | Tensor) -> None:
        self.levels = kinematic_levels(parents)
        self.order = np.concatenate([[0]] + [idx for idx, _ in self.levels]).astype(np.int64)
        self.num_joints = len(self.order)
        self.parent_order = np.asarray(parents, dtype=np.int64).reshape(-1)
        self.steps: list[tuple[int, int, tuple]] = []
        start = 1
        for idx, slot in self.levels:
            n = len(idx)
            if np.all(slot == slot[0]):
                fetch: tuple = ("expand", int(slot[0]))
            elif np.array_equal(slot, np.arange(slot[0], slot[0] + n)):
                fetch = ("slice", int(slot[0]))
            else:
                fetch = ("index", torch.as_tensor(slot))
            self.steps.append((start, n, fetch))
            start += n

    @staticmethod
    def _fetch(prev: Tensor, fetch: tuple, n: int) -> Tensor:
        kind, arg = fetch
        if kind == "expand":
            return prev[:, arg : arg + 1].expand(-1, n, *prev.shape[2:])
        if kind == "slice":
            return prev[:, arg : arg + n]
        return prev[:, arg.to(prev.device)]

    def bind(self, joints: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-batch constants of :meth:`transforms`: the rest joints (B, J, 3) in level
        order and, per level, each joint's offset from its parent (B, n_l, 3)."""
        order = torch.as_tensor(self.order, device=joints.device)
        parent = torch.as_tensor(self.parent_order[self.order], device=joints.device)
        offsets = joints[:, order] - joints[:, parent]
        rel = [offsets[:, start : start + n] for start, n, _ in self.steps]
        return joints[:, order], rel

    def transforms(self, rot: Tensor, bound: tuple[Tensor, list[Tensor]]) -> Tensor:
        """Skinning transforms in level order.

        Args:
            rot: Tensor of shape (B, J, 3, 3), local rotations in LEVEL order.
            bound: :meth:`bind` of the rest joints.

        Returns:
            Tensor of shape (B, J, 3, 4) in level order: ``[R_j | t_j - R_j @ joints_j]``.
        """
        joints_lo, rel = bound
        R_prev, t_prev = rot[:, :1], joints_lo[:, :1]
        Rs, ts = [R_prev], [t_prev]
        for (start, n, fetch), rel_l in zip(self.steps, rel):
            R_par, t_par = self._fetch(R_prev, fetch, n), self._fetch(t_prev, fetch, n)
            R_prev = R_par @ rot[:, start : start + n]
            t_prev = (R_par @ rel_l[..., None])[..., 0] + t_par
            Rs.append(R_prev)
            ts.append(t_prev)
        R, t = torch.cat(Rs, dim=1), torch.cat(ts, dim=1)
        offset = t - (R @ joints_lo[..., None])[..., 0]
        return torch.cat([R, offset[..., None]], dim=-1)


def rigid_transforms(rot: Tensor, joints: Tensor, parents: np.ndarray | Tensor) -> Tensor:
    """Per-joint skinning transforms (the ``A`` of ``smplx.lbs.batch_rigid_transform``).

    Args:
        rot: Tensor of shape (B, J, 3, 3), local joint rotations (joint 0: the root's).
        joints: Tensor of shape (B, J, 3), rest joint positions, metres.
        parents: (J,) parent index per joint.

    Returns:
        Tensor of shape (B, J, 3, 4), joint order: ``[R_j | t_j - R_j @ joints_j]`` with
        ``R_j``, ``t_j`` the joint's global rotation and position, i.e. the transform taking
        a rest vertex rigidly attached to joint j to its posed position.
    """
    plan = KinematicPlan(parents)
    order = torch.as_tensor(plan.order, device=rot.device)
    A = plan.transforms(rot[:, order], plan.bind(joints))
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order), device=rot.device)
    return A[:, inv]


def subset_vertices(
    labels: np.ndarray,
    representatives: np.ndarray,
    per_region: int,
) -> np.ndarray:
    """A vertex subset for the refinement: coarse-level vertices plus thinned regions.

    Args:
        labels: (V,) contact region label per full-mesh vertex (0 = none).
        representatives: full-mesh ids of a coarse level's vertices (e.g. the 431-vertex
            level of ``BodyModel().topology``), used for the unlabelled part of the body.
        per_region: keep about this many vertices of each contact region (every n-th, all
            of a smaller region).

    Returns:
        Sorted unique full-mesh vertex ids.
    """
    keep = [np.asarray(representatives)[labels[representatives] == 0]]
    for r in np.unique(labels[labels > 0]):
        idx = np.flatnonzero(labels == r)
        keep.append(idx[:: max(1, len(idx) // per_region)])
    return np.unique(np.concatenate(keep))


class SubsetSkinner:
    """Linear blend skinning of a fixed vertex subset of an SMPL-format body.

    Pose blend shapes are applied once per batch (:meth:`pose_blend`, not differentiated)
    and frozen while the joint rotations change; everything else matches
    ``smplx.lbs.lbs`` on the subset.

    Args:
        body: A :class:`sahmr.body.BodyModel` (or any SMPL layer with ``v_template``,
            ``shapedirs``, ``posedirs``, ``J_regressor``, ``lbs_weights``, ``parents``).
        subset: (S,) vertex ids.
        device: Torch device.
    """

    def __init__(self, body, subset: np.ndarray, device: str | torch.device = "cpu") -> None:
        dev, f32 = torch.device(device), torch.float32
        self.device = dev
        self.subset = torch.as_tensor(np.asarray(subset, dtype=np.int64), device=dev)
        V = int(body.v_template.shape[0])
        self.v_template = body.v_template.to(dev, f32)
        self.shapedirs = body.shapedirs.to(dev, f32)
        self.J_regressor = body.J_regressor.to(dev, f32)
        posedirs = body.posedirs.to(dev, f32).reshape(-1, V, 3)
        self.posedirs_sub = posedirs[:, self.subset].reshape(posedirs.shape[0], -1)
        self.plan = KinematicPlan(body.parents.cpu().numpy())
        self.num_joints = self.plan.num_joints
        self._order = torch.as_tensor(self.plan.order, device=dev)
        # skinning weights with their joint columns in level order (the plan's output order)
        self.weights_sub = body.lbs_weights.to(dev, f32)[self.subset][:, self._order]

    def rest(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        """Shaped rest subset vertices (B, S, 3) and rest joints (B, J, 3) for betas (B, L)."""
        L = betas.shape[1]
        v_shaped = self.v_template + torch.einsum("bl,vcl->bvc", betas, self.shapedirs[..., :L])
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        return v_shaped[:, self.subset], joints

    def bind(self, joints: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-batch constants of :meth:`skin` for rest joints (B, J, 3) (compute once)."""
        return self.plan.bind(joints)

    def pose_blend(self, v_shaped_sub: Tensor, body_rot: Tensor) -> Tensor:
        """Homogeneous posed rest vertices (B, S, 4): shaped + pose blend of ``body_rot``.

        Args:
            v_shaped_sub: (B, S, 3) from :meth:`rest`.
            body_rot: (B, J - 1, 3, 3) joint rotations (root excluded).
        """
        B = v_shaped_sub.shape[0]
        eye = torch.eye(3, device=body_rot.device, dtype=body_rot.dtype)
        feat = (body_rot - eye).reshape(B, -1)
        v = v_shaped_sub + (feat @ self.posedirs_sub).reshape(B, -1, 3)
        return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)

    def skin(
        self,
        v_posed_h: Tensor,
        bound: tuple[Tensor, list[Tensor]],
        root_rot: Tensor,
        body_rot: Tensor,
    ) -> Tensor:
        """Posed subset vertices (B, S, 3), without translation.

        Args:
            v_posed_h: (B, S, 4) from :meth:`pose_blend`.
            bound: :meth:`bind` of the rest joints.
            root_rot: (B, 3, 3) root rotation.
            body_rot: (B, J - 1, 3, 3) joint rotations.
        """
        B = v_posed_h.shape[0]
        rots = torch.cat([root_rot[:, None], body_rot], dim=1)[:, self._order]
        A = self.plan.transforms(rots, bound)  # (B, J, 3, 4), level order
        T = (self.weights_sub @ A.reshape(B, self.num_joints, 12)).reshape(B, -1, 3, 4)
        return (T * v_posed_h[:, :, None, :]).sum(-1)
