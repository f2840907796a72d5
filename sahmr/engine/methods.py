"""What the engine needs from a method and its loss: duck-typed protocols, no class checks.

A *method* is an ``nn.Module`` whose ``forward(inputs, targets=None)`` returns an output
dataclass (targets only for teacher forcing / masking while training). Body methods also have
``predict(inputs) -> BodyPrediction`` (eval mode, no targets); methods with their own scores
(e.g. RCNet's root error and contact counts) have ``metrics(output, targets)`` returning
``name -> (sum, count)`` so sums can be reduced over batches and processes. A *loss* is an
``nn.Module`` with ``forward(output, targets) -> LossOutput``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from sahmr.losses.base import LossOutput
from sahmr.models.inputs import BodyPrediction, FrameInputs, FrameTargets

MetricSums = Mapping[str, tuple[float | Tensor, float | Tensor]]
"""``name -> (sum, count)``: a mean is ``sum / count`` after summing over batches and ranks."""


@runtime_checkable
class Method(Protocol):
    """Any trainable method: one forward pass from inputs (and optional targets)."""

    def __call__(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> Any:
        """Output dataclass of the method."""
        ...


@runtime_checkable
class BodyMethod(Protocol):
    """A method that predicts bodies."""

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        """Camera-frame bodies, eval mode, no targets."""
        ...


@runtime_checkable
class MetricsMethod(Protocol):
    """A method that scores its own output."""

    def metrics(self, output: Any, targets: FrameTargets) -> MetricSums:
        """``name -> (sum, count)`` for one batch."""
        ...


class Loss(Protocol):
    """A loss module."""

    def __call__(self, output: Any, targets: FrameTargets) -> LossOutput:
        """Weighted total and named terms."""
        ...


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or the model)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def can_predict(method: nn.Module) -> bool:
    """Whether the (unwrapped) method has a callable ``predict``."""
    return callable(getattr(unwrap(method), "predict", None))


def has_metrics(method: nn.Module) -> bool:
    """Whether the (unwrapped) method has a callable ``metrics``."""
    return callable(getattr(unwrap(method), "metrics", None))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put a module in eval mode and restore each submodule's previous mode on exit.

    ``predict`` implementations may switch modes themselves; restoring per submodule keeps
    e.g. a frozen sub-network that was deliberately left in eval mode as it was.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


def split_metric_sums(sums: MetricSums) -> dict[str, tuple[Tensor, Tensor]]:
    """Validated ``name -> (sum, count)`` as float64 tensors of equal shape.

    Raises:
        ValueError: An entry that is not a ``(sum, count)`` pair of matching shapes.
    """
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for name, value in sums.items():
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(f"metric {name!r} must be a (sum, count) pair, got {type(value)}")
        total = torch.as_tensor(value[0], dtype=torch.float64).detach().cpu()
        count = torch.as_tensor(value[1], dtype=torch.float64).detach().cpu()
        if count.ndim == 0 and total.ndim > 0:
            count = count.expand_as(total)
        if total.shape != count.shape:
            raise ValueError(f"metric {name!r}: sum {total.shape} and count {count.shape} differ")
        out[name] = (total, count)
    return out
