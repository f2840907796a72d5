"""Tests for sahmr.body.regressor: convex joint regressors."""

import numpy as np
import pytest

from sahmr.body.regressor import fit_convex_regressor, regressor_residual


def _cube() -> np.ndarray:
    """Returns the 8 corners of the unit cube, shape (8, 3)."""
    return np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])


def _assert_convex(weights: np.ndarray) -> None:
    assert np.all(weights >= 0.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)


def test_cube_centre_is_reproduced_exactly():
    cube = _cube()
    targets = np.array([[0.5, 0.5, 0.5], [0.25, 0.5, 0.75]])
    weights = fit_convex_regressor(cube, targets, k=8)
    _assert_convex(weights)
    assert regressor_residual(weights, cube, targets).max() < 1e-9


def test_outside_target_goes_to_nearest_hull_point():
    cube = _cube()
    targets = np.array([[0.5, 0.5, 2.0], [3.0, 3.0, 3.0]])
    weights = fit_convex_regressor(cube, targets, k=8)
    _assert_convex(weights)
    regressed = weights @ cube
    np.testing.assert_allclose(regressed, [[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(regressor_residual(weights, cube, targets), [1.0, np.sqrt(12)],
                               atol=1e-6)


def test_matches_brute_force_on_a_triangle():
    """The convex fit equals the closest point of a triangle found by dense sampling."""
    rng = np.random.default_rng(0)
    tri = rng.normal(size=(3, 3))
    target = rng.normal(size=(1, 3)) * 2.0
    weights = fit_convex_regressor(tri, target, k=3)
    _assert_convex(weights)
    n = 400
    a, b = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    keep = a + b <= 1.0
    bary = np.stack([a[keep], b[keep], 1.0 - a[keep] - b[keep]], axis=1)
    brute = np.linalg.norm(bary @ tri - target, axis=1).min()
    residual = regressor_residual(weights, tri, target)[0]
    assert residual <= brute + 1e-9
    assert residual >= brute - 1e-2


def test_candidates_restrict_support_and_ridge_spreads():
    rng = np.random.default_rng(1)
    verts = rng.uniform(-1.0, 1.0, size=(200, 3))
    targets = np.zeros((2, 3))
    cands = [np.arange(0, 100), np.arange(100, 200)]
    plain = fit_convex_regressor(verts, targets, candidates=cands)
    spread = fit_convex_regressor(verts, targets, candidates=cands, ridge=1e-6)
    for weights in (plain, spread):
        _assert_convex(weights)
        assert np.all(weights[0, 100:] == 0.0) and np.all(weights[1, :100] == 0.0)
        assert regressor_residual(weights, verts, targets).max() < 1e-3
    assert (spread > 1e-6).sum() > 4 * (plain > 1e-6).sum()


def test_knn_support_size():
    rng = np.random.default_rng(2)
    verts = rng.normal(size=(100, 3))
    weights = fit_convex_regressor(verts, verts[:3] * 0.1, k=10)
    assert np.all((weights > 0).sum(axis=1) <= 10)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        fit_convex_regressor(np.zeros((4, 2)), np.zeros((1, 3)))
    with pytest.raises(ValueError):
        fit_convex_regressor(np.zeros((4, 3)), np.zeros((1, 3)), candidates=[np.array([7])])
