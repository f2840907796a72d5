"""Body model: smplx's SMPL layer over SMPL-format arrays, plus derived topology assets.

`BodyModel` loads any SMPL-format file (default: the shipped license-free body, found by
`license_free_model_path`); `BodyTopology` holds what is derived from its mesh (3-level
hierarchy, H36M regressor, contact regions), cached on disk by content hash.

Names are imported lazily, so ``sahmr.body.io`` (used by ``tools/convert_smpl.py``) does not
pull in torch and smplx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sahmr.body.constants import (
        CONTACT_REGION_NAMES,
        H36M_JOINT_NAMES,
        H36M_TO_J14,
        LANDMARK_NAMES,
        SMPL_JOINT_NAMES,
    )
    from sahmr.body.io import load_body_model_data, save_body_model_npz
    from sahmr.body.model import BodyModel, BodyOutput, license_free_model_path
    from sahmr.body.topology import BodyTopology

_EXPORTS = {
    "CONTACT_REGION_NAMES": "sahmr.body.constants",
    "H36M_JOINT_NAMES": "sahmr.body.constants",
    "H36M_TO_J14": "sahmr.body.constants",
    "LANDMARK_NAMES": "sahmr.body.constants",
    "SMPL_JOINT_NAMES": "sahmr.body.constants",
    "load_body_model_data": "sahmr.body.io",
    "save_body_model_npz": "sahmr.body.io",
    "BodyModel": "sahmr.body.model",
    "BodyOutput": "sahmr.body.model",
    "license_free_model_path": "sahmr.body.model",
    "BodyTopology": "sahmr.body.topology",
}

__all__ = [
    "CONTACT_REGION_NAMES",
    "H36M_JOINT_NAMES",
    "H36M_TO_J14",
    "LANDMARK_NAMES",
    "SMPL_JOINT_NAMES",
    "BodyModel",
    "BodyOutput",
    "BodyTopology",
    "license_free_model_path",
    "load_body_model_data",
    "save_body_model_npz",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
