"""The cross-attention report figure (sahmr.viz.attention.cross_attention_figure)."""

import numpy as np
import pytest

from sahmr.viz.attention import cross_attention_figure


def test_figure_of_two_blocks():
    rng = np.random.default_rng(0)
    crop = np.full((64, 64, 3), 200, np.uint8)
    uv = rng.uniform(0, 63, (30, 2))
    w = rng.random(30)
    kwargs = dict(crop=crop, points_uv=uv, query_uv=np.array([32.0, 40.0]), dpi=40)
    img = cross_attention_figure(
        [rng.uniform(0.9, 1.0, 50), np.full(50, np.nan)],
        point_weights=[w / w.sum(), np.full(30, 1 / 30)],
        few_entropies=[rng.uniform(0.95, 1.0, 5), np.zeros(0)],
        **kwargs,
    )
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert img.shape[1] > img.shape[0] * 0.7  # two columns
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # histograms, crop, points drawn
    empty = cross_attention_figure(
        [np.ones(3)], crop=crop, points_uv=np.zeros((0, 2)), point_weights=[np.zeros(0)], dpi=40
    )
    assert empty.ndim == 3
    with pytest.raises(ValueError, match="per block"):
        cross_attention_figure([np.ones(3)], point_weights=[], **kwargs)
    with pytest.raises(ValueError, match="weights for"):
        cross_attention_figure([np.ones(3)], point_weights=[np.ones(4)], **kwargs)
