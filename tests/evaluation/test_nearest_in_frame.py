"""`nearest_in_frame`: exact per-group nearest neighbours, and its ``max_distance`` shortcut
(the box test that keeps the RCNet loss's contact labels off most voxels)."""

from __future__ import annotations

import torch

from sahmr.evaluation.rcnet_metrics import contact_match_counts, nearest_in_frame


def _cloud(n: int, groups: int, seed: int, spread: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g, dtype=torch.float64) * spread
    grp = torch.randint(0, groups, (n,), generator=g)
    return pts, grp


def test_matches_brute_force_loop():
    query, qg = _cloud(300, 4, 0)
    ref, rg = _cloud(80, 3, 1)  # group 3 has no reference point
    dist, idx = nearest_in_frame(query, qg, ref, rg, chunk_size=17)
    for k in range(query.shape[0]):
        cand = [i for i in range(ref.shape[0]) if rg[i] == qg[k]]
        if not cand:
            assert dist[k] == float("inf") and idx[k] == -1
            continue
        d = [float((query[k] - ref[i]).norm()) for i in cand]
        assert abs(float(dist[k]) - min(d)) < 1e-12
        assert int(idx[k]) == cand[d.index(min(d))]


def test_max_distance_keeps_every_distance_within_it():
    query, qg = _cloud(2000, 5, 2, spread=3.0)
    ref, rg = _cloud(40, 4, 3, spread=0.5)  # small clusters: most queries are far away
    ref = ref + torch.tensor([1.0, 1.0, 1.0], dtype=ref.dtype)
    # and queries close to the reference points, at all distances up to ~0.3 m
    g = torch.Generator().manual_seed(7)
    jitter = (torch.rand(400, 3, generator=g, dtype=ref.dtype) - 0.5) * 0.35
    pick = torch.randint(0, ref.shape[0], (400,), generator=g)
    query = torch.cat([query, ref[pick] + jitter])
    qg = torch.cat([qg, rg[pick]])
    full_d, full_i = nearest_in_frame(query, qg, ref, rg)
    for max_d in (0.05, 0.2, 0.7):
        d, i = nearest_in_frame(query, qg, ref, rg, max_distance=max_d)
        within = full_d <= max_d
        assert within.any() and (~within).any()
        torch.testing.assert_close(d[within], full_d[within], rtol=0, atol=1e-12)
        assert torch.equal(i[within], full_i[within])
        # beyond it: either skipped (inf, -1) or the exact answer
        far = ~within
        skipped = torch.isinf(d[far])
        assert (i[far][skipped] == -1).all()
        torch.testing.assert_close(d[far][~skipped], full_d[far][~skipped], rtol=0, atol=1e-12)
        assert skipped.any()  # the shortcut did skip something


def test_max_distance_keeps_a_point_exactly_at_the_limit():
    ref = torch.tensor([[0.0, 0.0, 0.0]])
    query = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, -0.1]])
    zeros = torch.zeros(2, dtype=torch.int64)
    d, i = nearest_in_frame(query, zeros, ref, zeros[:1], max_distance=0.1)
    torch.testing.assert_close(d, torch.tensor([0.1, 0.1]))
    assert i.tolist() == [0, 0]


def test_contact_match_counts_unchanged_by_the_shortcut():
    """The counts only compare distances with the tolerance, so the shortcut must leave them
    exactly as a plain search gives them (reference computed here without it)."""
    pred, pb = _cloud(400, 3, 4, spread=1.0)
    gt, gb = _cloud(150, 3, 5, spread=1.0)
    g = torch.Generator().manual_seed(6)
    pr = torch.randint(1, 8, (400,), generator=g)
    gr = torch.randint(1, 8, (150,), generator=g)
    tol = 0.06
    counts = contact_match_counts(pred, pr, pb, gt, gr, gb, 3, tolerance=tol)
    d_pred, _ = nearest_in_frame(pred, pb, gt, gb)
    d_gt, _ = nearest_in_frame(gt, gb, pred, pb)
    ref_pred = torch.zeros(3, dtype=torch.float64).index_add_(0, pb, (d_pred <= tol).double())
    ref_gt = torch.zeros(3, dtype=torch.float64).index_add_(0, gb, (d_gt <= tol).double())
    torch.testing.assert_close(counts["pred_correct"], ref_pred)
    torch.testing.assert_close(counts["gt_found"], ref_gt)
    assert 0 < float(counts["pred_correct"].sum()) < 400



def test_matrix_product_search_matches_the_exact_one():
    """``exact=False`` (the training labels' search) picks the same points in float64 and
    reports their exact distances; in float32 at room scale the picked point's distance is
    within a micrometre of the exact nearest."""
    query, qg = _cloud(500, 4, 8, spread=4.0)
    ref, rg = _cloud(120, 4, 9, spread=4.0)
    plain = nearest_in_frame(query, qg, ref, rg)
    fast = nearest_in_frame(query, qg, ref, rg, exact=False, chunk_size=33)
    torch.testing.assert_close(fast[0], plain[0], rtol=0, atol=1e-12)
    assert torch.equal(fast[1], plain[1])
    q32, r32 = query.float() + 3.0, ref.float() + 3.0  # metres away from the origin
    p32 = nearest_in_frame(q32, qg, r32, rg)
    f32 = nearest_in_frame(q32, qg, r32, rg, exact=False, max_distance=0.5)
    within = p32[0] <= 0.5
    assert within.any()
    torch.testing.assert_close(f32[0][within], p32[0][within], rtol=0, atol=1e-6)


def test_padded_search_in_chunks_empty_groups_and_ties():
    """All groups at once or a group per chunk give the same answer; a group without
    references answers inf / -1; a tie goes to the lowest reference row."""
    from sahmr.evaluation.rcnet_metrics import _nearest_padded

    query, qg = _cloud(150, 4, 10)
    ref, rg = _cloud(40, 3, 11)  # group 3: no references
    plain = nearest_in_frame(query, qg, ref, rg)
    for max_elems in (10**9, 1):
        d, i = _nearest_padded(query, qg, ref, rg, 4, max_elems)
        torch.testing.assert_close(d, plain[0], rtol=0, atol=1e-12)
        assert torch.equal(i, plain[1])
    assert torch.isinf(d[qg == 3]).all() and (i[qg == 3] == -1).all()
    twins = torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    d, i = _nearest_padded(
        torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.int64), twins,
        torch.zeros(3, dtype=torch.int64), 1, 10**6,
    )
    assert float(d) == 1.0 and int(i) == 1
