"""Read a vertex map between body topologies (e.g. SMPL-X -> SMPL deformation transfer).

The reader lives in `sahmr.body.smplx_to_smpl` (datasets use it too); this module keeps the
evaluator's import path.

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

from sahmr.body.smplx_to_smpl import load_vertex_map

__all__ = ["load_vertex_map"]
