"""Builds the license-free, SMPL-format neutral body as a dict of numpy arrays.

Steps: implicit body from designed primitives -> marching cubes -> quadric decimation to
SMPL's 6890 vertices / 13776 faces (`surface`); skinning weights diffused from the
primitive each vertex came from (`skinning`); convex joint regressor reproducing the
designed rest joints (`sahmr.body.regressor`); semantic shape space (`shape_space`);
landmark vertices for the 21 extra joints smplx adds for SMPL.

The model has NO pose-corrective blend shapes: ``posedirs`` is all zeros (shape
(6890, 3, 207), as smplx expects), so posing is plain linear blend skinning.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import trimesh

from sahmr.body.license_free import shape_space, skeleton, skinning, surface
from sahmr.body.regressor import fit_convex_regressor, regressor_residual

logger = logging.getLogger(__name__)

FORMAT_VERSION = "smpl-1"
BUILDER_VERSION = "sahmr-license-free-1.0"
NUM_POSE_BASIS = 207  # 23 joints x 9 rotation-matrix entries, SMPL's posedirs width

BUILDER_NOTES = (
    "License-free SMPL-format neutral body built by sahmr.body.license_free. "
    "posedirs are all zeros: no pose-corrective blend shapes (pure linear blend skinning). "
    "shapedirs / shape_std are orthonormal semantic directions (see shape_names); "
    "J_rest are the designed joints, J_regressor reproduces them within 1 mm."
)

#: Extra landmark names in smplx's order (`smplx.vertex_ids.vertex_ids['smplh']`).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear", "rthumb", "rindex", "rmiddle", "rring", "rpinky",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip

# Designed landmark points on the left/midline (m); the nearest vertex is taken.
_LANDMARK_LEFT = {
    "nose": (0.0, 0.425, 0.14),
    "eye": (0.032, 0.455, 0.11),
    "ear": (0.095, 0.43, 0.005),
    "thumb": (0.81, 0.205, 0.08),
    "index": (0.91, 0.217, 0.0),
    "middle": (0.91, 0.217, -0.022),
    "ring": (0.91, 0.217, -0.044),
    "pinky": (0.91, 0.217, -0.066),
    "BigToe": (0.085, -1.15, 0.20),
    "SmallToe": (0.145, -1.15, 0.18),
    "Heel": (0.09, -1.165, -0.09),
}


def landmark_points() -> np.ndarray:
    """Designed landmark points in `LANDMARK_NAMES` order, shape (21, 3), metres."""
    pts = []
    for name in LANDMARK_NAMES:
        if name == "nose":
            pts.append(_LANDMARK_LEFT["nose"])
            continue
        if name[0] in "lr" and name[1:] in _LANDMARK_LEFT:
            side, key = name[0], name[1:]
        else:
            side, key = name[0].lower(), name[1:]
        p = np.array(_LANDMARK_LEFT[key])
        pts.append(p if side == "l" else skeleton.mirror_x(p))
    return np.array(pts, dtype=np.float64)


def _nearest_distinct(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest vertex to each point, in order, never reusing a vertex (int64, (N,))."""
    d = np.linalg.norm(vertices[None] - points[:, None], axis=-1)
    ids = np.zeros(len(points), dtype=np.int64)
    for i in range(len(points)):
        ids[i] = np.argmin(d[i])
        d[:, ids[i]] = np.inf
    return ids


def _joint_axes(joints: np.ndarray) -> np.ndarray:
    """Unit axis per joint (normal of its regressor cross-section), shape (24, 3)."""
    seg = shape_space.bone_segments(joints)
    axes = seg[:, 1] - seg[:, 0]
    for name in ("left_hip", "right_hip", "pelvis", "spine1", "spine2", "spine3", "neck",
                 "head"):
        j = skeleton.joint_index(name)
        if name in ("left_hip", "right_hip"):
            continue
        axes[j] = (0.0, 1.0, 0.0)
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def regressor_candidates(
    vertices: np.ndarray, joints: np.ndarray, slab: float = 0.02, scale: float = 1.0
) -> list[np.ndarray]:
    """Vertices around each joint's cross-section: a slab normal to the bone, near the joint.

    Args:
        vertices: Array of shape (V, 3), rest vertices (m).
        joints: Array of shape (24, 3), rest joints (m).
        slab: Half thickness of the slab (m).
        scale: Multiplier of the search radius.

    Returns:
        List of 24 int64 index arrays.
    """
    axes = _joint_axes(joints)
    torso = {"pelvis", "spine1", "spine2", "spine3", "left_hip", "right_hip"}
    out = []
    for j, name in enumerate(skeleton.JOINT_NAMES):
        rel = vertices - joints[j]
        radius = (0.22 if name in torso else 0.12) * scale
        keep = (np.abs(rel @ axes[j]) < slab) & (np.linalg.norm(rel, axis=1) < radius)
        out.append(np.flatnonzero(keep))
    return out


def fit_joint_regressor(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Convex J_regressor (24, V) reproducing ``joints`` from cross-section vertices."""
    regressor = np.zeros((len(joints), len(vertices)))
    for slab, scale in ((0.015, 1.0), (0.03, 1.5), (0.06, 2.0)):
        cands = regressor_candidates(vertices, joints, slab, scale)
        fit = fit_convex_regressor(vertices, joints, candidates=cands, ridge=1e-6)
        res = regressor_residual(fit, vertices, joints)
        todo = np.flatnonzero(~(regressor.sum(axis=1) > 0))
        for j in todo:
            if res[j] < 5e-4 or scale == 2.0:
                regressor[j] = fit[j]
        if regressor.sum(axis=1).min() > 0:
            break
    return regressor


def build_license_free_body(seed: int = 0) -> dict[str, np.ndarray]:
    """Builds the license-free neutral body.

    Args:
        seed: Seed of the (rarely needed) meshing retries; the build is deterministic
            for a given seed.

    Returns:
        Dict of numpy arrays with SMPL's keys (v_template (6890, 3), f (13776, 3),
        shapedirs (6890, 3, 10), posedirs (6890, 3, 207) zeros, J_regressor (24, 6890),
        weights (6890, 24), kintree_table (2, 24)) plus joint_names, J_rest (24, 3),
        J_shapedirs (24, 3, 10), landmark_names, landmark_vertex_ids (21,), shape_names,
        shape_std (10,), format_version, builder_version, builder_notes. All positions in
        metres, rest frame (y up, facing +z, left at +x).
    """
    t0 = time.perf_counter()
    joints = skeleton.rest_joints()
    prims = surface.body_primitives()
    verts, faces = surface.mesh_body(prims, seed=seed)
    labels = surface.primitive_labels(prims, verts)
    weights = skinning.diffuse_weights(labels, faces, skeleton.NUM_JOINTS)
    j_regressor = fit_joint_regressor(verts, joints)
    shapedirs, shape_std, j_shapedirs = shape_space.build_shape_space(verts, weights, joints)
    landmark_ids = _nearest_distinct(verts, landmark_points())
    volume = trimesh.Trimesh(verts, faces, process=False).volume
    logger.info("built license-free body: V=%d F=%d volume=%.4f m^3 in %.1f s", len(verts),
                len(faces), volume, time.perf_counter() - t0)
    return {
        "v_template": verts,
        "f": faces.astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((len(verts), 3, NUM_POSE_BASIS)),
        "J_regressor": j_regressor,
        "weights": weights,
        "kintree_table": skeleton.kintree_table(),
        "joint_names": np.array(skeleton.JOINT_NAMES),
        "J_rest": joints,
        "J_shapedirs": j_shapedirs,
        "landmark_names": np.array(LANDMARK_NAMES),
        "landmark_vertex_ids": landmark_ids,
        "shape_names": np.array(shape_space.SHAPE_NAMES),
        "shape_std": shape_std,
        "format_version": np.array(FORMAT_VERSION),
        "builder_version": np.array(BUILDER_VERSION),
        "builder_notes": np.array(BUILDER_NOTES),
    }


#: Keys stored as float32 in the shipped asset (the rest stays float64 / int64 / str).
FLOAT32_KEYS = ("shapedirs", "posedirs", "weights", "J_shapedirs")


def to_storage(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Casts arrays to their storage dtypes (float32 where precision does not matter)."""
    return {k: (v.astype(np.float32) if k in FLOAT32_KEYS else v) for k, v in arrays.items()}


def smpl_pickle_dict(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plain dict of numpy arrays with SMPL's keys, for ``SMPL_NEUTRAL.pkl``."""
    keys = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
            "kintree_table", "J_rest", "joint_names", "landmark_names",
            "landmark_vertex_ids", "shape_names", "shape_std", "builder_notes")
    return {k: np.asarray(arrays[k]) for k in keys}


def landmark_vertex_ids(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """The ``vertex_ids`` dict smplx takes for its extra joints, from a built model."""
    return {str(n): int(i) for n, i in zip(arrays["landmark_names"],
                                           arrays["landmark_vertex_ids"])}
