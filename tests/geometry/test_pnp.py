import torch

from sahmr.geometry.cameras import make_K, project
from sahmr.geometry.pnp import estimate_translation


def _scene(B=3, N=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(B, N, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor(
        [0.6, 1.7, 0.4], dtype=torch.float64
    )
    t = torch.stack(
        [torch.rand(B, generator=g) - 0.5, torch.rand(B, generator=g) - 0.5,
         2 + 5 * torch.rand(B, generator=g)], dim=1
    ).double()
    K = make_K(torch.full((B,), 800.0), torch.full((B,), 820.0), torch.full((B,), 320.0),
               torch.full((B,), 240.0)).double()
    return pts, t, K


def test_exact_on_noise_free_projections():
    pts, t, K = _scene()
    uv = project(K, pts + t[:, None])
    est = estimate_translation(pts, uv, K)
    assert torch.allclose(est, t, atol=1e-8)


def test_weights_ignore_outliers():
    pts, t, K = _scene(seed=1)
    uv = project(K, pts + t[:, None])
    uv[:, 0] += 200.0  # one wildly wrong point per frame
    w = torch.ones(uv.shape[:2], dtype=torch.float64)
    w[:, 0] = 0
    assert torch.allclose(estimate_translation(pts, uv, K, w), t, atol=1e-8)
    assert not torch.allclose(estimate_translation(pts, uv, K), t, atol=1e-3)
