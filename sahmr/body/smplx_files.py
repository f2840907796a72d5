"""The user's SMPL-X model files (``SMPLX_{NEUTRAL,MALE,FEMALE}.npz`` / ``.pkl``), found and read
without trusting pickles, for ``smplx.SMPLX``.

``smplx.SMPLX`` reads its file itself: ``np.load(..., allow_pickle=True)`` for ``.npz`` (every
member is loaded, object members are unpickled) and ``pickle.load`` for ``.pkl``. The official
``.npz`` files hold object members (dicts such as ``joint2num`` / ``part2num``) next to the
arrays, so handing them over as they are would unpickle whatever a file holds.
`plain_smplx_model_file` therefore gives smplx either the user's file itself, when it holds
plain arrays only, or a plain copy of its arrays (written once to a cache folder): the ``.npz``
read with ``allow_pickle=False`` (object members dropped), a ``.pkl`` only with
``allow_pickle=True`` and through `sahmr.body.io.RestrictedUnpickler` (arrays, scipy sparse
matrices, builtin containers).

Keys smplx needs (V = 10,475 vertices, J = 55 joints, L landmarks):

| key                        | shape                | meaning                                    |
| -------------------------- | -------------------- | ------------------------------------------ |
| v_template                 | (V, 3)               | rest template, metres                      |
| f                          | (F, 3)               | triangles                                  |
| shapedirs                  | (V, 3, >= 20)        | shape, then expression blend shapes (10+10 |
|                            |                      | in v1.0 files, 300+100 in v1.1)            |
| posedirs                   | (V, 3, (J - 1) * 9)  | pose blend shapes                          |
| J_regressor                | (J, V)               | joint regressor (dense or scipy sparse)    |
| weights                    | (V, J)               | skinning weights                           |
| kintree_table              | (2, J)               | row 0: parents                             |
| hands_components{l,r}      | (>= 12, 45)          | hand pose PCA basis (15 joints x 3)        |
| hands_mean{l,r}            | (45,)                | mean hand pose (axis-angle)                |
| lmk_faces_idx              | (L,)                 | face of each static face landmark          |
| lmk_bary_coords            | (L, 3)               | its barycentric coordinates                |

``dynamic_lmk_faces_idx`` / ``dynamic_lmk_bary_coords`` (face contour) are kept when present.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from sahmr.atomic_write import atomic_save_npz
from sahmr.body.io import restricted_pickle_load, to_plain_array
from sahmr.body.smplx_to_smpl import NUM_SMPLX_VERTICES

logger = logging.getLogger(__name__)

NUM_SMPLX_JOINTS = 55
"""SMPL-X joints: root + 21 body + jaw + 2 eyes + 2 x 15 finger joints (``smplx.SMPLX``)."""
NUM_HAND_POSE = 45
"""Axis-angle size of one hand: 15 joints x 3."""
SMPLX_REQUIRED_KEYS: tuple[str, ...] = (
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
    "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
    "lmk_bary_coords",
)  # fmt: skip
SMPLX_OPTIONAL_KEYS: tuple[str, ...] = ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
GENDERS: tuple[str, ...] = ("neutral", "male", "female")


def default_cache_dir() -> Path:
    """``$SAHMR_CACHE_DIR/smplx`` if the variable is set, else ``~/.cache/sahmr/smplx``."""
    root = os.environ.get("SAHMR_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "smplx"
    return Path.home() / ".cache" / "sahmr" / "smplx"


def find_smplx_model_file(path: str | Path, gender: str, *, allow_pickle: bool = False) -> Path:
    """The model file of a gender: ``path`` itself if it is a file, else in the folder.

    A folder is searched as smplx lays models out: ``<path>/SMPLX_<GENDER>.npz``, then
    ``<path>/smplx/SMPLX_<GENDER>.npz``; ``.pkl`` files are taken only with ``allow_pickle``.

    Args:
        path: A model file (used for every gender) or a folder.
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        allow_pickle: Also accept ``SMPLX_<GENDER>.pkl``.

    Returns:
        The file.

    Raises:
        FileNotFoundError: Naming the places looked at (and a ``.pkl`` found without opt-in).
        ValueError: On an unknown gender.
    """
    path = Path(path)
    if path.is_file():
        return path
    if gender not in GENDERS:
        raise ValueError(f"unknown SMPL-X gender {gender!r}; expected one of {GENDERS}")
    if not path.is_dir():
        raise FileNotFoundError(f"SMPL-X model folder or file not found: {path}")
    name = f"SMPLX_{gender.upper()}"
    folders = (path, path / "smplx")
    suffixes = (".npz", ".pkl") if allow_pickle else (".npz",)
    for folder in folders:
        for suffix in suffixes:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    tried = [str(f / f"{name}{s}") for f in folders for s in suffixes]
    pickled = [f / f"{name}.pkl" for f in folders if (f / f"{name}.pkl").is_file()]
    hint = (
        f"; {pickled[0]} exists: opt in with allow_pickle=true (data.targets.allow_pickle) to "
        "read it with a restricted unpickler"
        if pickled and not allow_pickle
        else ""
    )
    raise FileNotFoundError(f"no SMPL-X model for gender {gender!r}: tried {tried}{hint}")


def _npz_members(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Plain members of an ``.npz`` (read without pickle) and the names of the others."""
    plain: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            try:
                plain[key] = npz[key]
            except ValueError:  # an object member: would need unpickling
                skipped.append(key)
    return plain, skipped


def validate_smplx_model_data(data: dict[str, Any], *, source: str = "model") -> dict[str, Any]:
    """Checks an SMPL-X mapping and returns the keys smplx uses as plain numpy arrays.

    Args:
        data: Key -> array-like (scipy sparse and chumpy stand-ins allowed).
        source: Name used in error messages.

    Returns:
        Dict of the required (and present optional) keys as numpy arrays.

    Raises:
        ValueError: Naming the missing key or the wrong shape.
    """
    missing = [k for k in SMPLX_REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{source} is not an SMPL-X model: missing {missing}")
    out = {}
    for key in (*SMPLX_REQUIRED_KEYS, *(k for k in SMPLX_OPTIONAL_KEYS if k in data)):
        arr = to_plain_array(data[key])
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{source}: {key} is not numeric ({arr.dtype})")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ValueError(f"{source}: {key} holds NaN or infinite values")
        out[key] = arr
    v, j = NUM_SMPLX_VERTICES, NUM_SMPLX_JOINTS
    want = {
        "v_template": (v, 3),
        "posedirs": (v, 3, (j - 1) * 9),
        "J_regressor": (j, v),
        "weights": (v, j),
        "kintree_table": (2, j),
        "hands_meanl": (NUM_HAND_POSE,),
        "hands_meanr": (NUM_HAND_POSE,),
    }
    for key, shape in want.items():
        if out[key].shape != shape:
            raise ValueError(f"{source}: {key} must be {shape}, got {out[key].shape}")
    f, sd = out["f"], out["shapedirs"]
    if f.ndim != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= v:
        raise ValueError(f"{source}: f must be (F, 3) indices of the {v} vertices")
    if sd.ndim != 3 or sd.shape[:2] != (v, 3) or sd.shape[2] < 20:
        raise ValueError(f"{source}: shapedirs must be ({v}, 3, >= 20), got {sd.shape}")
    for side in "lr":
        comps = out[f"hands_components{side}"]
        if comps.ndim != 2 or comps.shape[1] != NUM_HAND_POSE:
            raise ValueError(f"{source}: hands_components{side} must be (K, 45), got {comps.shape}")
    lmk, bary = out["lmk_faces_idx"], out["lmk_bary_coords"]
    if bary.shape != (*lmk.shape, 3) or (lmk.size and (lmk.min() < 0 or lmk.max() >= len(f))):
        raise ValueError(f"{source}: lmk_faces_idx {lmk.shape} / lmk_bary_coords {bary.shape}")
    return out


def load_smplx_model_data(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Reads an SMPL-X model file as plain, validated arrays (no arbitrary unpickling).

    Args:
        path: ``SMPLX_<GENDER>.npz`` (object members are dropped) or ``.pkl`` (only with
            ``allow_pickle``, through the restricted unpickler).
        allow_pickle: Opt-in for ``.pkl`` files.

    Returns:
        `validate_smplx_model_data` of the file.

    Raises:
        PermissionError: For a ``.pkl`` without ``allow_pickle``.
        pickle.UnpicklingError: If the pickle holds anything but plain data.
        ValueError: On an unknown suffix or a file that is not an SMPL-X model.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw: Any = _npz_members(path)[0]
    elif suffix in (".pkl", ".pickle"):
        if not allow_pickle:
            raise PermissionError(
                f"refusing to unpickle {path}: pickles can run code. Use the .npz model "
                "(SMPLX_<GENDER>.npz from the same download) or opt in with allow_pickle=true "
                "(data.targets.allow_pickle) to read it with a restricted unpickler."
            )
        with path.open("rb") as fh:
            raw = restricted_pickle_load(fh)
        if not isinstance(raw, dict):
            raise ValueError(f"{path} holds a {type(raw).__name__}, expected a dict of arrays")
    else:
        raise ValueError(f"unsupported SMPL-X model file {path}: expected .npz or .pkl")
    return validate_smplx_model_data(raw, source=str(path))


def plain_smplx_model_file(
    path: str | Path,
    gender: str,
    *,
    allow_pickle: bool = False,
    cache_dir: str | Path | None = None,
) -> Path:
    """An ``.npz`` of the gender's model that smplx may read without unpickling anything.

    The user's ``.npz`` itself when every member is a plain array (checked, then read by
    smplx); otherwise (object members, or a ``.pkl``) a plain copy of the arrays smplx uses,
    written once to ``<cache_dir>/<key>/SMPLX_<GENDER>.npz`` (key: the source's path, size and
    modification time).

    Args:
        path: Model folder or file (`find_smplx_model_file`).
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        allow_pickle: Opt-in for ``.pkl`` models (restricted unpickler).
        cache_dir: Folder of plain copies (default `default_cache_dir`).

    Returns:
        The ``.npz`` to give ``smplx.SMPLX(model_path=..., ext="npz")``.
    """
    source = find_smplx_model_file(path, gender, allow_pickle=allow_pickle).resolve()
    if source.suffix.lower() == ".npz":
        plain, skipped = _npz_members(source)
        if not skipped:
            validate_smplx_model_data(plain, source=str(source))
            return source
        logger.info("%s holds object members %s: smplx gets a plain copy", source, skipped)
    stat = source.stat()
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    out = Path(cache_dir or default_cache_dir()) / key[:16] / f"SMPLX_{gender.upper()}.npz"
    if not out.is_file():
        data = load_smplx_model_data(source, allow_pickle=allow_pickle)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(out, data)
        logger.info("plain copy of %s written to %s", source, out)
    return out
