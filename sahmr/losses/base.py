"""The common return type of every loss module."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class LossOutput:
    """A weighted total loss and its named, already weighted terms.

    Attributes:
        total: Scalar tensor to back-propagate.
        terms: Named scalar tensors (weighted) that sum to `total`; logged per step.
    """

    total: Tensor
    terms: dict[str, Tensor]
