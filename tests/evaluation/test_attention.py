"""Cross-attention statistics (sahmr.evaluation.attention) against hand-computed values and
slow obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sahmr.evaluation.attention import (
    CrossAttentionReport,
    frame_rows,
    log_linear_r2,
    nearest_mass,
    normalized_entropy,
    row_pearson,
    row_spearman,
    summarize,
    top_mass,
    uniform_share,
)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_entropy_uniform_one_hot_and_padding():
    uniform = np.full((2, 8), 1 / 8)
    np.testing.assert_allclose(normalized_entropy(uniform), 1.0)
    one_hot = np.eye(3, 8)
    np.testing.assert_allclose(normalized_entropy(one_hot), 0.0, atol=1e-12)
    # Two keys at 1/2: entropy log 2 over log 4 valid keys = 0.5.
    half = np.array([[0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(normalized_entropy(half), 0.5)
    # Padding keys (weight 0 under a masked softmax) do not count: uniform over 5 of 8.
    padded = np.zeros((1, 8))
    padded[0, :5] = 0.2
    valid = np.arange(8) < 5
    np.testing.assert_allclose(normalized_entropy(padded, valid), 1.0)
    assert normalized_entropy(padded)[0] < 0.8  # without the mask: not uniform over 8
    # Fewer than two valid keys: undefined.
    assert np.isnan(normalized_entropy(np.ones((1, 3)), np.array([True, False, False]))).all()


def test_entropy_matches_a_loop():
    rng = np.random.default_rng(0)
    w = rng.random((5, 7))
    valid = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    got = normalized_entropy(w, valid)
    for q in range(5):
        p = w[q, valid] / w[q, valid].sum()
        assert got[q] == pytest.approx(-sum(x * math.log(x) for x in p) / math.log(5))


def test_top_mass():
    np.testing.assert_allclose(top_mass(np.full((1, 20), 0.05), fraction=0.1), 0.1)
    np.testing.assert_allclose(top_mass(np.eye(2, 20), fraction=0.1), 1.0)
    # ceil(0.1 * 11) = 2 of 11 keys: uniform share 2/11.
    np.testing.assert_allclose(top_mass(np.full((1, 11), 1 / 11)), 2 / 11)
    assert uniform_share(11, 0.1) == pytest.approx(2 / 11)
    w = np.array([[0.05, 0.4, 0.1, 0.3, 0.15, 0.0, 0.0]])
    valid = np.arange(7) < 5  # ceil(0.5 * 5) = 3 largest valid: 0.4 + 0.3 + 0.15
    np.testing.assert_allclose(top_mass(w, valid, fraction=0.5), 0.85)
    with pytest.raises(ValueError, match="fraction"):
        top_mass(w, fraction=0.0)


def test_correlations():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([2.0, 4.0, 6.0, 8.0])
    np.testing.assert_allclose(row_pearson(a, b)[:2], [1.0, -1.0])
    assert np.isnan(row_pearson(a, b)[2])  # constant row
    # Spearman sees only the order: any increasing transform correlates 1.
    np.testing.assert_allclose(row_spearman(np.exp(a[:2] * 3), b), [1.0, -1.0])
    rng = np.random.default_rng(1)
    x, y = rng.random((3, 9)), rng.random((3, 9))
    ref = [np.corrcoef(x[i], y[i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(row_pearson(x, y), ref)
    ties = np.array([[1.0, 1.0, 2.0, 3.0]])  # average ranks 1.5, 1.5, 3, 4
    np.testing.assert_allclose(
        row_spearman(ties, b), np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    )


def test_nearest_mass():
    d = np.array([[0.1, 0.5, 0.2, 0.9]])
    w = np.array([[0.4, 0.1, 0.3, 0.2]])
    np.testing.assert_allclose(nearest_mass(w, d, fraction=0.5), 0.7)  # keys 0 and 2
    np.testing.assert_allclose(nearest_mass(np.full((1, 10), 0.1), np.arange(10.0)[None]), 0.1)


def test_log_linear_r2():
    rng = np.random.default_rng(4)
    xyz = rng.uniform(-1, 1, (30, 3))
    ramp = _softmax_rows((xyz @ np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]]).T).T)
    np.testing.assert_allclose(log_linear_r2(ramp, xyz), 1.0)
    # Attention peaked on the keys near the middle of the cloud is no ramp.
    peaked = _softmax_rows(-((np.linalg.norm(xyz, axis=1) / 0.3) ** 2)[None])
    assert log_linear_r2(peaked, xyz)[0] < 0.3
    assert np.isnan(log_linear_r2(np.full((1, 30), 1 / 30), xyz)).all()  # constant row
    assert np.isnan(log_linear_r2(ramp[:, :4], xyz[:4])).all()  # too few keys


def test_frame_rows_attention_that_decays_with_distance():
    """A query attending by ``softmax(-distance / tau)`` correlates positively with closeness,
    puts more than chance on its nearest keys, and the null token's mass is counted apart."""
    rng = np.random.default_rng(2)
    contacts = rng.uniform(-1, 1, (40, 3))
    queries = rng.uniform(-1, 1, (6, 3))
    dist = np.linalg.norm(queries[:, None] - contacts[None], axis=-1)
    keys = 1 + 40 + 5  # null token, contacts, padding
    logits = np.full((6, keys), -np.inf)
    logits[:, 0] = 0.0
    logits[:, 1:41] = -dist / 0.2
    w = _softmax_rows(logits)
    key_xyz = np.full((keys, 3), np.nan)
    key_xyz[1:41] = contacts
    valid = np.arange(keys) < 41
    rows = frame_rows(w, valid, key_xyz, {"predicted": queries, "shuffled": queries[::-1]})
    assert rows.num_valid == 41 and rows.num_positioned == 40
    assert (rows.spearman["predicted"] > 0.99).all()
    assert (rows.nearest_mass["predicted"] > 0.3).all()  # chance: 4 / 40
    np.testing.assert_allclose(rows.keyless_mass, w[:, 0])
    assert (rows.entropy < 1.0).all() and (rows.top_mass > uniform_share(41, 0.1)).all()
    assert rows.spearman["shuffled"].mean() < rows.spearman["predicted"].mean()
    assert rows.log_linear_r2.mean() < 0.9  # a decay with distance is no linear ramp
    # Uniform attention: entropy 1, chance concentration, no geometry.
    flat = np.where(valid, 1.0 / 41, 0.0)[None].repeat(6, 0)
    rows = frame_rows(flat, valid, key_xyz, {"predicted": queries})
    np.testing.assert_allclose(rows.entropy, 1.0)
    np.testing.assert_allclose(rows.top_mass, uniform_share(41, 0.1))
    np.testing.assert_allclose(rows.nearest_mass["predicted"], uniform_share(40, 0.1))
    assert np.isnan(rows.spearman["predicted"]).all()  # constant weights
    # Too few contacts for geometry: NaN, the rest still measured.
    few = frame_rows(w[:, :3], np.ones(3, bool), key_xyz[:3], {"predicted": queries})
    assert np.isnan(few.spearman["predicted"]).all() and np.isfinite(few.entropy).all()


def test_report_groups_and_lists_few_contact_frames():
    rng = np.random.default_rng(3)
    report = CrossAttentionReport(min_keys=5)
    for i, n in enumerate([30, 2, 0, 12]):
        keys = 1 + 30
        w = _softmax_rows(rng.normal(size=(4, keys)))
        valid = np.arange(keys) < 1 + n
        w = np.where(valid, w, 0.0)
        w /= w.sum(axis=1, keepdims=True)
        xyz = np.full((keys, 3), np.nan)
        xyz[1 : 1 + n] = rng.random((n, 3))
        rows = frame_rows(w, valid, xyz, {"predicted": rng.random((4, 3))})
        report.add(f"f{i}", [rows, rows])
    out = report.to_dict()
    assert out["frames"] == 4 and len(out["blocks"]) == 2
    assert [f["frame"] for f in out["few_key_frames"]] == ["f1", "f2"]
    assert out["few_key_frames"][1]["keyless_mass_mean"] == [1.0, 1.0]  # only the null token
    blk = out["blocks"][0]
    assert blk["all"]["frames"] == 4 and blk["few_keys"]["frames"] == 2
    assert blk["all"]["entropy"]["count"] == 12  # frame f2 (null token only) has no entropy
    assert blk["enough_keys"]["spearman_predicted"]["count"] == 8
    assert set(blk["all"]) >= {"entropy", "top_mass", "top_mass_if_uniform", "keyless_mass",
                               "nearest_mass_predicted", "nearest_mass_if_uniform",
                               "log_linear_r2"}  # fmt: skip
    assert len(report.entropies(0, few=True)) == 4


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, np.nan])
    assert s["mean"] == 2.0 and s["p50"] == 2.0 and s["count"] == 3
    assert summarize([])["count"] == 0 and math.isnan(summarize([])["mean"])
