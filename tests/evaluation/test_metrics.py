"""Metrics against slow, obvious numpy references and hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sahmr.evaluation.metrics import (
    acceleration_error,
    contact_fitting_error,
    g_mpjpe,
    g_mpve,
    mpjpe,
    mpve,
    pa_mpjpe,
    pa_mpve,
    penetration,
    precision_recall_f1,
    root_error,
    scene_contact_class_counts,
    vertex_contact_counts,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _ref_mean_dist_mm(p: np.ndarray, g: np.ndarray) -> float:
    total = 0.0
    for j in range(p.shape[0]):
        total += math.sqrt(sum((p[j, k] - g[j, k]) ** 2 for k in range(3)))
    return 1000.0 * total / p.shape[0]


def _ref_procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    U, S, Vt = np.linalg.svd(yc.T @ xc)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xc**2).sum()
    return s * xc @ R.T + my


def test_mpjpe_matches_reference(rng):
    p, g = rng.normal(size=(2, 5, 24, 3))
    ours = mpjpe(torch.from_numpy(p), torch.from_numpy(g), pelvis=0).numpy()
    for b in range(5):
        ref = _ref_mean_dist_mm(p[b] - p[b, 0], g[b] - g[b, 0])
        assert ours[b] == pytest.approx(ref, rel=1e-10)
    # Pelvis as the mean of two hips equals passing those positions explicitly.
    pt, gt = torch.from_numpy(p), torch.from_numpy(g)
    a = mpjpe(pt, gt, pelvis=[2, 3])
    b = mpjpe(pt, gt, pred_pelvis=pt[:, 2:4].mean(1), gt_pelvis=gt[:, 2:4].mean(1))
    torch.testing.assert_close(a, b)


def test_mpjpe_hand_checked():
    # Pelvis at the origin in both; one of two joints is offset by (3, 4, 0) cm -> 50 mm, the
    # other (the pelvis) has 0 error: MPJPE = (0 + 50) / 2 = 25 mm.
    gt = torch.tensor([[[0.0, 0, 0], [0.0, 1.0, 0]]])
    pred = torch.tensor([[[0.0, 0, 0], [0.03, 1.04, 0]]])
    assert mpjpe(pred, gt)[0].item() == pytest.approx(25.0, abs=1e-4)
    # A pure translation of the whole body is removed by pelvis alignment.
    assert mpjpe(pred + 5.0, gt)[0].item() == pytest.approx(25.0, abs=1e-3)
    # G-MPJPE has no alignment: every joint offset by (3, 4, 0) cm -> 50 mm.
    assert g_mpjpe(gt + torch.tensor([0.03, 0.04, 0.0]), gt)[0].item() == pytest.approx(50.0)


def test_mpve_and_g_mpve(rng):
    p, g = rng.normal(size=(2, 3, 100, 3))
    pp, gp = rng.normal(size=(2, 3, 3))
    ours = mpve(*(torch.from_numpy(a) for a in (p, g, pp, gp))).numpy()
    ours_g = g_mpve(torch.from_numpy(p), torch.from_numpy(g)).numpy()
    for b in range(3):
        assert ours[b] == pytest.approx(_ref_mean_dist_mm(p[b] - pp[b], g[b] - gp[b]))
        assert ours_g[b] == pytest.approx(_ref_mean_dist_mm(p[b], g[b]))
    # Hand check: every vertex 2 cm too high, pelvis joints identical -> 20 mm MPVE.
    v = torch.zeros(1, 4, 3)
    pel = torch.zeros(1, 3)
    assert mpve(v + torch.tensor([0, 0, 0.02]), v, pel, pel)[0].item() == pytest.approx(20.0)
    assert g_mpve(v + torch.tensor([0, 0, 0.02]), v)[0].item() == pytest.approx(20.0)


def test_pa_metrics_match_reference(rng):
    p, g = rng.normal(size=(2, 4, 17, 3))
    ours = pa_mpjpe(torch.from_numpy(p).float(), torch.from_numpy(g).float()).numpy()
    ours_v = pa_mpve(torch.from_numpy(p), torch.from_numpy(g)).numpy()
    for b in range(4):
        ref = _ref_mean_dist_mm(_ref_procrustes(p[b], g[b]), g[b])
        assert ours[b] == pytest.approx(ref, rel=1e-4)
        assert ours_v[b] == pytest.approx(ref, rel=1e-9)


def test_pa_mpjpe_hand_checked_and_reflection():
    # A scaled, rotated, shifted copy aligns perfectly: PA-MPJPE = 0.
    g = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.float64)
    R = torch.from_numpy(Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix())
    p = 2.0 * g @ R.T + 1.0
    assert pa_mpjpe(p, g)[0].item() == pytest.approx(0.0, abs=1e-9)
    # A mirror image can't be aligned by a proper rotation: the error stays > 0.
    assert pa_mpjpe(g * torch.tensor([-1.0, 1, 1], dtype=torch.float64), g)[0].item() > 10


def test_root_error_hand_checked():
    assert root_error(torch.tensor([[0.03, 0.04, 0.0]]), torch.zeros(1, 3))[0].item() == (
        pytest.approx(50.0)
    )


def test_penetration_matches_reference(rng):
    sdf = rng.normal(scale=0.05, size=(4, 300))
    out = penetration(torch.from_numpy(sdf))
    for b in range(4):
        depths = [-s for s in sdf[b] if s < 0]
        assert out["pene"][b].item() == pytest.approx(1000.0 * sum(depths))
        assert out["pen_count"][b].item() == len(depths)
        assert out["pen_depth_mean"][b].item() == pytest.approx(1000.0 * sum(depths) / len(depths))
        assert out["pen_fraction"][b].item() == pytest.approx(100.0 * len(depths) / 300)


def test_penetration_hand_checked():
    # Vertices at +1 cm, -2 cm, -3 cm, 0: PenE = 20 + 30 = 50 mm, 2 of 4 penetrate (50 %),
    # mean depth 25 mm.
    out = penetration(torch.tensor([[0.01, -0.02, -0.03, 0.0]], dtype=torch.float64))
    assert out["pene"].item() == pytest.approx(50.0)
    assert out["pen_fraction"].item() == pytest.approx(50.0)
    assert out["pen_depth_mean"].item() == pytest.approx(25.0)


def test_confe_matches_reference_and_hand_check(rng):
    sdf = rng.normal(scale=0.05, size=(3, 200))
    contact = rng.random(size=(3, 200)) < 0.2
    ours = contact_fitting_error(torch.from_numpy(sdf), torch.from_numpy(contact)).numpy()
    for b in range(3):
        ref = 0.0
        for v in range(200):
            if contact[b, v]:
                ref += abs(sdf[b, v])
            elif sdf[b, v] < 0:
                ref += -sdf[b, v]
        assert ours[b] == pytest.approx(1000.0 * ref)
    # Hand check: contact vertex hovering 4 cm above (40) + contact vertex 1 cm inside (10)
    # + non-contact vertex 2 cm inside (20) + non-contact vertex 5 cm above (0) = 70 mm.
    sdf_h = torch.tensor([[0.04, -0.01, -0.02, 0.05]], dtype=torch.float64)
    contact_h = torch.tensor([[True, True, False, False]])
    assert contact_fitting_error(sdf_h, contact_h).item() == pytest.approx(70.0)


def test_vertex_contact_counts_reference_and_hand_check(rng):
    sdf = rng.normal(scale=0.1, size=(3, 100))
    gt = rng.random(size=(3, 100)) < 0.3
    regions = rng.integers(0, 8, size=100)
    out = vertex_contact_counts(
        torch.from_numpy(sdf),
        torch.from_numpy(gt),
        threshold=0.05,
        regions=torch.from_numpy(regions),
    )
    for b in range(3):
        tp = fp = fn = 0
        rtp = [0] * 7
        for v in range(100):
            if regions[v] == 0:  # outside the contact regions: neither side counts it
                continue
            pred = abs(sdf[b, v]) < 0.05
            tp += pred and gt[b, v]
            fp += pred and not gt[b, v]
            fn += (not pred) and gt[b, v]
            if pred and gt[b, v]:
                rtp[regions[v] - 1] += 1
        assert (out["tp"][b], out["fp"][b], out["fn"][b]) == (tp, fp, fn)
        assert out["region_tp"][b].tolist() == rtp
    # Hand check: distances 1, 3, 9, 2 cm, labels T, F, T, F with a 5 cm threshold
    # -> predicted T, T, F, T: tp 1, fp 2, fn 1; P = 1/3, R = 1/2, F1 = 2/(2+2+1) = 0.4.
    c = vertex_contact_counts(
        torch.tensor([[0.01, -0.03, 0.09, 0.02]]),
        torch.tensor([[True, False, True, False]]),
        threshold=0.05,
    )
    prf = precision_recall_f1(c["tp"], c["fp"], c["fn"])
    assert prf["precision"].item() == pytest.approx(1 / 3)
    assert prf["recall"].item() == pytest.approx(0.5)
    assert prf["f1"].item() == pytest.approx(0.4)


def test_scene_contact_class_counts(rng):
    pred = rng.integers(0, 8, size=(2, 50))
    gt = rng.integers(0, 8, size=(2, 50))
    out = scene_contact_class_counts(torch.from_numpy(pred), torch.from_numpy(gt))
    for b in range(2):
        for c in range(1, 8):
            tp = sum(int(pred[b, i] == c and gt[b, i] == c) for i in range(50))
            fp = sum(int(pred[b, i] == c and gt[b, i] != c) for i in range(50))
            fn = sum(int(pred[b, i] != c and gt[b, i] == c) for i in range(50))
            assert (out["tp"][b, c - 1], out["fp"][b, c - 1], out["fn"][b, c - 1]) == (tp, fp, fn)
    # Hand check, class 1: pred [1, 1, 0, 2], gt [1, 0, 1, 2] -> tp 1, fp 1, fn 1, IoU 1/3;
    # class 2: tp 1 -> IoU 1.
    h = scene_contact_class_counts(torch.tensor([[1, 1, 0, 2]]), torch.tensor([[1, 0, 1, 2]]))
    iou = precision_recall_f1(h["tp"], h["fp"], h["fn"])["iou"][0]
    assert iou[0].item() == pytest.approx(1 / 3)
    assert iou[1].item() == pytest.approx(1.0)


def test_acceleration_error():
    T = 6
    t = torch.arange(T, dtype=torch.float64)
    gt = torch.zeros(T, 1, 3, dtype=torch.float64)
    # Prediction moves with constant acceleration 1 cm/frame^2 along x: x = 0.005 t^2
    # -> a = 0.01 m/frame^2 = 10 mm/frame^2 for every interior frame; at 30 fps 9000 mm/s^2.
    pred = gt.clone()
    pred[:, 0, 0] = 0.005 * t**2
    torch.testing.assert_close(
        acceleration_error(pred, gt), torch.full((T - 2,), 10.0, dtype=torch.float64)
    )
    assert acceleration_error(pred, gt, fps=30)[0].item() == pytest.approx(9000.0)
    valid = torch.tensor([True, True, True, False, True, True])
    err = acceleration_error(pred, gt, valid=valid)
    assert torch.isnan(err[1:4]).all() and err[0] == pytest.approx(10.0)


def test_fused_penetration_and_confe_equals_separate(rng):
    from sahmr.evaluation.metrics import penetration_and_confe

    sdf = torch.from_numpy(rng.normal(scale=0.05, size=(4, 300)))
    contact = torch.from_numpy(rng.random(size=(4, 300)) < 0.2)
    fused = penetration_and_confe(sdf, contact)
    torch.testing.assert_close(fused["pene"], penetration(sdf)["pene"])
    torch.testing.assert_close(fused["pen_count"], penetration(sdf)["pen_count"])
    torch.testing.assert_close(fused["confe"], contact_fitting_error(sdf, contact))


def test_precision_recall_f1_undefined_is_nan_never_one():
    # frames: nothing predicted and nothing true; only false negatives; only false positives;
    # a hand-checked one (tp 2, fp 1, fn 1 -> P = R = F1 = 2/3, IoU 1/2).
    tp = torch.tensor([0.0, 0.0, 0.0, 2.0])
    fp = torch.tensor([0.0, 0.0, 3.0, 1.0])
    fn = torch.tensor([0.0, 4.0, 0.0, 1.0])
    prf = precision_recall_f1(tp, fp, fn)
    assert torch.isnan(prf["precision"][:2]).all() and prf["precision"][2] == 0
    assert torch.isnan(prf["recall"][0]) and prf["recall"][1] == 0 and torch.isnan(prf["recall"][2])
    assert torch.isnan(prf["f1"][0]) and (prf["f1"][1:3] == 0).all()
    assert torch.isnan(prf["iou"][0])
    for k in ("precision", "recall", "f1"):
        assert prf[k][3].item() == pytest.approx(2 / 3)
    assert prf["iou"][3].item() == pytest.approx(0.5)


def test_ground_truth_against_itself_is_perfect(rng):
    """Labels made with the one definition (sahmr.scene.contact.vertex_contact) from a mesh's
    SDF, scored against the same SDF: P = R = F1 = 1, whatever the non-region vertices do."""
    from sahmr.scene.contact import CONTACT_THRESHOLD_M, vertex_contact

    sdf = torch.from_numpy(rng.uniform(-0.02, 0.3, size=(2, 400)))
    regions = torch.from_numpy(rng.integers(0, 8, size=400))
    labels = vertex_contact(sdf, regions) > 0
    assert labels.any() and ((sdf.abs() < CONTACT_THRESHOLD_M) & (regions == 0)).any()
    c = vertex_contact_counts(sdf, labels, regions=regions)
    prf = precision_recall_f1(c["tp"], c["fp"], c["fn"])
    for k in ("precision", "recall", "f1"):
        assert torch.equal(prf[k], torch.ones(2, dtype=torch.float64))
    # ConFE's floor: contact vertices exactly on the surface, nothing inside -> 0.
    on_surface = torch.where(labels, torch.zeros_like(sdf), sdf.clamp_min(0))
    assert contact_fitting_error(on_surface, labels).abs().max() == 0


def test_edge_length_error_hand_checked():
    from sahmr.evaluation.metrics import edge_length_error, mesh_edges

    # two triangles sharing an edge: 5 unique edges
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    edges = mesh_edges(faces)
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]
    gt = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]], dtype=torch.float64)
    assert edge_length_error(gt, gt, edges).item() == 0
    # any rigid motion: 0; uniform scale 1.1: exactly 10 %
    rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    moved = gt @ rot.T + torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)
    assert edge_length_error(moved, gt, edges).item() == pytest.approx(0, abs=1e-12)
    assert edge_length_error(1.1 * gt, gt, edges).item() == pytest.approx(10.0)
    assert edge_length_error(0.75 * gt, gt, edges).item() == pytest.approx(25.0)
    # stretch vertex 1 to x = 2: edge 0-1 doubles (+100 %), edge 1-2 (1 -> sqrt 2) +41.4 %,
    # the other three unchanged: mean = (100 + 41.42) / 5
    stretched = gt.clone()
    stretched[0, 1, 0] = 2.0
    expect = (100.0 + 100.0 * (2**0.5 - 1)) / 5
    assert edge_length_error(stretched, gt, edges).item() == pytest.approx(expect)
    # ground-truth edges shorter than min_gt_length are skipped. A 1 mm square (sides 1 mm,
    # diagonal 1.41 mm): the default 1 mm floor keeps all 5 edges; with a 1.2 mm floor only
    # the diagonal is scored; with 2 mm none is left: undefined (NaN).
    small = gt * 1e-3
    bent = small.clone()
    bent[0, 1, 0] = 2e-3  # edge 0-1 doubles (+100 %), edge 1-2 becomes sqrt(2) mm (+41.4 %)
    assert edge_length_error(bent, small, edges).item() == pytest.approx(expect)
    assert edge_length_error(bent, small, edges, min_gt_length=1.2e-3).item() == 0.0
    assert torch.isnan(edge_length_error(bent, small, edges, min_gt_length=2e-3)).all()


def test_edge_length_error_on_the_body(body_model):
    from sahmr.evaluation.metrics import edge_length_error, mesh_edges

    with torch.no_grad():
        v = body_model().vertices.double()
    edges = mesh_edges(torch.as_tensor(body_model.faces.astype(np.int64)))
    assert edges.shape[0] == 3 * body_model.faces.shape[0] // 2  # closed mesh: E = 3F/2
    assert edge_length_error(v, v, edges).item() == 0
    assert edge_length_error(1.03 * v, v, edges).item() == pytest.approx(3.0)
