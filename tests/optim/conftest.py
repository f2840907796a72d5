"""Shared fixtures of the optimisation tests: one thread for small tensor ops."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops run faster (and far steadier on a shared 2-core machine) on 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
