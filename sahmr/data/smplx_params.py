"""SMPL-X parameter dicts as shipped by PROX (PROXD fits) and RICH (bodies/), and moving them.

Both datasets store one SMPL-X fit per frame as a dict of numpy arrays with a leading batch
dimension of 1 (``betas`` (1, 10), ``global_orient`` (1, 3), ``body_pose`` (1, 63) axis-angle
for SMPL-X's 21 body joints, ``transl`` (1, 3), hand poses as 12 PCA coefficients, ``jaw_pose``,
``leye_pose``, ``reye_pose`` (1, 3), ``expression`` (1, 10)). `clean_smplx_params` squeezes
them to float32 1-D arrays. SMPL-X parameters cannot be used as SMPL parameters (different
shape space and joints); converting needs the official SMPL-X -> SMPL model-transfer assets,
which this project does not have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sahmr.data.sample import RootJointFn, rest_root_joint, rigid_transform_body_params

logger = logging.getLogger(__name__)

SMPLX_BODY_POSE_DIM = 63
"""SMPL-X body pose: 21 body joints x 3 axis-angle components."""
VPOSER_LATENT_DIM = 32
"""Size of the VPoser v1 latent code that older SMPLify-X/PROX fits store as ``body_pose``."""


def clean_smplx_params(raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Squeezes a raw SMPL-X parameter dict into float32 1-D arrays (leading batch 1 removed).

    Keeps every numeric array entry (camera parameters included). A ``body_pose`` of size 32
    is a VPoser latent code, not axis-angle: it is renamed ``vposer_embedding`` (decoding it
    needs the VPoser network) unless a decoded ``pose_embedding`` pair is present.

    Args:
        raw: Mapping of name -> array-like, as unpickled.

    Returns:
        Dict name -> float32 array; batch-1 leading dimensions dropped, vectors flattened.

    Raises:
        ValueError: If ``betas``, ``global_orient`` or ``transl`` is missing or mis-sized.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        arr = np.asarray(value)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            logger.debug("skipping non-numeric SMPL-X entry %r", key)
            continue
        arr = arr.astype(np.float32)
        while arr.ndim > 1 and arr.shape[0] == 1:
            arr = arr[0]
        out[str(key)] = arr
    for key, size in (("global_orient", 3), ("transl", 3)):
        if key not in out or out[key].size != size:
            got = None if key not in out else out[key].shape
            raise ValueError(f"SMPL-X params need {key!r} of size {size}, got {got}")
        out[key] = out[key].reshape(size)
    if "betas" not in out:
        raise ValueError(f"SMPL-X params need 'betas'; keys: {sorted(out)}")
    pose = out.get("body_pose")
    if pose is not None and pose.size == VPOSER_LATENT_DIM:
        out["vposer_embedding"] = out.pop("body_pose").reshape(-1)
        logger.warning(
            "SMPL-X body_pose has %d values: a VPoser latent code, not axis-angle; kept as "
            "'vposer_embedding' (decoding needs VPoser)",
            VPOSER_LATENT_DIM,
        )
    elif pose is not None and pose.size != SMPLX_BODY_POSE_DIM:
        raise ValueError(
            f"SMPL-X body_pose must have {SMPLX_BODY_POSE_DIM} (axis-angle) or "
            f"{VPOSER_LATENT_DIM} (VPoser) values, got {pose.size}"
        )
    return out


def transform_smplx_params(
    params: Mapping[str, np.ndarray], T: np.ndarray, root_joint_fn: RootJointFn
) -> dict[str, np.ndarray]:
    """Rewrites ``global_orient`` and ``transl`` so the body is moved by the rigid ``T``.

    Args:
        params: Cleaned SMPL-X params (`clean_smplx_params`) in the source frame.
        T: (4, 4) rigid transform source -> target frame.
        root_joint_fn: betas (NB,) -> rest-pose pelvis (3,) of the SMPL-X model used for the
            fit (gender matters), e.g. `RootJointFromModelFile`.

    Returns:
        A new dict: the same entries with ``global_orient`` and ``transl`` in the target frame.
    """
    root = np.asarray(root_joint_fn(params["betas"]), dtype=np.float64).reshape(3)
    orient, transl = rigid_transform_body_params(T, params["global_orient"], params["transl"], root)
    out = dict(params)
    out["global_orient"] = orient.astype(np.float32)
    out["transl"] = transl.astype(np.float32)
    return out


class RootJointFromModelFile:
    """Rest-pose root joint from an SMPL/SMPL-X ``.npz`` model file (e.g. SMPLX_MALE.npz).

    Reads only ``v_template``, ``shapedirs`` and ``J_regressor`` with ``allow_pickle=False``.
    The file is the user's licensed copy; nothing is shipped.

    Args:
        path: Path of the ``.npz`` model file.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise ValueError(f"expected an .npz model file (no pickles), got {path}")
        with np.load(path, allow_pickle=False) as npz:
            self.v_template = np.asarray(npz["v_template"], dtype=np.float64)
            self.shapedirs = np.asarray(npz["shapedirs"], dtype=np.float64)
            self.J_regressor = np.asarray(npz["J_regressor"], dtype=np.float64)

    def __call__(self, betas: np.ndarray) -> np.ndarray:
        """Root joint (3,) in metres for ``betas`` (NB,)."""
        return rest_root_joint(self.v_template, self.shapedirs, self.J_regressor, betas)
