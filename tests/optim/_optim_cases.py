"""Shared helpers of the optimisation tests (imported by module name, like tests/models')."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def shipped_body():
    """The shipped license-free body, built once per test session."""
    from sahmr.body import BodyModel

    return BodyModel()
