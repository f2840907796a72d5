"""Where a parametric head's mesh-plausibility error comes from, on cached head inputs.

The mean relative edge-length error of the predicted body against the true one
(`sahmr.evaluation.metrics.edge_length_error`) mixes pose and shape. `edge_decomposition`
poses the body model with parts of the prediction swapped for the truth (the true shape, the
true pose, the mean shape, the true first ``k`` shape coefficients), which tells which part
holds the error. `linear_shape_probe` asks whether the frozen encoder's outputs carry the
shape at all: ridge regression from pooled mesh tokens (plus the crop's metric scale) to each
shape coefficient, fitted on train frames and scored (R^2) on val frames of other rooms. A
coefficient no linear read-out recovers is one a head refit on that encoder cannot learn
either; the encoder has to be trained. Both work on `sahmr.engine.head_refit.HeadCache`
(tools/refit_head.py writes them; tools/diagnose_shape.py runs both).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sahmr.engine.head_refit import HeadCache
from sahmr.evaluation.metrics import edge_length_error, mesh_edges
from sahmr.models.modes import eval_mode
from sahmr.models.param_head import BodyHead


@torch.no_grad()
def predict_cached(head: BodyHead, cache: HeadCache, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """``(betas (N, NB), rotmats (N, 24, 3, 3))`` the head predicts for the cached frames."""
    betas, rotmats = [], []
    with eval_mode(head):
        for start in range(0, len(cache), batch_size):
            rows = cache.rows(torch.arange(start, min(start + batch_size, len(cache))))
            body = head(rows.tokens.float(), rows.xyz_rel, rows.crop_side_m)
            betas.append(body.betas.float())
            rotmats.append(body.rotmats.float())
    return torch.cat(betas), torch.cat(rotmats)


@torch.no_grad()
def edge_decomposition(
    head: BodyHead, cache: HeadCache, true_prefixes: tuple[int, ...] = (1, 2, 3),
    batch_size: int = 64,
) -> dict[str, float]:  # fmt: skip
    """Mean edge-length error (%) over the cached frames of bodies mixing prediction and truth.

    Rows: ``predicted``; ``predicted pose, true shape``; ``true pose, predicted shape``;
    ``predicted pose, mean shape`` (betas 0); ``true pose, mean shape``; and for each ``k`` of
    ``true_prefixes`` ``predicted pose, true betas[:k]`` (the rest 0). Scored against the cached
    true body (posed from the frame's parameters) in float64, as the evaluator does.
    """
    betas_p, rot_p = predict_cached(head, cache, batch_size)
    nb = min(betas_p.shape[1], cache.betas.shape[1])
    betas_t, rot_t = cache.betas[:, :nb].float(), cache.rotmats.float()
    betas_p = betas_p[:, :nb]
    mean = torch.zeros_like(betas_p)
    rows = {
        "predicted": (rot_p, betas_p),
        "predicted pose, true shape": (rot_p, betas_t),
        "true pose, predicted shape": (rot_t, betas_p),
        "predicted pose, mean shape": (rot_p, mean),
        "true pose, mean shape": (rot_t, mean),
    }
    for k in true_prefixes:
        if 0 < k <= nb:
            prefix = mean.clone()
            prefix[:, :k] = betas_t[:, :k]
            rows[f"predicted pose, true betas[:{k}]"] = (rot_p, prefix)
    edges = mesh_edges(torch.as_tensor(head.body_model.faces))
    out = {}
    for name, (rot, betas) in rows.items():
        errors = []
        for start in range(0, len(cache), batch_size):
            sl = slice(start, start + batch_size)
            verts = head.pose_body(rot[sl], betas[sl]).verts_rel
            errors.append(edge_length_error(verts.double(), cache.verts_rel[sl].double(), edges))
        out[name] = float(torch.cat(errors).nanmean())
    return out


def r2_per_coefficient(pred: Tensor, true: Tensor) -> list[float]:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of each column of ``pred`` (N, K)
    against ``true`` (N, K), in float64 (1: exact; 0: no better than ``true``'s own mean)."""
    pred, true = pred.double(), true.double()
    resid = ((pred - true) ** 2).sum(0)
    total = ((true - true.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return (1.0 - resid / total).tolist()


def head_shape_r2(head: BodyHead, cache: HeadCache) -> list[float]:
    """R^2 of the head's own predicted shape coefficients on the cached frames."""
    betas_p, _ = predict_cached(head, cache)
    nb = min(betas_p.shape[1], cache.betas.shape[1])
    return r2_per_coefficient(betas_p[:, :nb], cache.betas[:, :nb])


def pooled_features(cache: HeadCache) -> Tensor:
    """(N, 2C + 1) float64: the mesh tokens' mean and max over the queries and
    ``log(crop_side_m / 2 m)`` (the crop's metric scale, as the head reads it)."""
    tokens = cache.tokens.double()
    scale = torch.log(cache.crop_side_m.double() / 2.0)[:, None]
    return torch.cat([tokens.mean(1), tokens.amax(1), scale], dim=1)


def linear_shape_probe(train: HeadCache, val: HeadCache, ridge: float = 100.0) -> dict:
    """Ridge regression from `pooled_features` to the shape coefficients.

    Features are standardised with the train frames' statistics; the weights solve
    ``(X^T X + ridge I) W = X^T (y - mean y)`` in float64.

    Returns:
        ``{"r2": [per coefficient, val], "l1": mean |error| on val, "l1_mean_shape": the same
        for predicting the train mean, "betas": Tensor (N_val, NB) the probe's val output}``.
    """
    x_train, x_val = pooled_features(train), pooled_features(val)
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_val = (x_train - mu) / sd, (x_val - mu) / sd
    nb = min(train.betas.shape[1], val.betas.shape[1])
    y_train, y_val = train.betas[:, :nb].double(), val.betas[:, :nb].double()
    y_mean = y_train.mean(0)
    gram = x_train.T @ x_train + ridge * torch.eye(x_train.shape[1], dtype=torch.float64)
    weights = torch.linalg.solve(gram, x_train.T @ (y_train - y_mean))
    pred = x_val @ weights + y_mean
    return {
        "r2": r2_per_coefficient(pred, y_val),
        "l1": float((pred - y_val).abs().mean()),
        "l1_mean_shape": float((y_mean - y_val).abs().mean()),
        "betas": pred.float(),
    }
