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


def quantize_state(
    state: Mapping[str, Tensor], *, min_numel: int = DEFAULT_MIN_NUMEL
) -> dict[str, dict[str, Tensor]]:
    """Split a state dict into float16 tensors and int8 weights.

    Args:
        state: Name -> Tensor.
        min_numel: Smallest floating tensor (2+ dimensions) stored as int8.

    Returns:
        ``{"model": ..., "model_int8": ..., "model_int8_scale": ...}`` (see the module doc).
    """
    plain: dict[str, Tensor] = {}
    q8: dict[str, Tensor] = {}
    scales: dict[str, Tensor] = {}
    for name, value in state.items():
        if value.is_floating_point() and value.dim() >= 2 and value.numel() >= min_numel:
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
