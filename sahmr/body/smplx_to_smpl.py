"""SMPL-X -> SMPL topology: the deformation-transfer vertex map, read once, applied in batch.

The SMPL-X team's model-transfer setup (``smplx2smpl_deftrafo_setup.pkl``, or the SMPL-H
variant ``smplx2smplh_deftrafo_setup.pkl`` that the official SA-HMR evaluation uses) holds a
fixed linear map ``mtx`` of shape (6890, V_src) with V_src >= 10475 (extra columns, when
present, are ignored: ``verts_smpl = mtx[:, :10475] @ verts_smplx``). Users point a config
path at their own copy:

* ``.npz`` written by ``scipy.sparse.save_npz`` (any sparse format), or an ``.npz`` holding a
  dense (V, V_src) array (key ``mtx``, ``matrix``, or the file's only array). Read with
  ``allow_pickle=False``. ``tools/convert_smplx_transfer.py`` writes such a file from the pickle.
* ``.pkl`` (the file as distributed) only with an explicit ``allow_pickle=True``, through the
  body files' restricted unpickler (`sahmr.body.io.restricted_pickle_load`: numpy arrays,
  scipy sparse matrices and builtin containers only).

`VertexTransfer` applies the map to a batch as one sparse product:
(B, V_src, 3) -> (B, V, 3). Per-vertex labels (e.g. 0/1 contact) map with the same rule the
evaluator uses: a target vertex is labelled when its transferred weight is >= 0.5.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_WEIGHT_THRESHOLD",
    "NUM_SMPLX_VERTICES",
    "VertexTransfer",
    "load_vertex_map",
    "save_vertex_map",
]

NUM_SMPLX_VERTICES = 10475
"""Vertices of the SMPL-X mesh (the columns the official evaluation keeps)."""
LABEL_WEIGHT_THRESHOLD = 0.5
"""A transferred 0/1 label counts as set when its weight reaches this value."""

_MATRIX_KEYS = ("mtx", "matrix")
_SPARSE_NPZ_KEYS = {"format", "shape"}


def _from_npz(path: Path) -> Any:
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        if _SPARSE_NPZ_KEYS <= files:
            return sp.load_npz(path).tocsr()
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
    from sahmr.body.io import restricted_pickle_load, to_plain_array

    with path.open("rb") as fh:
        obj = restricted_pickle_load(fh)
    if isinstance(obj, dict):
        key = next((k for k in _MATRIX_KEYS if k in obj), None)
        if key is None:
            raise ValueError(f"{path}: no 'mtx' entry; keys {sorted(map(str, obj))}")
        obj = obj[key]
    if sp.issparse(obj):
        return sp.csr_matrix(obj)
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
                "to .npz (tools/convert_smplx_transfer.py) or opt in with allow_pickle "
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


def save_vertex_map(matrix: Any, path: str | Path) -> Path:
    """Write a vertex map as a plain ``scipy.sparse.save_npz`` file (no pickle inside).

    Args:
        matrix: (V_target, V_src) dense array or scipy sparse matrix.
        path: Output ``.npz`` path.

    Returns:
        The path written.
    """
    path = Path(path)
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    csr.eliminate_zeros()
    sp.save_npz(path, csr, compressed=True)
    return path


class VertexTransfer:
    """A fixed linear vertex map between topologies, applied as a sparse product.

    Args:
        matrix: (V, V_map) dense array, scipy sparse matrix or torch tensor. Only the first
            ``num_source_vertices`` columns are used.
        num_source_vertices: Vertices of the source mesh (default: all columns).

    Attributes:
        num_target_vertices: V.
        num_source_vertices: V_src.
    """

    def __init__(self, matrix: Any, *, num_source_vertices: int | None = None) -> None:
        if isinstance(matrix, Tensor):
            matrix = matrix.to_dense() if matrix.is_sparse else matrix
            matrix = matrix.detach().cpu().numpy()
        csr = sp.csr_matrix(matrix, dtype=np.float64)
        if num_source_vertices is not None:
            if csr.shape[1] < num_source_vertices:
                raise ValueError(
                    f"the vertex map has {csr.shape[1]} columns; the source mesh has "
                    f"{num_source_vertices} vertices"
                )
            csr = csr[:, :num_source_vertices]
        csr.eliminate_zeros()
        self.csr = csr.tocsr()
        self.num_target_vertices, self.num_source_vertices = (int(s) for s in csr.shape)
        coo = csr.tocoo()
        self._indices = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
        self._values = torch.from_numpy(coo.data.astype(np.float64))
        self._cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        allow_pickle: bool = False,
        num_target_vertices: int | None = None,
        num_source_vertices: int | None = None,
    ) -> VertexTransfer:
        """Reads a map with `load_vertex_map` (same arguments)."""
        matrix = load_vertex_map(
            path, allow_pickle=allow_pickle, num_target_vertices=num_target_vertices
        )
        return cls(matrix, num_source_vertices=num_source_vertices)

    def _sparse(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = (
                torch.sparse_coo_tensor(
                    self._indices,
                    self._values.to(dtype),
                    (self.num_target_vertices, self.num_source_vertices),
                    check_invariants=True,
                )
                .coalesce()
                .to(device)
            )
        return self._cache[key]

    def __call__(self, vertices: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Maps source-topology vertices (or any per-vertex features) to the target topology.

        Args:
            vertices: (B, V_src, C) or (V_src, C) tensor or array (e.g. metres, any frame:
                the map is linear with rows summing to 1 for deformation transfer, so it
                commutes with rigid moves).

        Returns:
            (B, V, C) or (V, C), the input's type (numpy in, numpy out), dtype kept.
        """
        if isinstance(vertices, np.ndarray):
            flat = vertices.reshape(-1, *vertices.shape[-2:])
            self._check(flat.shape[1])
            out = np.stack([self.csr @ v.astype(np.float64) for v in flat]).astype(
                vertices.dtype if np.issubdtype(vertices.dtype, np.floating) else np.float64
            )
            return out.reshape(*vertices.shape[:-2], self.num_target_vertices, -1)
        x = vertices if vertices.ndim == 3 else vertices.unsqueeze(0)
        self._check(x.shape[1])
        b, _, c = x.shape
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mat = self._sparse(dtype, x.device)
        # One product for the whole batch: (V, V_src) @ (V_src, B * C).
        stacked = x.to(dtype).permute(1, 0, 2).reshape(self.num_source_vertices, b * c)
        out = torch.sparse.mm(mat, stacked).reshape(self.num_target_vertices, b, c)
        out = out.permute(1, 0, 2)
        return out if vertices.ndim == 3 else out[0]

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """Maps 0/1 per-vertex labels: set where the transferred weight >= 0.5.

        Args:
            labels: (V_src,) 0/1 (or bool) labels.

        Returns:
            (V,) bool labels in the target topology.
        """
        labels = np.asarray(labels).reshape(-1)
        self._check(labels.shape[0])
        return np.asarray(self.csr @ (labels > 0).astype(np.float64)) >= LABEL_WEIGHT_THRESHOLD

    def _check(self, n: int) -> None:
        if n != self.num_source_vertices:
            raise ValueError(
                f"the vertex map takes {self.num_source_vertices} source vertices; got {n}"
            )
