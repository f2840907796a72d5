"""SMPL's kinematic chain walked level by level, without host synchronisation.

`smplx.lbs.batch_rigid_transform` walks the 24 joints one at a time and looks each parent up
with ``parents[i]``, an element of a device tensor: on a GPU every lookup copies it to the
host, so one body forward stalls the host 23 times until the device has finished all the
work queued before it (a training step's backbone and encoder included). Here the joints are
grouped by depth in the tree; each level is one batched matrix product, its joint and parent
indices are device tensors made once, and nothing is read back to the host.

Frames and units: the body model's frame, metres.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def tree_levels(parents: list[int]) -> list[list[int]]:
    """Joint indices grouped by depth in the kinematic tree (depth 1 first; the root, joint
    0, is depth 0 and not listed). A joint's parent lies in the level before its own.

    Args:
        parents: Parent index per joint (the root's is ignored), each below the joint's own.

    Returns:
        One list of joint indices per depth 1, 2, ..., ascending within a level.
    """
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        if not 0 <= parents[j] < j:
            raise ValueError(f"joint {j}'s parent {parents[j]} is not an earlier joint")
        depth[j] = depth[parents[j]] + 1
    top = max(depth, default=0)
    return [[j for j in range(1, len(parents)) if depth[j] == d] for d in range(1, top + 1)]


def rigid_transforms(
    rot_mats: Tensor, joints: Tensor, levels: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """`smplx.lbs.batch_rigid_transform`, one batched product per tree level.

    Args:
        rot_mats: Tensor of shape (B, J, 3, 3), each joint's rotation relative to its parent
            (joint 0: the root's).
        joints: Tensor of shape (B, J, 3), rest joint positions.
        levels: Per depth 1, 2, ...: ``(joint indices, their parents' indices)``, int64
            tensors on the device of ``rot_mats`` (`tree_levels` and the parents).

    Returns:
        ``(posed_joints (B, J, 3), transforms (B, J, 4, 4))``: each joint's posed position and
        the transform ``[R_j | t_j - R_j @ joints_j; 0 0 0 1]`` taking a rest point rigidly
        attached to joint j to its posed position (smplx's ``rel_transforms``). In the wider
        of the two inputs' dtypes, also under autocast: the chain is written level by level
        into one tensor, which a lower-precision product could not be written into, and a
        chain of 23 products is where bfloat16's rounding would add up.
    """
    dtype = torch.promote_types(rot_mats.dtype, joints.dtype)
    with torch.autocast(rot_mats.device.type, enabled=False):
        rot_mats, joints = rot_mats.to(dtype), joints.to(dtype)
        rot_world = rot_mats.clone()  # filled level by level: each reads only its parents'
        posed = joints.clone()
        for idx, par in levels:
            bone = (joints[:, idx] - joints[:, par])[..., None]
            parent_rot = rot_world[:, par]
            rot_world[:, idx] = parent_rot @ rot_mats[:, idx]
            posed[:, idx] = posed[:, par] + (parent_rot @ bone)[..., 0]
        offset = posed - (rot_world @ joints[..., None])[..., 0]
        top = torch.cat([rot_world, offset[..., None]], dim=-1)  # (B, J, 3, 4)
        bottom = top.new_zeros((*top.shape[:-2], 1, 4))
        bottom[..., 3] = 1.0
        return posed, torch.cat([top, bottom], dim=-2)


class KinematicTree(nn.Module):
    """A body's kinematic tree as device index tensors, level by level (`tree_levels`); they
    follow ``.to(device)`` and are not saved in state dicts.

    Args:
        parents: Parent index per joint (the root's is ignored), each below the joint's own.
    """

    def __init__(self, parents: list[int]) -> None:
        super().__init__()
        self.parents = [int(p) for p in parents]
        levels = tree_levels(self.parents)
        for d, idx in enumerate(levels):
            par = [self.parents[j] for j in idx]
            self.register_buffer(f"joints{d}", torch.tensor(idx), persistent=False)
            self.register_buffer(f"parents{d}", torch.tensor(par), persistent=False)
        self.num_levels = len(levels)

    def levels(self) -> list[tuple[Tensor, Tensor]]:
        """Per depth 1, 2, ...: ``(joint indices, their parents' indices)``, int64."""
        return [(self._buffers[f"joints{d}"], self._buffers[f"parents{d}"])
                for d in range(self.num_levels)]  # fmt: skip

    def forward(self, rot_mats: Tensor, joints: Tensor) -> tuple[Tensor, Tensor]:
        """`rigid_transforms` of this tree: ``(posed_joints (B, J, 3), transforms (B, J, 4,
        4))`` from local rotations (B, J, 3, 3) and rest joints (B, J, 3)."""
        return rigid_transforms(rot_mats, joints, self.levels())
