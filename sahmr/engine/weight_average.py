"""An exponential moving average of a network's weights (``trainer.ema_decay``).

After every optimiser step ``avg <- decay * avg + (1 - decay) * current`` for every
floating-point entry of the network's state dict (parameters and BatchNorm statistics alike);
integer entries (BatchNorm's ``num_batches_tracked``) are copied. The average starts at the
weights the run starts from, so a fine-tune from a good checkpoint (``init.weights``) begins
by validating exactly those weights and then moves away from them only as fast as
``1 - decay`` lets it: a step of ``lr`` noise in every weight is averaged over about
``1 / (1 - decay)`` steps (e.g. 0.998: 500) instead of being validated and exported as is.

The trainer validates, saves as ``model`` and exports the averaged weights; the weights the
optimiser moves travel beside them in ``last.pt`` (``model_trained``) so that a resumed run
continues both (`sahmr.engine.trainer.Trainer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class WeightAverage:
    """The running average of ``module``'s state (a copy, on the module's devices).

    Args:
        module: The network (unwrapped: not DDP); its current state starts the average.
        decay: The weight of the old average per step, in [0, 1) (0: the last weights).
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.avg: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One step: float entries move ``1 - decay`` of the way to ``module``'s, others are
        copied."""
        state = module.state_dict()
        if state.keys() != self.avg.keys():
            raise KeyError("the module's state no longer matches the average's entries")
        avg, cur = [], []
        for k, v in state.items():
            if v.is_floating_point():
                avg.append(self.avg[k])
                cur.append(v.detach().to(self.avg[k].dtype))
            else:
                self.avg[k].copy_(v)
        if avg:
            torch._foreach_lerp_(avg, cur, 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged state (the tensors themselves: copy before changing them)."""
        return self.avg

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Replace the average (e.g. from a checkpoint); the entries must match."""
        if state.keys() != self.avg.keys():
            missing = sorted(set(self.avg) - set(state))[:3]
            extra = sorted(set(state) - set(self.avg))[:3]
            raise KeyError(f"averaged state does not match the network: missing {missing}, "
                           f"unexpected {extra}")  # fmt: skip
        for k, v in state.items():
            self.avg[k].copy_(v.to(self.avg[k].dtype))

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """``module`` holds the averaged weights inside the block and its own again after it
        (copied in place: parameters keep their identity, so optimisers and compiled
        submodules are untouched)."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.avg)
        try:
            yield
        finally:
            module.load_state_dict(own)
