"""The trainer's optimiser parts: AdamW parameter groups (weight decay and per-submodule LR
factors), frozen submodules and the warm-up + cosine LR schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

T = TypeVar("T")


class SubmodulePathError(ValueError):
    """A trainer setting names a submodule path the method lacks, or one without what the
    setting needs (``lr_multipliers``, ``grad_clip_groups``, ``frozen_batchnorm``,
    ``frozen_parameters``): a bad input, which tools/train.py reports in one line."""


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``.

    An object (not a lambda) so `LambdaLR.state_dict` stores its plain numbers.
    """

    def __init__(self, total_steps: int, warmup: int = 0, floor: float = 0.0) -> None:
        self.total_steps = int(max(1, total_steps))
        self.warmup = int(max(0, warmup))
        self.floor = float(floor)

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total_steps - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def under_path(name: str, path: str) -> bool:
    """Whether the dotted name ``name`` lies under the submodule path ``path`` (``"a.b"``
    holds ``a.b`` and ``a.b.c``, not ``a.bc``)."""
    return name == path or name.startswith(path + ".")


def longest_path_value(name: str, values: Mapping[str, T]) -> T | None:
    """The value of the longest submodule path of ``values`` that holds ``name`` (None when
    none does)."""
    best, best_len = None, -1
    for path, value in values.items():
        if under_path(name, path) and len(path) > best_len:
            best, best_len = value, len(path)
    return best


def lr_factor(name: str, multipliers: dict[str, float]) -> float:
    """The LR factor of parameter ``name``: the longest submodule path of ``multipliers``
    that contains it (1.0 when none does)."""
    factor = longest_path_value(name, multipliers)
    return 1.0 if factor is None else factor


def freeze_parameters(method: nn.Module, paths: Sequence[str]) -> int:
    """Turn off the gradients of every parameter under the submodules ``paths``
    (`TrainerConfig.frozen_parameters`): they keep their values, and the optimiser never
    sees them.

    Returns:
        The number of parameter entries frozen.

    Raises:
        SubmodulePathError: If a path holds no parameter.
    """
    frozen = 0
    named = list(method.named_parameters())
    for path in paths:
        params = [p for name, p in named if under_path(name, path)]
        if not params:
            raise SubmodulePathError(f"trainer.frozen_parameters: no parameter under {path!r}")
        for p in params:
            p.requires_grad_(False)
        frozen += sum(p.numel() for p in params)
    return frozen


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    params: list[nn.Parameter] | None = None,
    *,
    lr: float | None = None,
    lr_multipliers: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: decay on >= 2-D weights, none on biases and norm parameters, each split
    further by LR factor when ``lr_multipliers`` is given.

    Args:
        model: The module (parameters are ordered by name).
        weight_decay: Decay of the decayed groups.
        params: Only these parameters of ``model`` (None: every trainable one).
        lr: Base learning rate (needed with ``lr_multipliers``; groups then carry ``lr``).
        lr_multipliers: ``{submodule path: factor}`` (`lr_factor`).

    Raises:
        SubmodulePathError: If a multiplier's path matches no trainable parameter.
    """
    multipliers = dict(lr_multipliers or {})
    if multipliers and lr is None:
        raise ValueError("lr_multipliers need the base lr")
    keep = None if params is None else {id(p) for p in params}
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    used: set[str] = set()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad or (keep is not None and id(p) not in keep):
            continue
        factor = lr_factor(name, multipliers)
        used.update(k for k in multipliers if under_path(name, k))
        buckets.setdefault((factor, p.ndim >= 2), []).append(p)
    unused = sorted(set(multipliers) - used)
    if unused:
        raise SubmodulePathError(
            f"trainer.lr_multipliers: no trainable parameters under {unused}"
        )
    groups = []
    for factor in sorted({f for f, _ in buckets}):
        for decayed in (True, False):
            ps = buckets.get((factor, decayed))
            if not ps and not (decayed and factor == 1.0):
                continue
            group: dict[str, Any] = {"params": ps or [], "weight_decay": weight_decay
                                     if decayed else 0.0}  # fmt: skip
            if multipliers:
                group["lr"] = float(lr) * factor
            groups.append(group)
    if not groups:
        groups = [{"params": [], "weight_decay": weight_decay}]
    return groups


def clip_groups(
    method: nn.Module, params: list[nn.Parameter], paths: Sequence[str]
) -> list[list[nn.Parameter]]:
    """``params`` split by submodule for separate gradient clipping
    (`TrainerConfig.grad_clip_groups`): one list per path (its parameters, in ``params``
    order), then one of the rest; empty lists dropped. No paths: one group.

    Raises:
        SubmodulePathError: If a path names no parameter of ``params``.
    """
    if not paths:
        return [list(params)]
    group_of: dict[int, int] = {}
    for name, p in method.named_parameters():
        for k, path in enumerate(paths):
            if name == path or name.startswith(path + "."):
                group_of[id(p)] = k
                break
    groups: list[list[nn.Parameter]] = [[] for _ in range(len(paths) + 1)]
    for p in params:
        groups[group_of.get(id(p), len(paths))].append(p)
    empty = [path for path, g in zip(paths, groups) if not g]
    if empty:
        raise SubmodulePathError(
            f"trainer.grad_clip_groups: no trainable parameters under {empty}"
        )
    return [g for g in groups if g]


def freeze_batchnorm(method: nn.Module, paths: Sequence[str]) -> int:
    """Put every BatchNorm layer under the submodules ``paths`` in eval mode
    (`TrainerConfig.frozen_batchnorm`): the forward normalises with the running statistics
    and leaves them as they are; the affine weights keep their gradients. Call it after each
    ``method.train()``.

    Returns:
        The number of BatchNorm layers frozen.

    Raises:
        SubmodulePathError: If a path names no submodule, or a submodule without BatchNorm
            layers.
    """
    frozen = 0
    for path in paths:
        try:
            module = method.get_submodule(path)
        except AttributeError:
            raise SubmodulePathError(f"trainer.frozen_batchnorm: no submodule {path!r}") from None
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise SubmodulePathError(f"trainer.frozen_batchnorm: {path!r} has no BatchNorm layer")
        for m in norms:
            m.eval()
        frozen += len(norms)
    return frozen
