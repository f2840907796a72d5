"""Skinning weights of the license-free body (linear blend skinning, SMPL convention).

Each vertex starts fully bound to the joint of the primitive it was built from (the joint
at the proximal end of its bone, as in SMPL: thigh vertices follow ``left_hip``). The
one-hot weights are then diffused over the mesh's edge graph (repeated neighbour
averaging), which blends neighbouring bones smoothly over a few centimetres around each
joint, and finally truncated to the `MAX_INFLUENCES` largest weights and renormalised.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Maximum number of joints influencing one vertex.
MAX_INFLUENCES = 4

#: Default number of neighbour-averaging iterations of the diffusion.
DEFAULT_ITERATIONS = 12


def vertex_adjacency(num_vertices: int, faces: np.ndarray) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency matrix of a triangle mesh.

    Args:
        num_vertices: V.
        faces: Int array of shape (F, 3).

    Returns:
        Sparse (V, V) matrix with 1 where two vertices share an edge.
    """
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0)
    edges = np.concatenate([edges, edges[:, ::-1]], axis=0)
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                        shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0
    return adj


def diffuse_weights(
    labels: np.ndarray,
    faces: np.ndarray,
    num_joints: int,
    iterations: int = DEFAULT_ITERATIONS,
    max_influences: int = MAX_INFLUENCES,
) -> np.ndarray:
    """Smooth skinning weights from hard per-vertex joint labels.

    Args:
        labels: Int array of shape (V,), joint of each vertex.
        faces: Int array of shape (F, 3).
        num_joints: J.
        iterations: Neighbour-averaging iterations (each averages a vertex with its
            one-ring, the vertex counted once).
        max_influences: Number of non-zero weights kept per vertex.

    Returns:
        Array of shape (V, J), float64, rows summing to one with at most
        ``max_influences`` non-zeros.
    """
    num_v = len(labels)
    weights = np.zeros((num_v, num_joints))
    weights[np.arange(num_v), labels] = 1.0
    step = vertex_adjacency(num_v, faces) + sp.identity(num_v, format="csr")
    step = sp.diags(1.0 / np.asarray(step.sum(axis=1)).ravel()) @ step
    for _ in range(iterations):
        weights = step @ weights
    # keep the largest influences (ties broken by joint index, deterministic)
    order = np.argsort(-weights, axis=1, kind="stable")
    drop = order[:, max_influences:]
    np.put_along_axis(weights, drop, 0.0, axis=1)
    weights[weights < 1e-6] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)
