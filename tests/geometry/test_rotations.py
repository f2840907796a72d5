"""Rotation conversions checked against scipy.spatial.transform.Rotation."""

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from sahmr.geometry.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rot6d,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rot6d_to_matrix,
)


def _random_rotvecs(n: int, seed: int = 0) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_rotvec()


def test_axis_angle_to_matrix_matches_scipy():
    rv = _random_rotvecs(200)
    ours = axis_angle_to_matrix(torch.from_numpy(rv)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rv).as_matrix(), atol=1e-12)


def test_axis_angle_hand_checked_quarter_turn():
    # 90 degrees about z maps x to y: R = [[0,-1,0],[1,0,0],[0,0,1]].
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    expected = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(R, expected, atol=1e-12, rtol=0)


def test_matrix_to_axis_angle_matches_scipy_including_near_zero_and_pi():
    rng = np.random.default_rng(1)
    rv = _random_rotvecs(200, seed=1)
    axes = rng.normal(size=(40, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    near_pi = axes[:20] * (math.pi - np.logspace(-9, -2, 20))[:, None]
    near_zero = axes[20:] * np.logspace(-10, -3, 20)[:, None]
    rv = np.concatenate([rv, near_pi, near_zero])
    R = Rotation.from_rotvec(rv).as_matrix()
    ours = matrix_to_axis_angle(torch.from_numpy(R)).numpy()
    # Compare as rotations (axis sign is ambiguous at exactly pi).
    diff = Rotation.from_matrix(R).inv() * Rotation.from_rotvec(ours)
    assert np.abs(diff.magnitude()).max() < 1e-7
    np.testing.assert_allclose(ours[:200], rv[:200], atol=1e-9)
    np.testing.assert_allclose(ours[220:], rv[220:], atol=1e-15, rtol=1e-6)


def test_quaternion_matches_scipy_scalar_first():
    R = Rotation.random(100, random_state=2)
    q_ours = matrix_to_quaternion(torch.from_numpy(R.as_matrix())).numpy()
    q_ref = R.as_quat()[:, [3, 0, 1, 2]]
    q_ref *= np.sign(q_ref[:, :1])
    np.testing.assert_allclose(q_ours, q_ref, atol=1e-12)
    R_back = quaternion_to_matrix(torch.from_numpy(q_ours)).numpy()
    np.testing.assert_allclose(R_back, R.as_matrix(), atol=1e-12)
    rv = torch.from_numpy(R.as_rotvec())
    torch.testing.assert_close(quaternion_to_axis_angle(axis_angle_to_quaternion(rv)), rv)


def test_rot6d_round_trip_and_gram_schmidt():
    R = torch.from_numpy(Rotation.random(50, random_state=3).as_matrix())
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(R)), R)
    # Arbitrary 6D inputs give proper rotations whose first column is the normalised a1.
    x = torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    M = rot6d_to_matrix(x)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    torch.testing.assert_close(M.transpose(1, 2) @ M, eye)
    torch.testing.assert_close(torch.linalg.det(M), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(M[..., 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))


def test_gradients_finite_at_zero():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_matrix(aa)
    (R * torch.randn_like(R)).sum().backward()
    assert torch.isfinite(aa.grad).all()
    # d R / d r at 0 is the skew generator: check numerically against a finite difference.
    eps = 1e-6
    e = torch.tensor([[eps, 0.0, 0.0]], dtype=torch.float64)
    fd = (axis_angle_to_matrix(e) - axis_angle_to_matrix(-e)) / (2 * eps)
    expected = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(fd[0], expected)

    R0 = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1).requires_grad_(True)
    matrix_to_axis_angle(R0).sum().backward()
    assert torch.isfinite(R0.grad).all()

    q = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64, requires_grad=True)
    quaternion_to_axis_angle(q).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_gradcheck_axis_angle():
    aa = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (1e-5 * aa,))


def test_geodesic_angle():
    R1 = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.3]], dtype=torch.float64))
    R2 = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(geodesic_angle(R1, R2), torch.tensor([0.7], dtype=torch.float64))
