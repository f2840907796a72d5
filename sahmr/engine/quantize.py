"""Weight-only int8 storage of checkpoints (shipping size), expanded to floats on load.

A shipped checkpoint has to travel with the GPU bundle (<= 20 MB). Weight matrices and
convolution kernels (2+ dimensions, at least ``min_numel`` entries) are stored as int8 with one
float16 scale per output channel (symmetric: ``w ~= q * scale``, ``scale = max|w| / 127`` over
the channel); everything else stays float16. `expand_int8` turns such a checkpoint back into an
ordinary float32 state dict, so the rest of the code never sees the codec.

Checkpoint keys: ``model`` (float16 / integer tensors), ``model_int8`` (name -> int8 tensor),
``model_int8_scale`` (name -> float16 tensor of shape (C_out,)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sahmr.engine.optimizers import longest_path_value, under_path

INT8_MAX = 127
DEFAULT_MIN_NUMEL = 4096
"""Smallest weight stored as int8 (smaller ones cost little and are kept in float16)."""


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8 quantisation.

    Args:
        weight: Floating Tensor (C_out, ...).

    Returns:
        ``(q int8 Tensor of the same shape, scale float32 Tensor (C_out,))`` with
        ``weight ~= q * scale`` (broadcast over the trailing dimensions).
    """
    w = weight.detach().float()
    amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    q = torch.round(w / scale.view(-1, *([1] * (w.dim() - 1)))).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale


def dequantize_weight(q: Tensor, scale: Tensor) -> Tensor:
    """Float32 Tensor ``q * scale`` (scale per output channel, see `quantize_weight`)."""
    return q.float() * scale.float().view(-1, *([1] * (q.dim() - 1)))


PRECISIONS = ("int8", "fp16")


def quantize_state(
    state: Mapping[str, Tensor],
    *,
    min_numel: int = DEFAULT_MIN_NUMEL,
    precisions: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Split a state dict into float16 tensors and int8 weights.

    Int8 keeps about 1/127 of a channel's largest weight: a fine-tune at a small learning
    rate moves most weights by less than that, so re-quantising it drops those moves and adds
    fresh rounding error wherever a channel's scale changed (docs/results.md, run 30).
    ``precisions`` keeps such parts in float16.

    Args:
        state: Name -> Tensor.
        min_numel: Smallest floating tensor (2+ dimensions) stored as int8.
        precisions: ``{submodule path: "int8" | "fp16"}``; the longest path holding a tensor
            decides (`sahmr.engine.optimizers.longest_path_value`), tensors under none
            follow the size rule (int8).

    Returns:
        ``{"model": ..., "model_int8": ..., "model_int8_scale": ...}`` (see the module doc).

    Raises:
        ValueError: An unknown precision, or a path that holds no tensor of ``state``.
    """
    precisions = dict(precisions or {})
    bad = {k: v for k, v in precisions.items() if v not in PRECISIONS}
    if bad:
        raise ValueError(f"precisions must be one of {PRECISIONS}, got {bad}")
    unused = [p for p in precisions if not any(under_path(n, p) for n in state)]
    if unused:
        raise ValueError(f"no tensor under {unused}")
    plain: dict[str, Tensor] = {}
    q8: dict[str, Tensor] = {}
    scales: dict[str, Tensor] = {}
    for name, value in state.items():
        big = value.is_floating_point() and value.dim() >= 2 and value.numel() >= min_numel
        if big and longest_path_value(name, precisions) != "fp16":
            q8[name], scale = quantize_weight(value)
            scales[name] = scale.half()
        elif value.is_floating_point():
            plain[name] = value.detach().half()
        else:
            plain[name] = value.detach()
    return {"model": plain, "model_int8": q8, "model_int8_scale": scales}


def expand_int8(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint with int8 weights expanded into ``ckpt["model"]`` (float32); a
    checkpoint without them is returned unchanged.

    Raises:
        ValueError: A quantised weight without its scale, or one whose scale does not match
            its output channels.
    """
    q8 = ckpt.get("model_int8")
    if not q8:
        return ckpt
    scales = ckpt.get("model_int8_scale") or {}
    model = dict(ckpt["model"])
    for name, q in q8.items():
        scale = scales.get(name)
        if scale is None or scale.dim() != 1 or scale.shape[0] != q.shape[0]:
            raise ValueError(f"int8 weight {name!r} has no matching per-channel scale")
        model[name] = dequantize_weight(q, scale)
    out = {k: v for k, v in ckpt.items() if k not in ("model_int8", "model_int8_scale")}
    out["model"] = model
    return out
