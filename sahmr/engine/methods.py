"""What the engine needs from a method and its loss: duck-typed protocols, no class checks.

A *method* is an ``nn.Module`` whose ``forward(inputs, targets=None)`` returns an output
dataclass (targets only for teacher forcing / masking while training). Body methods also have
``predict(inputs) -> BodyPrediction`` (eval mode, no targets); methods with their own scores
(e.g. RCNet's root error and contact counts) have ``metrics(output, targets)`` returning
``name -> (sum, count)`` so sums can be reduced over batches and processes. A *loss* is an
``nn.Module`` with ``forward(output, targets) -> LossOutput``.

Optional hooks, found by duck typing (never by class):

* `AdversarialMethod` (HMR, VIBE): ``has_discriminator`` true -> after each main step the
  engine calls ``discriminator_step(output) -> LossOutput``, back-propagates its total and
  steps a second optimiser over ``discriminator_parameters()``;
* `GeneratorMethod`: ``generator_parameters()`` -> the main optimiser covers only those
  (otherwise every trainable parameter);
* `KeyedMethod` (SPIN): a ``forward`` taking a ``sample_keys`` keyword gets one key per input
  row (`sahmr.engine.data.Step.sample_keys`) in training.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from sahmr.models.modes import eval_mode as eval_mode  # the trainer's import
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, LossOutput

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


@runtime_checkable
class AdversarialMethod(Protocol):
    """A method with an adversarial prior trained by its own optimiser step."""

    @property
    def has_discriminator(self) -> bool:
        """Whether `discriminator_step` must run after each training step."""
        ...

    def discriminator_step(self, output: Any) -> LossOutput:
        """The discriminator's loss for one forward output (predictions detached)."""
        ...

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the discriminator (the second optimiser's)."""
        ...


@runtime_checkable
class GeneratorMethod(Protocol):
    """A method that names the parameters of its main optimiser."""

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every parameter the main loss trains (e.g. all but a discriminator's)."""
        ...


class KeyedMethod(Protocol):
    """A method whose training forward needs to know which dataset sample each row is."""

    def __call__(
        self, inputs: Any, targets: Any | None = None, *, sample_keys: list[str] | None = None
    ) -> Any:
        """Output dataclass; ``sample_keys`` holds one key per input row."""
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


def has_per_frame_metrics(method: nn.Module) -> bool:
    """Whether the (unwrapped) method has a callable ``per_frame_metrics`` (values per frame,
    ``name -> Tensor (B,)``, for medians and per-frame tables)."""
    return callable(getattr(unwrap(method), "per_frame_metrics", None))


def has_discriminator(method: nn.Module) -> bool:
    """Whether the (unwrapped) method has an adversarial prior to step (`AdversarialMethod`)."""
    model = unwrap(method)
    return bool(getattr(model, "has_discriminator", False)) and callable(
        getattr(model, "discriminator_step", None)
    )


def discriminator_parameters(method: nn.Module) -> list[nn.Parameter]:
    """Trainable discriminator parameters of an `AdversarialMethod` (empty otherwise)."""
    if not has_discriminator(method):
        return []
    return [p for p in unwrap(method).discriminator_parameters() if p.requires_grad]


def generator_parameters(method: nn.Module) -> list[nn.Parameter]:
    """The main optimiser's parameters: ``generator_parameters()`` when the method defines
    it (`GeneratorMethod`), else every parameter; always without the discriminator's and
    without frozen ones."""
    model = unwrap(method)
    named = getattr(model, "generator_parameters", None)
    params = list(named()) if callable(named) else list(model.parameters())
    skip = {id(p) for p in discriminator_parameters(model)}
    return [p for p in params if p.requires_grad and id(p) not in skip]


def wants_sample_keys(method: nn.Module) -> bool:
    """Whether the (unwrapped) method's ``forward`` takes a ``sample_keys`` keyword
    (`KeyedMethod`)."""
    try:
        params = inspect.signature(unwrap(method).forward).parameters
    except (TypeError, ValueError):
        return False
    return "sample_keys" in params


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
