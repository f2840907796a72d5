"""Pose sampler: joint limits, variety, determinism, action table consistency."""

import numpy as np
import pytest

from sahmr.body.constants import CONTACT_REGION_NAMES
from sahmr.body.pose_library import (
    ACTIONS,
    BODY_JOINT_NAMES,
    JOINT_EULER_ORDER,
    JOINT_LIMITS,
    JOINT_LIMITS_DEG,
    axis_angle_to_euler_deg,
    body_axis_angle_to_euler_deg,
    body_euler_deg_to_axis_angle,
    body_euler_to_matrix,
    clamp_euler_deg,
    euler_deg_to_axis_angle,
    euler_to_matrix,
    sample_betas,
    sample_pose,
)
from sahmr.synth.furniture import SURFACE_KINDS

N_SAMPLES = 200


def test_limits_table_is_complete_and_gimbal_free():
    assert set(JOINT_LIMITS_DEG) == set(BODY_JOINT_NAMES)
    assert JOINT_LIMITS.shape == (23, 3, 2)
    assert np.all(JOINT_LIMITS[..., 0] < JOINT_LIMITS[..., 1])
    # A middle Euler angle within (-90, 90) deg keeps the decomposition unique.
    for j, name in enumerate(BODY_JOINT_NAMES):
        middle = "XYZ".index(JOINT_EULER_ORDER[name][1])
        assert np.all(np.abs(np.rad2deg(JOINT_LIMITS[j, middle])) < 90.0), name


def test_euler_round_trip_and_torch_matches_scipy():
    import torch
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    e = rng.uniform(-80, 80, size=(50, 3))
    aa = euler_deg_to_axis_angle(e)
    np.testing.assert_allclose(axis_angle_to_euler_deg(aa), e, atol=1e-8)
    R = euler_to_matrix(torch.as_tensor(np.deg2rad(e))).numpy()
    np.testing.assert_allclose(R, Rotation.from_rotvec(aa).as_matrix(), atol=1e-10)
    body = rng.uniform(-80, 80, size=(4, 23, 3))
    aa = body_euler_deg_to_axis_angle(body)
    np.testing.assert_allclose(body_axis_angle_to_euler_deg(aa), body, atol=1e-8)
    Rb = body_euler_to_matrix(torch.as_tensor(np.deg2rad(body))).numpy()
    np.testing.assert_allclose(
        Rb, Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(4, 23, 3, 3), atol=1e-10
    )


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_samples_within_joint_limits_and_varied(action):
    rng = np.random.default_rng(1)
    poses = []
    for _ in range(N_SAMPLES):
        go, bp = sample_pose(action, rng)
        assert go.shape == (3,) and bp.shape == (69,)
        euler = body_axis_angle_to_euler_deg(bp.reshape(23, 3))
        lim = np.rad2deg(JOINT_LIMITS)
        assert np.all(euler >= lim[..., 0] - 1e-6) and np.all(euler <= lim[..., 1] + 1e-6)
        poses.append(bp)
    std = np.stack(poses).std(0)
    assert std.max() > 0.05  # radians
    assert (std > 1e-4).mean() > 0.9  # nearly every joint angle varies


def test_clamp_is_projection():
    rng = np.random.default_rng(2)
    e = rng.uniform(-200, 200, size=(10, 23, 3))
    c = clamp_euler_deg(e)
    np.testing.assert_array_equal(clamp_euler_deg(c), c)
    lim = np.rad2deg(JOINT_LIMITS)
    assert np.all((c >= lim[..., 0] - 1e-9) & (c <= lim[..., 1] + 1e-9))


def test_determinism():
    a = sample_pose("sit_chair", np.random.default_rng(7))
    b = sample_pose("sit_chair", np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_action_table_refers_to_known_regions_and_surfaces():
    assert {
        "stand",
        "walk",
        "sit_chair",
        "sit_sofa",
        "sit_bed_edge",
        "sit_stool",
        "sit_step",
        "lie_bed",
        "lie_sofa",
        "lie_floor",
        "lean_table",
        "lean_wall",
        "touch_wall",
        "touch_table",
        "reach_wall",
        "squat",
        "kneel",
    } <= set(ACTIONS)
    for name, spec in ACTIONS.items():
        assert spec.name == name and spec.contacts
        for req in spec.contacts:
            assert all(1 <= r < len(CONTACT_REGION_NAMES) for r in req.regions)
            assert set(req.surfaces) <= set(SURFACE_KINDS)
    assert ACTIONS["sit_chair"].contacts[0].regions == (6, 7)
    assert ACTIONS["lie_bed"].contacts[0].surfaces == ("bed",)


def test_betas_clipped_and_spread():
    rng = np.random.default_rng(3)
    b = np.stack([sample_betas(rng) for _ in range(500)])
    assert b.shape == (500, 10) and np.abs(b).max() <= 2.5
    assert 0.8 < b.std() < 1.1


def test_mirror_images_of_actions_and_euler_poses():
    import torch

    from sahmr.body.pose_library import (
        MIRRORED_REGION,
        mirror_action,
        mirror_body_euler_deg,
        mirror_root_euler_deg,
    )

    touch = mirror_action(ACTIONS["touch_wall"])
    assert touch.name == "touch_wall" and touch.placement == ACTIONS["touch_wall"].placement
    assert [c.regions for c in touch.contacts] == [(3,), (2, 1)]
    assert ACTIONS["touch_wall"].contacts[0].regions == (4,)  # the library's own is untouched
    assert mirror_action(ACTIONS["lie_bed"]).contacts == ACTIONS["lie_bed"].contacts
    assert all(MIRRORED_REGION[MIRRORED_REGION[r]] == r for r in MIRRORED_REGION)
    assert {CONTACT_REGION_NAMES[r].split("_")[0] for r in MIRRORED_REGION} == {"left", "right"}
    # Euler angles mirrored per axis are the rotation conjugated by x -> -x, in any order
    rng = np.random.default_rng(0)
    euler = rng.uniform(-90, 90, size=(5, 3))
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    for order in ("ZYX", "XYZ", "YXZ"):
        R = euler_to_matrix(torch.as_tensor(np.deg2rad(euler)), order)
        Rm = euler_to_matrix(torch.as_tensor(np.deg2rad(mirror_root_euler_deg(euler))), order)
        torch.testing.assert_close(Rm, M @ R @ M)
    body = rng.uniform(-40, 40, size=(23, 3))
    np.testing.assert_allclose(mirror_body_euler_deg(mirror_body_euler_deg(body)), body)
    left_elbow = BODY_JOINT_NAMES.index("left_elbow")
    right_elbow = BODY_JOINT_NAMES.index("right_elbow")
    np.testing.assert_allclose(mirror_body_euler_deg(body)[left_elbow],
                               body[right_elbow] * [1, -1, -1])  # fmt: skip


def test_mirrored_library_poses_stay_within_the_joint_limits():
    from sahmr.body.pose_library import mirror_body_euler_deg, sample_pose_euler

    rng = np.random.default_rng(4)
    for action in ACTIONS:
        for _ in range(5):
            _, body = sample_pose_euler(action, rng)
            mirrored = mirror_body_euler_deg(body)
            np.testing.assert_allclose(clamp_euler_deg(mirrored), mirrored, atol=1e-9)
