"""Topology-dependent assets derived from whichever SMPL-format body is loaded.

Nothing here knows a vertex count: every array is computed from the model's own template,
faces, skinning weights and joint regressor, and cached on disk keyed by the model's content
hash and `TOPOLOGY_VERSION`.

Mesh hierarchy (METRO-style, levels 0 -> 1 -> 2)
    Level ``l + 1`` is a quadric decimation of level ``l`` (fast_simplification) to
    ``ceil(V_l / 4)`` vertices: for a closed triangle mesh ``F = 2 (V - chi)`` (``chi`` the
    Euler characteristic, 2 for a genus-0 body), so asking for ``2 (ceil(V_l / 4) - chi)``
    faces yields that vertex count exactly (6890 -> 1723 -> 431 for SMPL's topology).
    The decimation's collapse history is replayed to get the exact map from each fine vertex
    to the coarse vertex it was merged into (its *cluster*).

    * ``D_l`` (V_{l+1}, V_l): one 1 per row, at the cluster member nearest the decimated
      vertex (a selection, like METRO's assets); the coarse template is ``D_l @ template_l``.
    * ``U_l`` (V_l, V_{l+1}): barycentric weights of each fine rest vertex on its closest
      coarse triangle (clipped at 0, renormalised): rows are convex with <= 3 entries.

H36M-style regressor (17, V), convex rows fitted with
`sahmr.body.regressor.fit_convex_regressor` to targets defined on the rest model (betas 0).
Body axes come from the model's own joints: ``up`` = pelvis -> neck, ``left`` = right hip ->
left hip (orthogonalised), each snapped to the nearest coordinate axis when within ~18 degrees
of it (SMPL's frame: y up, x left), ``forward`` = left x up. ``J[i]`` is SMPL joint ``i``
regressed by the model's ``J_regressor``; ``H`` is the template's extent along ``up``.

| #  | name           | target                                                           |
| -- | -------------- | ---------------------------------------------------------------- |
| 0  | pelvis         | midpoint of J[left_hip] and J[right_hip]                         |
| 1  | right_hip      | J[right_hip]                                                     |
| 2  | right_knee     | J[right_knee]                                                    |
| 3  | right_ankle    | J[right_ankle]                                                   |
| 4  | left_hip       | J[left_hip]                                                      |
| 5  | left_knee      | J[left_knee]                                                     |
| 6  | left_ankle     | J[left_ankle]                                                    |
| 7  | spine          | midpoint of target 0 (pelvis) and target 8 (thorax)              |
| 8  | thorax         | J[neck]                                                          |
| 9  | neck_nose      | J[head] moved forward by half the distance to the front of the   |
|    |                | head surface (head-dominated vertices within 0.02 H of J[head]'s |
|    |                | height)                                                          |
| 10 | head_top       | J[head] moved up to the height of the highest head-dominated     |
|    |                | vertex (top of the head surface)                                 |
| 11 | left_shoulder  | J[left_shoulder]                                                 |
| 12 | left_elbow     | J[left_elbow]                                                    |
| 13 | left_wrist     | J[left_wrist]                                                    |
| 14 | right_shoulder | J[right_shoulder]                                                |
| 15 | right_elbow    | J[right_elbow]                                                   |
| 16 | right_wrist    | J[right_wrist]                                                   |

The 14-joint subset is rows `H36M_TO_J14` of the 17-joint regressor.

Contact regions (`CONTACT_REGION_NAMES`), per vertex of the rest template. ``dom(v)`` is the
joint with the largest skinning weight; normals are outward area-weighted vertex normals;
heights are measured along ``up``. Assigned in this order, so the regions are disjoint:

| label | region     | rule                                                                |
| ----- | ---------- | ------------------------------------------------------------------- |
| 1, 2  | left/right | dom in {ankle, foot} of that side, normal . up < -0.5 (facing down) |
|       | foot sole  | and height <= lowest vertex of that foot + 0.025 H                  |
| 3, 4  | left/right | dom in {wrist, hand} of that side and not more than 0.02 H behind  |
|       | hand       | the wrist joint along the elbow -> wrist direction                  |
| 6     | gluteus    | dom in {pelvis, hips}, normal . forward < -0.3 (facing backward),   |
|       |            | height between min(hip joints) - 0.08 H and J[spine1]               |
| 5     | back       | dom in {spine1, spine2, spine3}, normal . forward < -0.5            |
| 7     | thighs     | both upper legs, posterior/underside (the side that bears weight   |
|       |            | when sitting): dom in {hips, knees}, normal . forward < -0.3,       |
|       |            | height between J[knee] of that side and the gluteus lower bound     |

Coarse levels take the label of their down-sampling representative (`contact_labels`); the
majority label of the cluster members is available from `BodyTopology.contact_labels_majority`.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sahmr.atomic_write import atomic_save_npz
from sahmr.body.constants import (
    CONTACT_REGION_NAMES,
    H36M_JOINT_NAMES,
    H36M_TO_J14,
    SMPL_JOINT_INDEX,
)
from sahmr.body.io import content_hash, load_npz_restricted, to_plain_array

logger = logging.getLogger(__name__)

#: Bump when any derivation below changes; it is part of the cache key.
TOPOLOGY_VERSION = 1
#: Number of mesh levels (full, 1/4, 1/16).
NUM_LEVELS = 3
#: Vertex reduction factor between consecutive levels.
LEVEL_REDUCTION = 4

_J = SMPL_JOINT_INDEX


def default_cache_dir() -> Path:
    """``$SAHMR_CACHE_DIR/topology`` if the variable is set, else ``~/.cache/sahmr/topology``."""
    root = os.environ.get("SAHMR_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "topology"
    return Path.home() / ".cache" / "sahmr" / "topology"


# --------------------------------------------------------------------------------------------
# Geometry helpers


def body_axes(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit body axes from SMPL rest joints.

    Args:
        joints: Array of shape (24, 3), rest joints in the model frame (metres).

    Returns:
        ``(up, left, forward)`` unit vectors of shape (3,): pelvis -> neck, right hip -> left
        hip orthogonalised against ``up`` (each snapped to a coordinate axis when within
        ~18 degrees), and ``left x up``.
    """
    up = _snap_to_axis(joints[_J["neck"]] - joints[_J["pelvis"]])
    left = joints[_J["left_hip"]] - joints[_J["right_hip"]]
    left = _snap_to_axis(left - (left @ up) * up)
    forward = np.cross(left, up)
    return up, left, forward


def _snap_to_axis(direction: np.ndarray, min_cos: float = 0.95) -> np.ndarray:
    """Unit ``direction``, replaced by the nearest coordinate axis within ~18 degrees.

    SMPL-format bodies are modelled in SMPL's frame (y up, x left); the spine leans a few
    degrees forward, so pelvis -> neck is snapped to the frame's own vertical.
    """
    unit = direction / np.linalg.norm(direction)
    k = int(np.argmax(np.abs(unit)))
    if abs(unit[k]) >= min_cos:
        axis = np.zeros(3)
        axis[k] = np.sign(unit[k])
        return axis
    return unit


def outward_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, flipped if the mesh is wound inward.

    Args:
        vertices: Array of shape (V, 3).
        faces: Integer array of shape (F, 3).

    Returns:
        Array of shape (V, 3), unit normals (zero for unreferenced vertices).
    """
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # |n| = 2 * area
    signed_volume = np.einsum("ij,ij->", tri[:, 0], face_n) / 6.0
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    if signed_volume < 0:
        normals = -normals
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(norm, 1e-12)


def euler_characteristic(num_vertices: int, faces: np.ndarray) -> int:
    """``V - E + F`` of a triangle mesh (2 for a closed genus-0 surface)."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    num_edges = len(np.unique(edges, axis=0))
    return int(num_vertices - num_edges + len(faces))


def mesh_adjacency(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency of a triangle mesh, shape (V, V)."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = np.concatenate([e, e[:, ::-1]])
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices,) * 2)
    adj = adj.tocsr()
    adj.data[:] = 1.0
    return adj


# --------------------------------------------------------------------------------------------
# Mesh hierarchy


def decimate_level(
    vertices: np.ndarray, faces: np.ndarray, target_vertices: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadric decimation with the exact fine -> coarse vertex map.

    Args:
        vertices: Array of shape (Vf, 3), fine vertices (metres).
        faces: Integer array of shape (Ff, 3).
        target_vertices: Wanted coarse vertex count Vc.

    Returns:
        ``(coarse_faces (Fc, 3) int64, cluster (Vf,) int64, representative (Vc,) int64)``:
        ``cluster[i]`` is the coarse vertex fine vertex ``i`` was merged into and
        ``representative[c]`` the member of cluster ``c`` nearest the decimated position.
    """
    import fast_simplification

    chi = euler_characteristic(len(vertices), faces)
    target_faces = 2 * (target_vertices - chi)
    points = np.ascontiguousarray(vertices, dtype=np.float64)
    tris = np.ascontiguousarray(faces, dtype=np.int32)
    dec_points, dec_faces, collapses = fast_simplification.simplify(
        points, tris, target_count=target_faces, return_collapses=True
    )
    _, replay_faces, cluster = fast_simplification.replay_simplification(points, tris, collapses)
    cluster = np.asarray(cluster, dtype=np.int64)
    num_coarse = len(dec_points)
    if (
        cluster.min() < 0
        or cluster.max() >= num_coarse
        or len(np.unique(cluster)) != num_coarse
        or replay_faces.shape != dec_faces.shape
    ):
        raise RuntimeError("decimation replay does not match the decimated mesh")
    if num_coarse != target_vertices:
        logger.warning("decimation gave %d vertices, wanted %d", num_coarse, target_vertices)
    dist = np.linalg.norm(vertices - dec_points[cluster], axis=1)
    order = np.lexsort((dist, cluster))  # by cluster, nearest member first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    representative = np.empty(num_coarse, dtype=np.int64)
    representative[cluster[order][first]] = order[first]
    return np.asarray(dec_faces, dtype=np.int64), cluster, representative


def selection_matrix(representative: np.ndarray, num_fine: int) -> sp.csr_matrix:
    """Down-sampling matrix (Vc, Vf) with a single 1 per row at ``representative[c]``."""
    num_coarse = len(representative)
    return sp.csr_matrix(
        (np.ones(num_coarse), (np.arange(num_coarse), representative)),
        shape=(num_coarse, num_fine),
    )


def barycentric_upsampling_matrix(
    fine_vertices: np.ndarray, coarse_vertices: np.ndarray, coarse_faces: np.ndarray
) -> sp.csr_matrix:
    """Up-sampling matrix (Vf, Vc): barycentric weights on the closest coarse triangle.

    Args:
        fine_vertices: Array of shape (Vf, 3), fine rest vertices (metres).
        coarse_vertices: Array of shape (Vc, 3), coarse rest vertices, same frame.
        coarse_faces: Integer array of shape (Fc, 3) into ``coarse_vertices``.

    Returns:
        CSR matrix of shape (Vf, Vc) with convex rows (<= 3 non-zeros, clipped at 0).
    """
    import trimesh

    mesh = trimesh.Trimesh(coarse_vertices, coarse_faces, process=False)
    closest, _, tri_id = trimesh.proximity.closest_point(mesh, fine_vertices)
    corners = coarse_faces[tri_id]
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate coarse triangles
        bary = trimesh.triangles.points_to_barycentric(coarse_vertices[corners], closest)
    bary = np.clip(np.nan_to_num(bary, nan=1.0 / 3.0), 0.0, None)
    total = bary.sum(axis=1, keepdims=True)
    bary = np.where(total > 0, bary / np.maximum(total, 1e-12), 1.0 / 3.0)
    rows = np.repeat(np.arange(len(fine_vertices)), 3)
    up = sp.coo_matrix(
        (bary.ravel(), (rows, corners.ravel())), shape=(len(fine_vertices), len(coarse_vertices))
    ).tocsr()
    up.sum_duplicates()
    up.eliminate_zeros()
    return up


# --------------------------------------------------------------------------------------------
# Regressor and contact regions


def rest_joints(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """SMPL joints (24, 3) regressed from the rest template (betas 0), metres."""
    return np.asarray(data["J_regressor"], dtype=np.float64) @ np.asarray(
        data["v_template"], dtype=np.float64
    )


def h36m_targets(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rest-pose target positions (17, 3) of the H36M joints (see the module table).

    Args:
        data: SMPL-format arrays (``v_template``, ``J_regressor``, ``weights``).

    Returns:
        Array of shape (17, 3), metres, model frame.
    """
    v = np.asarray(data["v_template"], dtype=np.float64)
    joints = rest_joints(data)
    up, _, forward = body_axes(joints)
    height = np.ptp(v @ up)
    dominant = np.argmax(data["weights"], axis=1)
    head = joints[_J["head"]]
    head_v = v[dominant == _J["head"]]
    if len(head_v) == 0:  # no head-dominated vertex: fall back to vertices above the neck
        head_v = v[(v - joints[_J["neck"]]) @ up > 0]
    rel = head_v - head
    head_top = head + up * np.max(rel @ up)
    slab = np.abs(rel @ up) < 0.02 * height
    front = np.max(rel[slab] @ forward) if np.any(slab) else np.max(rel @ forward)
    neck_nose = head + forward * 0.5 * front
    pelvis = 0.5 * (joints[_J["left_hip"]] + joints[_J["right_hip"]])
    thorax = joints[_J["neck"]]
    named = {
        "pelvis": pelvis,
        "spine": 0.5 * (pelvis + thorax),
        "thorax": thorax,
        "neck_nose": neck_nose,
        "head_top": head_top,
    }
    targets = [named[name] if name in named else joints[_J[name]] for name in H36M_JOINT_NAMES]
    return np.stack(targets)


def _surrounding_candidates(vertices: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """Vertices around ``target``: the ``k`` nearest plus all within 2.5x the nearest distance.

    For a target inside a limb this spans the whole cross-section, so the target lies inside
    the convex hull of the candidates.
    """
    dist = np.linalg.norm(vertices - target, axis=1)
    order = np.argsort(dist, kind="stable")
    count = int(np.sum(dist <= 2.5 * max(dist[order[0]], 1e-6)))
    return order[: min(max(k, count), 400, len(order))]


def derive_h36m_regressor(data: Mapping[str, np.ndarray], k: int = 32) -> np.ndarray:
    """Fits the convex 17-joint regressor (17, V) to `h36m_targets` on the rest template.

    Args:
        data: SMPL-format arrays.
        k: Minimum support candidates per joint.

    Returns:
        Array of shape (17, V), float64, rows non-negative and summing to one.
    """
    from sahmr.body.regressor import fit_convex_regressor

    v = np.asarray(data["v_template"], dtype=np.float64)
    targets = h36m_targets(data)
    candidates = [_surrounding_candidates(v, t, k) for t in targets]
    return fit_convex_regressor(v, targets, candidates=candidates, k=k)


def derive_contact_labels(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-vertex contact region labels (V,) int64 on the rest template (module table).

    Args:
        data: SMPL-format arrays (``v_template``, ``f``, ``weights``, ``J_regressor``).

    Returns:
        Integer array of shape (V,), values index `CONTACT_REGION_NAMES`.
    """
    v = np.asarray(data["v_template"], dtype=np.float64)
    faces = np.asarray(data["f"], dtype=np.int64)
    joints = rest_joints(data)
    up, _, forward = body_axes(joints)
    h = v @ up
    height = np.ptp(h)
    n = outward_vertex_normals(v, faces)
    n_up, n_fwd = n @ up, n @ forward
    dom = np.argmax(data["weights"], axis=1)
    labels = np.zeros(len(v), dtype=np.int64)
    name_to_label = {name: i for i, name in enumerate(CONTACT_REGION_NAMES)}

    def assign(mask: np.ndarray, name: str) -> None:
        labels[mask & (labels == 0)] = name_to_label[name]

    for side in ("left", "right"):
        foot = np.isin(dom, [_J[f"{side}_ankle"], _J[f"{side}_foot"]])
        if np.any(foot):
            low = h[foot].min() + 0.025 * height
            assign(foot & (n_up < -0.5) & (h <= low), f"{side}_foot")
    for side in ("left", "right"):
        wrist, elbow = joints[_J[f"{side}_wrist"]], joints[_J[f"{side}_elbow"]]
        axis = (wrist - elbow) / np.linalg.norm(wrist - elbow)
        hand = np.isin(dom, [_J[f"{side}_wrist"], _J[f"{side}_hand"]])
        assign(hand & ((v - wrist) @ axis >= -0.02 * height), f"{side}_hand")
    hip_h = min(joints[_J["left_hip"]] @ up, joints[_J["right_hip"]] @ up)
    glute_low = hip_h - 0.08 * height
    waist = joints[_J["spine1"]] @ up
    pelvic = np.isin(dom, [_J["pelvis"], _J["left_hip"], _J["right_hip"]])
    assign(pelvic & (n_fwd < -0.3) & (h >= glute_low) & (h <= waist), "gluteus")
    spine = np.isin(dom, [_J["spine1"], _J["spine2"], _J["spine3"]])
    assign(spine & (n_fwd < -0.5), "back")
    for side in ("left", "right"):
        leg = np.isin(dom, [_J[f"{side}_hip"], _J[f"{side}_knee"]])
        knee_h = joints[_J[f"{side}_knee"]] @ up
        assign(leg & (n_fwd < -0.3) & (h > knee_h) & (h < glute_low), "thighs")
    return labels


# --------------------------------------------------------------------------------------------
# The topology object


@dataclass
class BodyTopology:
    """Topology assets of one body model, levels ``0`` (full) to ``NUM_LEVELS - 1``.

    Attributes:
        num_vertices: Vertex count per level, e.g. (6890, 1723, 431) for SMPL's mesh.
        faces: Per level, int64 array (F_l, 3); empty for coarse levels loaded from files
            that carry no faces.
        templates: Per level, rest template (V_l, 3) float64, metres, model frame.
        down: Per level transition ``l -> l + 1``, CSR (V_{l+1}, V_l) down-sampling.
        up: Per level transition ``l -> l + 1``, CSR (V_l, V_{l+1}) up-sampling.
        clusters: Per transition, int64 (V_l,): the level ``l + 1`` vertex each level ``l``
            vertex belongs to.
        j_regressor_h36m: Array (17, V_0) float64, the H36M-style joint regressor.
        contact_labels: Per level, int64 (V_l,) contact labels (`CONTACT_REGION_NAMES`).
        model_hash: Content hash of the model the assets belong to.
        source: ``"derived"`` or a description of the files used.
    """

    num_vertices: tuple[int, ...]
    faces: tuple[np.ndarray, ...]
    templates: tuple[np.ndarray, ...]
    down: tuple[sp.csr_matrix, ...]
    up: tuple[sp.csr_matrix, ...]
    clusters: tuple[np.ndarray, ...]
    j_regressor_h36m: np.ndarray
    contact_labels: tuple[np.ndarray, ...]
    model_hash: str = ""
    source: str = "derived"
    _torch_cache: dict[tuple[Any, ...], torch.Tensor] = field(
        default_factory=dict, repr=False, compare=False
    )

    # ---------------------------------------------------------------- construction

    @classmethod
    def derive(cls, data: Mapping[str, np.ndarray], model_hash: str | None = None) -> BodyTopology:
        """Computes every asset from the model arrays (no cache).

        Args:
            data: SMPL-format arrays (see `sahmr.body.io`).
            model_hash: The model's `content_hash`, computed if None.

        Returns:
            The derived topology.
        """
        start = time.perf_counter()
        template = np.asarray(data["v_template"], dtype=np.float64)
        faces = [np.asarray(data["f"], dtype=np.int64)]
        templates = [template]
        down, up, clusters = [], [], []
        for _ in range(NUM_LEVELS - 1):
            fine_v, fine_f = templates[-1], faces[-1]
            target = math.ceil(len(fine_v) / LEVEL_REDUCTION)
            coarse_f, cluster, rep = decimate_level(fine_v, fine_f, target)
            d = selection_matrix(rep, len(fine_v))
            coarse_v = d @ fine_v
            down.append(d)
            up.append(barycentric_upsampling_matrix(fine_v, coarse_v, coarse_f))
            clusters.append(cluster)
            faces.append(coarse_f)
            templates.append(coarse_v)
        labels0 = derive_contact_labels(data)
        topo = cls(
            num_vertices=tuple(len(t) for t in templates),
            faces=tuple(faces),
            templates=tuple(templates),
            down=tuple(down),
            up=tuple(up),
            clusters=tuple(clusters),
            j_regressor_h36m=derive_h36m_regressor(data),
            contact_labels=_labels_by_representative(labels0, down),
            model_hash=model_hash or content_hash(data),
        )
        logger.info(
            "derived body topology %s in %.2f s", topo.num_vertices, time.perf_counter() - start
        )
        return topo

    @classmethod
    def from_model(
        cls,
        data: Mapping[str, np.ndarray],
        *,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        model_hash: str | None = None,
    ) -> BodyTopology:
        """Loads the topology of a model from the cache, deriving and caching it if needed.

        Args:
            data: SMPL-format arrays.
            cache_dir: Cache folder; `default_cache_dir` if None.
            use_cache: If False, always derive and write nothing.
            model_hash: The model's `content_hash`, computed if None.

        Returns:
            The topology.
        """
        model_hash = model_hash or content_hash(data)
        if not use_cache:
            return cls.derive(data, model_hash)
        path = cache_path(model_hash, cache_dir)
        if path.is_file():
            try:
                topo = cls.load(path)
                if topo.model_hash != model_hash:
                    raise ValueError("cache file belongs to another model")
                logger.debug("read body topology from %s", path)
                return topo
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
                warnings.warn(
                    f"topology cache {path} is unreadable ({err}); rebuilding it",
                    RuntimeWarning,
                    stacklevel=2,
                )
                logger.warning("rebuilding corrupted topology cache %s: %s", path, err)
        topo = cls.derive(data, model_hash)
        try:
            topo.save(path)
        except OSError as err:  # read-only home etc.: the topology is still usable
            logger.warning("could not write topology cache %s: %s", path, err)
        return topo

    @classmethod
    def from_files(
        cls,
        data: Mapping[str, np.ndarray],
        *,
        mesh_downsampling: str | Path | None = None,
        j_regressor_h36m: str | Path | None = None,
        allow_pickle: bool = False,
        cache_dir: str | Path | None = None,
    ) -> BodyTopology:
        """Topology using official assets where given, derived (cached) assets elsewhere.

        Args:
            data: SMPL-format arrays of the model the files belong to.
            mesh_downsampling: METRO's ``mesh_downsampling.npz`` (object arrays ``A``, ``U``,
                ``D``: lists of scipy sparse matrices per level). Holds pickles, so it is read
                only with ``allow_pickle=True``, and then with a restricted unpickler.
            j_regressor_h36m: SPIN's ``J_regressor_h36m.npy``, a plain float array (17, V).
            allow_pickle: Opt-in for ``mesh_downsampling``.
            cache_dir: Cache folder for the derived parts.

        Returns:
            The topology; ``source`` names the files used. Coarse levels from a
            ``mesh_downsampling`` file have no faces (the file stores none).

        Raises:
            PermissionError: For ``mesh_downsampling`` without ``allow_pickle=True``.
            ValueError: If a file's layout or sizes do not fit the model.
        """
        topo = cls.from_model(data, cache_dir=cache_dir)
        sources = []
        num_v = int(np.asarray(data["v_template"]).shape[0])
        if mesh_downsampling is not None:
            down, up = load_mesh_downsampling(mesh_downsampling, allow_pickle=allow_pickle)
            if down[0].shape[1] != num_v:
                raise ValueError(
                    f"{mesh_downsampling}: D[0] has {down[0].shape[1]} columns, model has "
                    f"{num_v} vertices"
                )
            templates = [np.asarray(data["v_template"], dtype=np.float64)]
            clusters = []
            for d, u in zip(down, up):
                templates.append(np.asarray(d @ templates[-1]))
                clusters.append(np.asarray(u.argmax(axis=1)).ravel().astype(np.int64))
            labels = _labels_by_representative(topo.contact_labels[0], down)
            empty = np.zeros((0, 3), dtype=np.int64)
            topo = cls(
                num_vertices=tuple(len(t) for t in templates),
                faces=(topo.faces[0],) + (empty,) * len(down),
                templates=tuple(templates),
                down=tuple(down),
                up=tuple(up),
                clusters=tuple(clusters),
                j_regressor_h36m=topo.j_regressor_h36m,
                contact_labels=labels,
                model_hash=topo.model_hash,
            )
            sources.append(f"mesh_downsampling={mesh_downsampling}")
        if j_regressor_h36m is not None:
            reg = np.load(Path(j_regressor_h36m), allow_pickle=False)
            if reg.shape != (len(H36M_JOINT_NAMES), num_v):
                raise ValueError(
                    f"{j_regressor_h36m}: expected shape ({len(H36M_JOINT_NAMES)}, {num_v}), "
                    f"got {reg.shape}"
                )
            if not np.allclose(reg.sum(axis=1), 1.0, atol=1e-3):
                logger.warning("%s: rows do not sum to 1", j_regressor_h36m)
            topo.j_regressor_h36m = np.asarray(reg, dtype=np.float64)
            sources.append(f"j_regressor_h36m={j_regressor_h36m}")
        topo.source = ", ".join(sources) if sources else "derived"
        topo._torch_cache.clear()
        return topo

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Writes the topology as an ``.npz`` of plain arrays (atomically).

        Args:
            path: Output file; parent folders are created.

        Returns:
            The written path.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "version": np.asarray(TOPOLOGY_VERSION),
            "model_hash": np.asarray(self.model_hash),
            "source": np.asarray(self.source),
            "num_vertices": np.asarray(self.num_vertices, dtype=np.int64),
            "j_regressor_h36m": self.j_regressor_h36m,
        }
        for level in range(len(self.num_vertices)):
            arrays[f"faces_{level}"] = self.faces[level]
            arrays[f"template_{level}"] = self.templates[level]
            arrays[f"contact_labels_{level}"] = self.contact_labels[level]
        for level, (d, u, c) in enumerate(zip(self.down, self.up, self.clusters)):
            for name, mat in (("down", d), ("up", u)):
                mat = sp.csr_matrix(mat)
                arrays[f"{name}_{level}_data"] = mat.data
                arrays[f"{name}_{level}_indices"] = mat.indices.astype(np.int64)
                arrays[f"{name}_{level}_indptr"] = mat.indptr.astype(np.int64)
                arrays[f"{name}_{level}_shape"] = np.asarray(mat.shape, dtype=np.int64)
            arrays[f"cluster_{level}"] = c
        return atomic_save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> BodyTopology:
        """Reads a file written by `save` (``allow_pickle=False``).

        Raises:
            ValueError: If the file was written by another `TOPOLOGY_VERSION`.
        """
        with np.load(Path(path), allow_pickle=False) as npz:
            a = {k: npz[k] for k in npz.files}
        if int(a["version"]) != TOPOLOGY_VERSION:
            raise ValueError(f"topology version {int(a['version'])} != {TOPOLOGY_VERSION}")
        num_vertices = tuple(int(n) for n in a["num_vertices"])
        levels = range(len(num_vertices))

        def mat(name: str, level: int) -> sp.csr_matrix:
            return sp.csr_matrix(
                (a[f"{name}_{level}_data"], a[f"{name}_{level}_indices"],
                 a[f"{name}_{level}_indptr"]),
                shape=tuple(a[f"{name}_{level}_shape"]),
            )  # fmt: skip

        return cls(
            num_vertices=num_vertices,
            faces=tuple(a[f"faces_{lv}"] for lv in levels),
            templates=tuple(a[f"template_{lv}"] for lv in levels),
            down=tuple(mat("down", lv) for lv in levels[:-1]),
            up=tuple(mat("up", lv) for lv in levels[:-1]),
            clusters=tuple(a[f"cluster_{lv}"] for lv in levels[:-1]),
            j_regressor_h36m=a["j_regressor_h36m"],
            contact_labels=tuple(a[f"contact_labels_{lv}"] for lv in levels),
            model_hash=str(a["model_hash"]),
            source=str(a["source"]),
        )

    # ---------------------------------------------------------------- queries

    @property
    def num_levels(self) -> int:
        """Number of mesh levels."""
        return len(self.num_vertices)

    @property
    def j_regressor_j14(self) -> np.ndarray:
        """The 14-joint regressor (14, V_0): rows `H36M_TO_J14` of `j_regressor_h36m`."""
        return self.j_regressor_h36m[list(H36M_TO_J14)]

    def adjacency(self, level: int = 0) -> sp.csr_matrix:
        """Vertex adjacency (V_l, V_l) of a level with faces.

        Raises:
            ValueError: If the level has no faces (loaded from a METRO file).
        """
        if len(self.faces[level]) == 0:
            raise ValueError(f"level {level} has no faces")
        return mesh_adjacency(self.faces[level], self.num_vertices[level])

    def contact_labels_majority(self, level: int) -> np.ndarray:
        """Contact labels of a level by majority vote of the full-resolution cluster members.

        Args:
            level: Mesh level (0 returns the full-resolution labels).

        Returns:
            Integer array (V_level,). Ties go to the smaller label.
        """
        owner = np.arange(self.num_vertices[0])
        for lv in range(level):
            owner = self.clusters[lv][owner]
        counts = np.zeros((self.num_vertices[level], len(CONTACT_REGION_NAMES)), dtype=np.int64)
        np.add.at(counts, (owner, self.contact_labels[0]), 1)
        return counts.argmax(axis=1)

    def region_vertex_ids(self, region: str | int, level: int = 0) -> np.ndarray:
        """Vertex indices of one contact region at a level.

        Args:
            region: A name from `CONTACT_REGION_NAMES` or its label.
            level: Mesh level.

        Returns:
            Sorted int64 indices.
        """
        label = CONTACT_REGION_NAMES.index(region) if isinstance(region, str) else int(region)
        return np.flatnonzero(self.contact_labels[level] == label)

    # ---------------------------------------------------------------- torch side

    def _sparse(
        self, kind: str, level: int, device: torch.device | str, dtype: torch.dtype
    ) -> torch.Tensor:
        key = (kind, level, str(torch.device(device)), dtype)
        if key not in self._torch_cache:
            mat = sp.coo_matrix((self.down if kind == "down" else self.up)[level])
            idx = torch.as_tensor(np.stack([mat.row, mat.col]).astype(np.int64))
            val = torch.as_tensor(mat.data, dtype=dtype)
            self._torch_cache[key] = torch.sparse_coo_tensor(
                idx, val, mat.shape, device=device, check_invariants=True
            ).coalesce()
        return self._torch_cache[key]

    def down_matrix(
        self, level: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Sparse COO tensor (V_{l+1}, V_l) down-sampling level ``level`` to ``level + 1``."""
        return self._sparse("down", level, device, dtype)

    def up_matrix(
        self, level: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Sparse COO tensor (V_l, V_{l+1}) up-sampling level ``level + 1`` to ``level``."""
        return self._sparse("up", level, device, dtype)

    def level_of(self, num_vertices: int) -> int:
        """The level with ``num_vertices`` vertices.

        Raises:
            ValueError: If no level has that many vertices.
        """
        if num_vertices not in self.num_vertices:
            raise ValueError(f"no mesh level has {num_vertices} vertices: {self.num_vertices}")
        return self.num_vertices.index(num_vertices)

    def _apply(self, mat: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
        squeeze = verts.dim() == 2
        x = verts.unsqueeze(0) if squeeze else verts
        b, v, c = x.shape
        flat = x.permute(1, 0, 2).reshape(v, b * c)
        out = torch.sparse.mm(mat, flat).reshape(mat.shape[0], b, c).permute(1, 0, 2)
        return out[0] if squeeze else out

    def downsample(self, verts: torch.Tensor, level: int) -> torch.Tensor:
        """Down-samples vertices of any finer level to ``level``.

        Args:
            verts: Tensor of shape (B, V_k, 3) or (V_k, 3) for some level ``k <= level``
                (inferred from V_k); any frame and unit; differentiable.
            level: Target level.

        Returns:
            Tensor of shape (B, V_level, 3) (or (V_level, 3)), same device and dtype.
        """
        current = self.level_of(verts.shape[-2])
        if current > level:
            raise ValueError(f"cannot down-sample level {current} to finer level {level}")
        for lv in range(current, level):
            verts = self._apply(self.down_matrix(lv, verts.device, verts.dtype), verts)
        return verts

    def upsample(self, verts: torch.Tensor, from_level: int, to_level: int = 0) -> torch.Tensor:
        """Up-samples vertices from ``from_level`` to the finer ``to_level``.

        Args:
            verts: Tensor of shape (B, V_from, 3) or (V_from, 3); differentiable.
            from_level: Level of ``verts``.
            to_level: Target level, ``<= from_level``.

        Returns:
            Tensor of shape (B, V_to, 3) (or (V_to, 3)), same device and dtype.
        """
        if verts.shape[-2] != self.num_vertices[from_level]:
            raise ValueError(
                f"level {from_level} has {self.num_vertices[from_level]} vertices, "
                f"got {verts.shape[-2]}"
            )
        if to_level > from_level:
            raise ValueError(f"cannot up-sample level {from_level} to coarser level {to_level}")
        for lv in range(from_level - 1, to_level - 1, -1):
            verts = self._apply(self.up_matrix(lv, verts.device, verts.dtype), verts)
        return verts

    def regress_h36m(self, verts: torch.Tensor) -> torch.Tensor:
        """H36M joints (B, 17, 3) from full-resolution vertices (B, V_0, 3)."""
        reg = torch.as_tensor(self.j_regressor_h36m, dtype=verts.dtype, device=verts.device)
        return torch.einsum("jv,...vc->...jc", reg, verts)


def cache_path(model_hash: str, cache_dir: str | Path | None = None) -> Path:
    """Cache file of a model's topology: ``<dir>/topology_v<version>_<hash[:32]>.npz``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"topology_v{TOPOLOGY_VERSION}_{model_hash[:32]}.npz"


def _labels_by_representative(
    labels0: np.ndarray, down: tuple[sp.csr_matrix, ...] | list[sp.csr_matrix]
) -> tuple[np.ndarray, ...]:
    """Labels per level: each coarse vertex takes the label of its down-sampling source."""
    labels = [np.asarray(labels0, dtype=np.int64)]
    for d in down:
        rep = np.asarray(sp.csr_matrix(d).argmax(axis=1)).ravel()
        labels.append(labels[-1][rep])
    return tuple(labels)


def load_mesh_downsampling(
    path: str | Path, *, allow_pickle: bool = False
) -> tuple[list[sp.csr_matrix], list[sp.csr_matrix]]:
    """Reads METRO's ``mesh_downsampling.npz`` (keys ``A``, ``U``, ``D``).

    Args:
        path: The file: an ``.npz`` whose members are object arrays (pickled lists of scipy
            sparse matrices), per level ``A[l]`` (V_l, V_l), ``D[l]`` (V_{l+1}, V_l),
            ``U[l]`` (V_l, V_{l+1}).
        allow_pickle: Must be True (the object arrays are pickles); they are read with a
            restricted unpickler that builds only arrays and sparse matrices.

    Returns:
        ``(down, up)`` lists of CSR matrices, one per level transition.

    Raises:
        PermissionError: Without ``allow_pickle=True``.
        ValueError: If the layout or the chained sizes are wrong.
    """
    if not allow_pickle:
        raise PermissionError(
            f"{path} stores pickled object arrays; pass allow_pickle=True to read it with a "
            "restricted unpickler (numpy arrays and scipy sparse matrices only)"
        )
    raw = load_npz_restricted(path)
    missing = {"A", "U", "D"} - set(raw)
    if missing:
        raise ValueError(f"{path}: missing key(s) {sorted(missing)}; expected A, U, D")

    def as_list(key: str) -> list[sp.csr_matrix]:
        value = raw[key]
        items = list(value.ravel()) if isinstance(value, np.ndarray) else list(value)
        mats = []
        for i, item in enumerate(items):
            if not sp.issparse(item):
                raise ValueError(f"{path}: {key}[{i}] is a {type(item).__name__}, not sparse")
            mats.append(sp.csr_matrix(to_plain_array(item)))
        return mats

    adj, up, down = as_list("A"), as_list("U"), as_list("D")
    if not down or len(down) != len(up) or len(adj) != len(down) + 1:
        raise ValueError(
            f"{path}: expected len(A) = len(D) + 1 = len(U) + 1, got {len(adj)}, {len(down)}, "
            f"{len(up)}"
        )
    for lv, (d, u) in enumerate(zip(down, up)):
        fine, coarse = adj[lv].shape[0], adj[lv + 1].shape[0]
        if d.shape != (coarse, fine) or u.shape != (fine, coarse):
            raise ValueError(
                f"{path}: level {lv}: D {d.shape} / U {u.shape} do not chain "
                f"{fine} -> {coarse} vertices"
            )
    return down, up
