"""Read a vertex map between body topologies (e.g. SMPL-X -> SMPL deformation transfer).

The official SA-HMR evaluation maps SMPL-X ground-truth meshes (10,475 vertices) onto the
SMPL topology (6,890) with a fixed linear map, the ``mtx`` of the SMPL-X team's
deformation-transfer setup (``smplx2smpl_deftrafo_setup.pkl`` / ``smplx2smplh_...``):
``verts_smpl = mtx[:, :10475] @ verts_smplx``. Users point the evaluator at their own copy:

* ``.npz`` written by ``scipy.sparse.save_npz`` (any sparse format), or an ``.npz`` holding a
  dense (V, V_src) array (key ``mtx``, ``matrix``, or the file's only array). Read with
  ``allow_pickle=False``.
* ``.pkl`` (the file as distributed) only with ``allow_pickle=True``, through the body
  files' restricted unpickler (`sahmr.body.io.restricted_pickle_load`: numpy arrays, scipy
  sparse matrices and builtin containers only; the dataset unpickler of
  `sahmr.data.safe_pickle` refuses scipy matrices, which this file holds).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = ["load_vertex_map"]

_MATRIX_KEYS = ("mtx", "matrix")
_SPARSE_NPZ_KEYS = {"format", "shape"}


def _from_npz(path: Path) -> Any:
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        if _SPARSE_NPZ_KEYS <= files:
            return sp.load_npz(path)
        key = next((k for k in _MATRIX_KEYS if k in files), None)
        if key is None and len(files) == 1:
            key = next(iter(files))
        if key is None:
            raise ValueError(
                f"{path}: no matrix: expected a scipy.sparse.save_npz file, or a key "
                f"{' / '.join(_MATRIX_KEYS)} or a single array; has {sorted(files)}"
            )
        return np.asarray(data[key], np.float64)


def _from_pickle(path: Path) -> Any:
    from sahmr.body.io import restricted_pickle_load

    with path.open("rb") as fh:
        obj = restricted_pickle_load(fh)
    if isinstance(obj, dict):
        key = next((k for k in _MATRIX_KEYS if k in obj), None)
        if key is None:
            raise ValueError(f"{path}: no 'mtx' entry; keys {sorted(map(str, obj))}")
        obj = obj[key]
    if sp.issparse(obj):
        return sp.csr_matrix(obj)
    from sahmr.body.io import to_plain_array

    return np.asarray(to_plain_array(obj), np.float64)


def load_vertex_map(
    path: str | Path, *, allow_pickle: bool = False, num_target_vertices: int | None = None
) -> Any:
    """Read a (V_target, V_source) vertex map.

    Args:
        path: ``.npz`` (sparse or dense) or, with ``allow_pickle``, ``.pkl``.
        allow_pickle: Opt in to reading a pickle with the restricted unpickler.
        num_target_vertices: When given, the map must have this many rows.

    Returns:
        A scipy CSR matrix (sparse inputs) or a dense float64 array, shape (V_target, V_src).

    Raises:
        FileNotFoundError: No such file.
        PermissionError: A pickle without ``allow_pickle``.
        ValueError: Unreadable content or a wrong shape (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vertex map not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        out = _from_npz(path)
    elif suffix in (".pkl", ".pickle"):
        if not allow_pickle:
            raise PermissionError(
                f"refusing to unpickle the vertex map {path}: pickles can run code. Convert it "
                "to .npz (scipy.sparse.save_npz) or opt in with allow_pickle "
                "(--allow-pickle), which reads it with a restricted unpickler"
            )
        out = _from_pickle(path)
    else:
        raise ValueError(f"{path}: a vertex map must be .npz (or .pkl with allow_pickle)")
    if out.ndim != 2:
        raise ValueError(f"{path}: the vertex map must be 2-D; got shape {out.shape}")
    if num_target_vertices is not None and out.shape[0] != num_target_vertices:
        raise ValueError(
            f"{path}: the vertex map has {out.shape[0]} rows; the body has "
            f"{num_target_vertices} vertices"
        )
    logger.info("vertex map %s: %d x %d", path, *out.shape)
    return out
