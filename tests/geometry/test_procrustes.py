"""Similarity Procrustes against a slow per-sample numpy Umeyama reference."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from sahmr.geometry.procrustes import procrustes_align, similarity_procrustes


def _umeyama_reference(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
    """One sample, plain loops over points: returns (s, R, t)."""
    n = x.shape[0]
    w = np.ones(n) if w is None else w
    w = w / w.sum()
    mx = sum(w[i] * x[i] for i in range(n))
    my = sum(w[i] * y[i] for i in range(n))
    cov = np.zeros((3, 3))
    var = 0.0
    for i in range(n):
        cov += w[i] * np.outer(y[i] - my, x[i] - mx)
        var += w[i] * np.dot(x[i] - mx, x[i] - mx)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / var
    t = my - s * R @ mx
    return s, R, t


def test_matches_numpy_reference_noisy():
    rng = np.random.default_rng(0)
    B, N = 6, 30
    x = rng.normal(size=(B, N, 3))
    y = rng.normal(size=(B, N, 3)) + 0.5 * x
    w = rng.uniform(0.1, 1.0, size=(B, N))
    for weights in (None, w):
        s, R, t = similarity_procrustes(
            torch.from_numpy(x).float(),
            torch.from_numpy(y).float(),
            None if weights is None else torch.from_numpy(weights),
        )
        assert s.dtype == torch.float32
        for b in range(B):
            s_ref, R_ref, t_ref = _umeyama_reference(
                x[b], y[b], None if weights is None else weights[b]
            )
            np.testing.assert_allclose(s[b].item(), s_ref, rtol=1e-5)
            np.testing.assert_allclose(R[b].numpy(), R_ref, atol=1e-5)
            np.testing.assert_allclose(t[b].numpy(), t_ref, atol=1e-5)


def test_recovers_exact_similarity():
    rng = np.random.default_rng(1)
    B, N = 4, 20
    x = torch.from_numpy(rng.normal(size=(B, N, 3)))
    R_true = torch.from_numpy(Rotation.random(B, random_state=1).as_matrix())
    s_true = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    t_true = torch.from_numpy(rng.normal(size=(B, 3)))
    y = s_true[:, None, None] * x @ R_true.transpose(1, 2) + t_true[:, None]
    s, R, t = similarity_procrustes(x, y)
    torch.testing.assert_close(s, s_true)
    torch.testing.assert_close(R, R_true)
    torch.testing.assert_close(t, t_true)
    torch.testing.assert_close(procrustes_align(x, y), y)


def test_reflection_safe():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(5, 25, 3)))
    y = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # mirror image
    _, R, _ = similarity_procrustes(x, y)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(5, dtype=torch.float64))
    for b in range(5):
        _, R_ref, _ = _umeyama_reference(x[b].numpy(), y[b].numpy())
        np.testing.assert_allclose(R[b].numpy(), R_ref, atol=1e-9)
    # An aligned mirror image can never be exact: the residual stays positive.
    assert ((procrustes_align(x, y) - y).norm(dim=-1).mean(-1) > 1e-3).all()


def test_differentiable():
    x = torch.randn(2, 10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 10, 3, dtype=torch.float64)
    (procrustes_align(x, y) - y).square().sum().backward()
    assert torch.isfinite(x.grad).all()
