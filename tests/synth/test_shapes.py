"""Body shape distribution: statures span short to tall, the mixture's parts, stature vs mesh."""

import numpy as np
import pytest
import torch
from synth_helpers import body_model

from sahmr.synth.shapes import ShapeRanges, StatureMeter, rest_stature, sample_shape

STATURE_RANGE_M = (1.44, 1.98)
"""Documented span of the default distribution's statures on the license-free body
(docs/dataset_format.md: beta0 = +-4.5 at 6 cm per unit around 1.71 m)."""


def _mesh_stature(betas: np.ndarray) -> np.ndarray:
    """Slow reference: the y extent of the zero-pose mesh from the body model's forward."""
    body = body_model()
    with torch.no_grad():
        v = body(betas=torch.as_tensor(betas, dtype=torch.float32)).vertices.numpy()
    return v[..., 1].max(axis=1) - v[..., 1].min(axis=1)


def test_rest_stature_matches_the_posed_mesh():
    rng = np.random.default_rng(0)
    betas = np.stack([sample_shape(rng, ShapeRanges(tail_fraction=0.5)) for _ in range(6)])
    body = body_model()
    fast = rest_stature(body.v_template.numpy(), body.shapedirs.numpy(), betas)
    np.testing.assert_allclose(fast, _mesh_stature(betas), atol=1e-5)
    assert StatureMeter(body)(betas[0]) == pytest.approx(fast[0], abs=1e-9)
    # beta0 is stature: 6 cm per unit around 1.71 m
    mean = float(rest_stature(body.v_template.numpy(), body.shapedirs.numpy(), np.zeros(10)))
    one = np.zeros(10)
    one[0] = 1.0
    step = float(rest_stature(body.v_template.numpy(), body.shapedirs.numpy(), one)) - mean
    assert 1.69 < mean < 1.73 and step == pytest.approx(0.06, abs=0.003)


def test_default_shapes_span_short_to_tall_and_light_to_heavy():
    rng = np.random.default_rng(7)
    ranges = ShapeRanges()
    betas = np.stack([sample_shape(rng, ranges) for _ in range(600)])
    meter = StatureMeter(body_model())
    heights = np.array([meter(b) for b in betas])
    lo, hi = STATURE_RANGE_M
    assert heights.min() < lo + 0.03 and heights.max() > hi - 0.03  # both ends are reached
    assert heights.min() > lo - 0.04 and heights.max() < hi + 0.04  # ... and not passed
    # the core stays within +-clip; about tail_fraction of bodies reach beyond it
    beyond = (np.abs(betas[:, 0]) > ranges.clip) | (np.abs(betas[:, 1]) > ranges.clip)
    assert np.abs(betas[:, 2:]).max() <= ranges.clip
    assert 0.05 < beyond.mean() < 0.2  # uniform tails: 0.3 * P(beyond 2.5 in either)
    assert np.abs(betas[:, 0]).max() <= 4.5 and np.abs(betas[:, 1]).max() <= 3.0
    assert betas[:, 1].min() < -2.7 and betas[:, 1].max() > 2.7  # light and heavy
    # most draws are near the average: within +-2 std on both leading components with
    # probability 0.7 * 0.954^2 + 0.3 * (2 / 4.5) * (2 / 3) = 0.73
    assert np.mean(np.all(np.abs(betas[:, :2]) <= 2.0, axis=1)) == pytest.approx(0.73, abs=0.05)


def test_tail_min_keeps_shapes_away_from_the_average():
    rng = np.random.default_rng(1)
    ranges = ShapeRanges(tail_fraction=1.0, tail_min=(2.5, 2.0), tail_limits=(4.5, 3.0))
    betas = np.stack([sample_shape(rng, ranges) for _ in range(200)])
    assert np.all(np.abs(betas[:, 0]) >= 2.5) and np.all(np.abs(betas[:, 1]) >= 2.0)
    assert (betas[:, 0] < 0).mean() == pytest.approx(0.5, abs=0.12)  # short and tall
    heights = np.array([StatureMeter(body_model())(b) for b in betas])
    assert np.all((heights < 1.58) | (heights > 1.84))


def test_shape_ranges_reject_bad_values():
    with pytest.raises(ValueError, match="tail_min"):
        ShapeRanges(tail_limits=(3.0, 3.0), tail_min=(0.0,))
    with pytest.raises(ValueError, match="tail_min <= tail_limits"):
        ShapeRanges(tail_limits=(3.0,), tail_min=(4.0,))
    with pytest.raises(ValueError, match="tail_fraction"):
        ShapeRanges(tail_fraction=1.5)
