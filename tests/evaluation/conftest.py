"""Fixtures of the evaluation tests: the license-free body and a body at rest on a floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def body_model():
    from sahmr.body import BodyModel

    return BodyModel()


@pytest.fixture(scope="session")
def rest_vertices(body_model) -> np.ndarray:
    """The rest body standing on the floor with its lowest vertex at z = 0.10 m (z up)."""
    with torch.no_grad():
        v = body_model().vertices[0].double().numpy()
    # smplx's rest body is y-up: rotate +90 deg about x so y -> z.
    v = v @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T
    v -= np.array([v[:, 0].mean(), v[:, 1].mean(), v[:, 2].min() - 0.10])
    return v
