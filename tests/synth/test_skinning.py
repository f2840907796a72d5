"""Fast subset skinning and the placer's SDF lookup against slow obvious references."""

import numpy as np
import pytest
import torch
from smplx.lbs import batch_rigid_transform

from sahmr.body import BodyModel
from sahmr.body.pose_library import body_euler_to_matrix, euler_to_matrix
from sahmr.scene.sdf import SDFGrid, SDFLookup, trilinear_sdf
from sahmr.synth.skinning import (
    KinematicPlan,
    SubsetSkinner,
    kinematic_levels,
    rigid_transforms,
    subset_vertices,
)


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel()


def test_levels_cover_the_tree(body):
    parents = body.parents.numpy()
    levels = kinematic_levels(parents)
    seen = {0}
    prev = np.array([0])
    for joints, slot in levels:
        assert np.array_equal(parents[joints], prev[slot])  # parents on the previous level
        seen |= set(joints.tolist())
        prev = joints
    assert seen == set(range(len(parents)))
    plan = KinematicPlan(parents)
    assert sorted(plan.order.tolist()) == list(range(len(parents)))
    with pytest.raises(ValueError):
        kinematic_levels(np.array([-1, 2, 0]))


def test_rigid_transforms_match_smplx(body):
    torch.manual_seed(0)
    B = 3
    rot = euler_to_matrix(torch.randn(B, 24, 3, dtype=torch.float64))
    joints = torch.randn(B, 24, 3, dtype=torch.float64)
    _, ref = batch_rigid_transform(rot, joints, body.parents)
    got = rigid_transforms(rot, joints, body.parents)
    torch.testing.assert_close(got, ref[:, :, :3], rtol=0, atol=1e-12)


def test_subset_skinning_matches_the_body_model(body):
    torch.manual_seed(1)
    B = 2
    labels = body.topology.contact_labels[0]
    subset = subset_vertices(labels, np.arange(0, body.num_vertices, 7), per_region=40)
    skinner = SubsetSkinner(body, subset)
    betas = torch.randn(B, 10) * 0.5
    euler = torch.randn(B, 23, 3) * 0.3
    root = euler_to_matrix(torch.randn(B, 3) * 0.5)
    body_rot = body_euler_to_matrix(euler)
    v_shaped, joints = skinner.rest(betas)
    verts = skinner.skin(skinner.pose_blend(v_shaped, body_rot), skinner.bind(joints), root,
                         body_rot)  # fmt: skip
    with torch.no_grad():
        ref = body(betas=betas, global_orient=root[:, None], body_pose=body_rot).vertices
    torch.testing.assert_close(verts, ref[:, torch.as_tensor(subset)], rtol=0, atol=2e-5)


def test_subset_vertices_keeps_every_region(body):
    labels = body.topology.contact_labels[0]
    reps = np.arange(0, len(labels), 16)
    sub = subset_vertices(labels, reps, per_region=30)
    assert np.all(np.diff(sub) > 0)
    for r in range(1, 8):
        n = int((labels == r).sum())
        assert min(n, 30) <= int((labels[sub] == r).sum()) <= 2 * 30 + 1
    assert set(sub[labels[sub] == 0]) == set(reps[labels[reps] == 0])


def test_trilinear_lookup_matches_grid_sample_and_finite_differences():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 7, 8)).astype(np.float32)
    grid = SDFGrid(np.array([0.1, -0.2, 0.3], np.float32), 0.05, values)
    vals = torch.from_numpy(values)
    origin = torch.from_numpy(grid.origin)
    lo, hi = grid.origin, grid.origin + 0.05 * (np.array([8, 7, 6]) - 1)
    pts = torch.as_tensor(rng.uniform(lo - 0.1, hi + 0.1, (500, 3)), dtype=torch.float32)
    d, g = trilinear_sdf(pts, vals, origin, 0.05)
    q = (pts.numpy() - lo) / 0.05
    inside = torch.as_tensor(np.all((q >= 0) & (q <= np.array([7, 6, 5])), 1))
    torch.testing.assert_close(d[inside], grid.sample(pts[inside]), rtol=0, atol=1e-5)
    # beyond the far faces the lookup clamps 1e-4 voxel inside the grid
    torch.testing.assert_close(d[~inside], grid.sample(pts[~inside]), rtol=0, atol=2e-3)
    # inside the grid and away from cell faces the gradient is the finite difference
    inner = np.all((q > 0.1) & (q < np.array([7, 6, 5]) - 0.1), 1) & np.all(
        np.abs(q - np.round(q)) > 0.01, 1
    )
    p64 = pts[inner].double()
    eps = 1e-4
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        fd = (grid.sample(p64 + step) - grid.sample(p64 - step)) / (2 * eps)
        torch.testing.assert_close(g[inner, axis].double(), fd, rtol=1e-3, atol=1e-3)
    # the autograd op returns the same gradient
    p = pts.clone().requires_grad_(True)
    SDFLookup.apply(p, vals, origin, 0.05).sum().backward()
    torch.testing.assert_close(p.grad, g)
