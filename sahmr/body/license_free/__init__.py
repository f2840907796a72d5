"""License-free, SMPL-format neutral body, built reproducibly by code.

The body ships as ``sahmr/body/assets/license_free_neutral.npz`` (written by
``tools/build_body_model.py``) with SMPL's keys, loadable by smplx. It has no
pose-corrective blend shapes: ``posedirs`` is all zeros.
"""

from sahmr.body.license_free.build import (
    BUILDER_VERSION,
    FORMAT_VERSION,
    LANDMARK_NAMES,
    build_license_free_body,
    landmark_vertex_ids,
    smpl_pickle_dict,
    to_storage,
)

__all__ = [
    "BUILDER_VERSION",
    "FORMAT_VERSION",
    "LANDMARK_NAMES",
    "build_license_free_body",
    "landmark_vertex_ids",
    "smpl_pickle_dict",
    "to_storage",
]
