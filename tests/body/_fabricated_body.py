"""A tiny SMPL-format body built in code for tests: capsules on a stick skeleton.

Frame as SMPL: x = the body's left, y up, z forward, metres. The surface is the iso-surface
of a smooth union of capsules (marching cubes on a 3 cm grid), decimated to a closed genus-0
mesh; skinning weights are nearest-bone (the bone's parent joint drives it); the joint
regressor averages the vertices near each joint (convex rows).
"""

from __future__ import annotations

import functools

import numpy as np

JOINTS = np.array(
    [
        [0.0, 0.95, 0.0], [0.09, 0.88, 0.0], [-0.09, 0.88, 0.0], [0.0, 1.05, -0.01],
        [0.10, 0.50, 0.01], [-0.10, 0.50, 0.01], [0.0, 1.18, 0.0], [0.10, 0.10, -0.02],
        [-0.10, 0.10, -0.02], [0.0, 1.27, 0.01], [0.11, 0.04, 0.10], [-0.11, 0.04, 0.10],
        [0.0, 1.45, -0.01], [0.07, 1.38, 0.0], [-0.07, 1.38, 0.0], [0.0, 1.56, 0.02],
        [0.18, 1.40, -0.01], [-0.18, 1.40, -0.01], [0.44, 1.40, -0.02], [-0.44, 1.40, -0.02],
        [0.68, 1.40, -0.01], [-0.68, 1.40, -0.01], [0.76, 1.40, -0.01], [-0.76, 1.40, -0.01],
    ]
)  # fmt: skip
PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
)
# leaf extensions (joint -> end point) for head, feet and hands
_LEAF_END = {15: [0.0, 1.66, 0.03], 10: [0.11, 0.04, 0.16], 11: [-0.11, 0.04, 0.16],
             22: [0.82, 1.40, -0.01], 23: [-0.82, 1.40, -0.01]}  # fmt: skip
_RADIUS = {0: 0.11, 1: 0.075, 2: 0.075, 3: 0.12, 4: 0.05, 5: 0.05, 6: 0.13, 7: 0.04, 8: 0.04,
           9: 0.09, 10: 0.035, 11: 0.035, 12: 0.05, 13: 0.06, 14: 0.06, 15: 0.09, 16: 0.05,
           17: 0.05, 18: 0.04, 19: 0.04, 20: 0.035, 21: 0.035, 22: 0.03, 23: 0.03}  # fmt: skip


def _segments() -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    segs = []
    for j in range(1, 24):
        p = PARENTS[j]
        segs.append((int(p), JOINTS[p], JOINTS[j], _RADIUS[p]))
    for j, end in _LEAF_END.items():
        segs.append((j, JOINTS[j], np.asarray(end), _RADIUS[j]))
    return segs


def _seg_dist(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((points - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


@functools.lru_cache(maxsize=1)
def _mesh() -> tuple[np.ndarray, np.ndarray]:
    import fast_simplification
    import trimesh
    from skimage.measure import marching_cubes

    step = 0.02
    lo, hi = np.array([-0.9, -0.05, -0.2]), np.array([0.9, 1.85, 0.25])
    axes = [np.arange(lo[i], hi[i], step) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    k = 0.02  # smooth-min blend width (m)
    acc = np.zeros(len(grid))
    for _, a, b, r in _segments():
        acc += np.exp(-(_seg_dist(grid, a, b) - r) / k)
    sdf = (-k * np.log(acc)).reshape([len(a) for a in axes])
    verts, faces, _, _ = marching_cubes(sdf, 0.0, spacing=(step,) * 3)
    verts += lo
    mesh = trimesh.Trimesh(verts, faces, process=True)
    pts, tris = fast_simplification.simplify(mesh.vertices, mesh.faces, target_count=2400)
    mesh = trimesh.Trimesh(pts, tris, process=True)
    assert mesh.is_watertight and mesh.euler_number == 2, mesh.euler_number
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64)


def make_fake_body(num_betas: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """SMPL-format arrays of a small capsule body (~1200 vertices), deterministic."""
    v, f = _mesh()
    num_v = len(v)
    segs = _segments()
    dist = np.stack([_seg_dist(v, a, b) for _, a, b, _ in segs], axis=1)
    owner = np.array([j for j, *_ in segs])[np.argmin(dist, axis=1)]
    weights = np.zeros((num_v, 24))
    weights[np.arange(num_v), owner] = 1.0
    jreg = np.zeros((24, num_v))
    for j in range(24):
        d = np.linalg.norm(v - JOINTS[j], axis=1)
        near = d <= d.min() * 1.6 + 1e-3
        jreg[j, near] = 1.0 / near.sum()
    rng = np.random.default_rng(seed)
    shapedirs = 0.01 * rng.standard_normal((num_v, 3, num_betas))
    shapedirs[..., 0] = 0.02 * (v - v.mean(axis=0))  # first beta: scale
    return {
        "v_template": v,
        "f": f,
        "shapedirs": shapedirs,
        "posedirs": 1e-3 * rng.standard_normal((num_v, 3, 207)),
        "J_regressor": jreg,
        "weights": weights,
        "kintree_table": np.stack([np.where(PARENTS < 0, 4294967295, PARENTS), np.arange(24)]),
    }
