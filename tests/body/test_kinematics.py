"""sahmr.body.kinematics: the level-by-level kinematic chain against smplx's joint-by-joint one."""

from __future__ import annotations

import pytest
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues

from sahmr.body.kinematics import KinematicTree, rigid_transforms, tree_levels
from sahmr.body.license_free.skeleton import PARENTS as SMPL_PARENTS


def test_tree_levels_of_smpl_put_every_parent_one_level_up():
    parents = list(SMPL_PARENTS)
    levels = tree_levels(parents)
    assert sorted(j for level in levels for j in level) == list(range(1, 24))
    depth = {0: 0} | {j: d + 1 for d, level in enumerate(levels) for j in level}
    assert all(depth[parents[j]] == depth[j] - 1 for j in range(1, 24))
    assert levels[0] == [1, 2, 3]  # the hips and the lowest spine joint hang from the pelvis
    assert len(levels) == 8  # pelvis -> spine1..3 -> neck -> collar -> shoulder -> ... -> hand


@pytest.mark.parametrize("parents", [[-1, 1], [-1, 0, 3, 1], [-1, -1]])
def test_tree_levels_refuse_a_parent_that_is_not_an_earlier_joint(parents):
    with pytest.raises(ValueError, match="parent"):
        tree_levels(parents)


def test_rigid_transforms_equal_smplx_and_their_gradients_too():
    """Random rotations and rest joints (float64): the same posed joints and transforms as
    smplx.lbs.batch_rigid_transform, and the same gradients."""
    parents = list(SMPL_PARENTS)
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(3, 24, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    rest = torch.randn(3, 24, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    rot = batch_rodrigues(aa.reshape(-1, 3)).reshape(3, 24, 3, 3)
    ours = rigid_transforms(rot, rest, KinematicTree(parents).levels())
    ref = batch_rigid_transform(rot, rest, torch.tensor(parents), dtype=torch.float64)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    w = torch.randn(3, 24, 4, 4, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad(out[0].square().sum() + (out[1] * w).sum(), (aa, rest),
                                 retain_graph=True)  # both graphs share the rotations'
             for out in (ours, ref)]  # fmt: skip
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_rigid_transforms_of_the_rest_pose_leave_the_joints_in_place():
    """Identity rotations: every joint stays where it is and every transform is the identity."""
    parents = list(SMPL_PARENTS)
    rest = torch.randn(2, 24, 3, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3)
    posed, transforms = rigid_transforms(eye, rest, KinematicTree(parents).levels())
    torch.testing.assert_close(posed, rest)
    torch.testing.assert_close(transforms, torch.eye(4, dtype=torch.float64).expand(2, 24, 4, 4))


def test_the_tree_module_follows_the_device_and_dtype_moves_and_saves_nothing():
    tree = KinematicTree(list(SMPL_PARENTS)).to(torch.float64)
    assert tree.state_dict() == {}
    assert all(t.dtype == torch.int64 for t in tree.buffers())
    rot = torch.eye(3, dtype=torch.float64).expand(1, 24, 3, 3)
    rest = torch.randn(1, 24, 3, dtype=torch.float64)
    torch.testing.assert_close(tree(rot, rest)[0], rest)


def test_the_chain_runs_in_full_precision_under_autocast():
    """Under bfloat16 autocast (HMR's training and validation on a GPU; CPU autocast here) the
    chain's level-by-level writes once failed (a bfloat16 product written into the float32
    chain: run 39's lease lost its HMR training to it). The chain now runs in its inputs'
    dtype whatever the autocast: the same transforms as without it, and a whole body forward
    under autocast works."""
    from sahmr.body import BodyModel

    g = torch.Generator().manual_seed(3)
    rot = batch_rodrigues(0.4 * torch.randn(5 * 24, 3, generator=g)).view(5, 24, 3, 3)
    joints = torch.randn(5, 24, 3, generator=g)
    tree = KinematicTree(SMPL_PARENTS)
    plain = rigid_transforms(rot, joints, tree.levels())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = rigid_transforms(rot, joints, tree.levels())
    for a, b in zip(under, plain, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    body = BodyModel()
    kw = {
        "betas": torch.randn(2, 10, generator=g),
        "global_orient": 0.2 * torch.randn(2, 3, generator=g),
        "body_pose": 0.2 * torch.randn(2, 69, generator=g),
        "transl": torch.zeros(2, 3),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = body(**kw)
    ref = body(**kw)
    assert torch.isfinite(out.vertices).all()
    assert (out.vertices.float() - ref.vertices).abs().max() < 0.03  # bfloat16's blend shapes
