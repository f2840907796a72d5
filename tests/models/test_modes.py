"""sahmr.models.modes.eval_mode: the one eval-mode helper, against the three it replaced."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sahmr.models.modes import eval_mode


class _Frozen(nn.Module):
    """A network whose frozen part stays in eval mode (as SAHMR's RCNet, VIBE's backbone)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        self.frozen = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        self.frozen.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frozen(x))

    def train(self, mode: bool = True) -> _Frozen:
        super().train(mode)
        self.frozen.eval()
        return self


def _modes(m: nn.Module) -> dict[str, bool]:
    return {name: sub.training for name, sub in m.named_modules()}


def _old_top_level_restore(module: nn.Module):
    """The former models.metro.eval_mode: ``module.train(was_training)`` on exit."""
    was = module.training
    module.eval()
    return lambda: module.train(was)


@pytest.mark.parametrize("start_training", [True, False])
def test_restores_every_submodule(start_training):
    torch.manual_seed(0)
    net = _Frozen().train(start_training)
    before = _modes(net)
    with eval_mode(net) as inside:
        assert inside is net
        assert not any(_modes(net).values())
    assert _modes(net) == before
    # same end state as the top-level restore the models used (train() keeps the frozen part)
    restore = _old_top_level_restore(net)
    restore()
    assert _modes(net) == before


def test_restores_on_exception_and_leaves_gradients_alone():
    net = _Frozen().train()
    before = _modes(net)
    with pytest.raises(RuntimeError), eval_mode(net):
        assert torch.is_grad_enabled()
        raise RuntimeError
    assert _modes(net) == before


def test_same_outputs_as_plain_eval():
    torch.manual_seed(0)
    net = _Frozen().train()
    x = torch.randn(4, 2)
    with eval_mode(net), torch.no_grad():
        y = net(x)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(y, net(x), rtol=0, atol=0)
