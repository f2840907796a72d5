"""Batched similarity Procrustes alignment (Umeyama, 1991), reflection-safe.

Finds ``s, R, t`` minimising ``sum_i w_i |s R x_i + t - y_i|^2`` with ``det(R) = +1``.
Computed in float64 whatever the input dtype; results are cast back to the input dtype.
Differentiable through ``torch.linalg.svd`` (gradients are undefined when two singular values
of the cross-covariance coincide, e.g. for degenerate point sets).
"""

from __future__ import annotations

import torch
from torch import Tensor


def similarity_procrustes(
    src: Tensor, dst: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity transforms mapping ``src`` onto ``dst`` in the weighted least-squares sense.

    Args:
        src: Tensor of shape (B, N, 3), source points (any frame, any unit).
        dst: Tensor of shape (B, N, 3), target points, same unit.
        weights: Optional non-negative Tensor of shape (B, N) or (N,); uniform when None.

    Returns:
        ``(scale, R, t)``: Tensors of shapes (B,), (B, 3, 3) and (B, 3) such that
        ``scale * src @ R.T + t`` approximates ``dst``; ``det(R) = +1`` always.
    """
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] != 3:
        raise ValueError(f"src and dst must both be (B, N, 3); got {src.shape} and {dst.shape}")
    out_dtype = src.dtype
    x = src.to(torch.float64)
    y = dst.to(torch.float64)
    B, N, _ = x.shape
    if weights is None:
        w = torch.full((B, N), 1.0 / N, dtype=torch.float64, device=x.device)
    else:
        w = weights.to(torch.float64).expand(B, N)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-300)
    w3 = w[..., None]  # (B, N, 1)

    mu_x = (w3 * x).sum(1)  # (B, 3)
    mu_y = (w3 * y).sum(1)
    xc = x - mu_x[:, None]
    yc = y - mu_y[:, None]
    var_x = (w * (xc * xc).sum(-1)).sum(-1)  # (B,)
    cov = (w3 * yc).transpose(1, 2) @ xc  # (B, 3, 3) = sum_i w_i y_i x_i^T

    U, S, Vh = torch.linalg.svd(cov)
    # Flip the last singular direction when U V^T would be a reflection.
    d = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones(B, 3, dtype=torch.float64, device=x.device)
    diag = torch.cat([diag[:, :2], d[:, None]], dim=-1)
    R = U @ (diag[..., None] * Vh)
    scale = (S * diag).sum(-1) / var_x.clamp_min(1e-300)
    t = mu_y - scale[:, None] * (R @ mu_x[..., None]).squeeze(-1)
    return scale.to(out_dtype), R.to(out_dtype), t.to(out_dtype)


def apply_similarity(points: Tensor, scale: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Apply ``x -> scale * R x + t``.

    Args:
        points: Tensor of shape (B, N, 3).
        scale: Tensor of shape (B,).
        R: Tensor of shape (B, 3, 3).
        t: Tensor of shape (B, 3).

    Returns:
        Tensor of shape (B, N, 3).
    """
    return scale[:, None, None] * points @ R.transpose(-1, -2) + t[:, None]


def procrustes_align(src: Tensor, dst: Tensor, weights: Tensor | None = None) -> Tensor:
    """``src`` moved onto ``dst`` by the best similarity transform.

    Args:
        src: Tensor of shape (B, N, 3).
        dst: Tensor of shape (B, N, 3).
        weights: Optional Tensor of shape (B, N) or (N,).

    Returns:
        Tensor of shape (B, N, 3), the aligned ``src`` (dtype of ``src``).
    """
    scale, R, t = similarity_procrustes(src, dst, weights)
    aligned = apply_similarity(src.to(torch.float64), scale.double(), R.double(), t.double())
    return aligned.to(src.dtype)
