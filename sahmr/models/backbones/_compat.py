"""The one place that makes torchvision (and timm, which imports it) importable everywhere.

PyPI's torchvision wheels are CUDA builds. Next to a CPU-only torch (the team's CPU machines),
``import torchvision`` fails with "operator torchvision::nms does not exist": its compiled
operators cannot load, and its fake-tensor registrations for ``nms``/``qnms`` then refer to
operators that were never declared. Declaring those two schemas (no kernels) lets the import
finish; models and transforms work, the detection ops (nms, roi_align...) and image I/O do not.
Nothing in sahmr uses those. On machines where torchvision loads normally this does nothing.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: torch.library.Library | None = None


def _declare_missing_ops() -> None:
    global _LIBRARY
    if _LIBRARY is not None:
        return
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _LIBRARY.define(schema)
    logger.info("torchvision's compiled ops are unavailable; declared %d op schemas", len(_SCHEMAS))


def import_torchvision() -> ModuleType:
    """Import torchvision, declaring its missing operator schemas when its C++ ops cannot load.

    Returns:
        The torchvision module.
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _declare_missing_ops()
    return importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    """Import timm after making torchvision importable (timm imports it)."""
    import_torchvision()
    return importlib.import_module("timm")
