"""Train/eval mode switching shared by the models, the engine and the evaluators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put a module in eval mode and restore each submodule's previous mode on exit.

    ``predict`` implementations may switch modes themselves; restoring per submodule keeps
    e.g. a frozen sub-network that was deliberately left in eval mode as it was. Gradients
    are untouched: write ``with eval_mode(m), torch.no_grad():`` for inference.

    Args:
        module: The module (its submodules included).

    Yields:
        ``module``.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training
