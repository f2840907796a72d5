"""mediapipe's 33 BlazePose landmarks -> the body's joints (SMPL's 24, LSP's 14), and boxes.

Every body joint is a fixed linear combination of landmarks (`BASE_WEIGHTS`: a landmark, a
mid-point, a blend) plus a systematic offset measured on generated images, written in a frame
that moves with the person in the image::

    joint_j = sum_k W[j, k] x_k  +  a_j e_hip  +  b_j e_torso

with ``e_hip = x_left_hip - x_right_hip`` (the hip width vector, person's right -> left) and
``e_torso = mid(shoulders) - mid(hips)`` (the torso vector). Both are linear in the landmarks,
so the whole mapping is one (J, 33) matrix (`mapping_matrix`). The offsets matter most at
the hips: mediapipe's hip landmarks sit at the outside of the hips, SMPL's hip joints are the
centres of the hip sockets, lower and further in. `fit_offsets` measures ``(a_j, b_j)`` by
least squares against projected ground-truth joints; docs/detection.md has the numbers and
how they were measured. A joint's confidence is the smallest visibility of the landmarks of
its base combination.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sahmr.body.constants import H36M_JOINT_NAMES, H36M_TO_J14, SMPL_JOINT_NAMES

__all__ = [
    "BASE_WEIGHTS",
    "BOX_MARGINS",
    "JOINT_NAMES",
    "LANDMARK_INDEX",
    "LANDMARK_NAMES",
    "LSP14_JOINT_NAMES",
    "OFFSETS",
    "base_matrix",
    "box_from_landmarks",
    "fit_offsets",
    "landmarks_to_joints",
    "mapping_matrix",
    "symmetrise_offsets",
]

#: BlazePose GHUM's 33 landmarks in mediapipe's order ("left" is the person's left).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
LANDMARK_INDEX: dict[str, int] = {n: i for i, n in enumerate(LANDMARK_NAMES)}

#: LSP's 14 joints in the order of `sahmr.body.constants.H36M_TO_J14` (the models' J14).
LSP14_JOINT_NAMES: tuple[str, ...] = tuple(H36M_JOINT_NAMES[i] for i in H36M_TO_J14)

#: Joint set name -> joint names, in the order the fit and the models use.
JOINT_NAMES: dict[str, tuple[str, ...]] = {"smpl24": SMPL_JOINT_NAMES, "lsp14": LSP14_JOINT_NAMES}

_HIPS = {"left_hip": 0.5, "right_hip": 0.5}
_SHOULDERS = {"left_shoulder": 0.5, "right_shoulder": 0.5}
_EARS = {"left_ear": 0.5, "right_ear": 0.5}


def _blend(*parts: tuple[float, Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w, part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + w * v
    return out


def _side(side: str) -> dict[str, dict[str, float]]:
    """The base combinations of one side's joints (``side`` is "left" or "right")."""
    s = side
    return {
        f"{s}_hip": {f"{s}_hip": 1.0},
        f"{s}_knee": {f"{s}_knee": 1.0},
        f"{s}_ankle": {f"{s}_ankle": 1.0},
        # SMPL's foot joint sits at the ball of the foot: between heel and toe tip.
        f"{s}_foot": {f"{s}_heel": 0.3, f"{s}_foot_index": 0.7},
        f"{s}_collar": _blend((0.5, _SHOULDERS), (0.5, {f"{s}_shoulder": 1.0})),
        f"{s}_shoulder": {f"{s}_shoulder": 1.0},
        f"{s}_elbow": {f"{s}_elbow": 1.0},
        f"{s}_wrist": {f"{s}_wrist": 1.0},
        # SMPL's hand joint: the middle of the palm, between the wrist and the knuckles.
        f"{s}_hand": {f"{s}_wrist": 0.5, f"{s}_index": 0.25, f"{s}_pinky": 0.25},
    }


_SMPL_BASE: dict[str, dict[str, float]] = {
    "pelvis": dict(_HIPS),
    "spine1": _blend((0.75, _HIPS), (0.25, _SHOULDERS)),
    "spine2": _blend((0.5, _HIPS), (0.5, _SHOULDERS)),
    "spine3": _blend((0.25, _HIPS), (0.75, _SHOULDERS)),
    "neck": dict(_SHOULDERS),
    "head": dict(_EARS),
    **_side("left"),
    **_side("right"),
}
_LSP_BASE: dict[str, dict[str, float]] = {
    **{n: _SMPL_BASE[n] for n in LSP14_JOINT_NAMES if n in _SMPL_BASE},
    "thorax": dict(_SHOULDERS),
    "head_top": dict(_EARS),
}

#: Joint set -> joint -> {landmark: weight} (weights sum to 1).
BASE_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {"smpl24": _SMPL_BASE, "lsp14": _LSP_BASE}

#: Joint set -> joint -> (a, b): offset ``a e_hip + b e_torso`` added to the base combination.
#: Measured by ``tools/detect_keypoints.py --fit-offsets`` on the crops of a generated train
#: split (116 frames, docs/detection.md): least squares on inliers, mirror-symmetrised
#: (`symmetrise_offsets`), rounded to 0.01. Torso and head joints only: the torso vectors are
#: the right frame for them, while a limb joint's offset would follow its own limb.
OFFSETS: dict[str, dict[str, tuple[float, float]]] = {
    "smpl24": {
        "pelvis": (0.0, 0.09), "left_hip": (0.0, -0.08), "right_hip": (0.0, -0.08),
        "spine1": (0.0, 0.08), "spine2": (0.0, 0.09), "spine3": (0.0, -0.05),
        "neck": (0.0, 0.12), "head": (0.0, -0.10),
        "left_collar": (-0.04, -0.06), "right_collar": (0.04, -0.06),
        "left_shoulder": (0.10, 0.01), "right_shoulder": (-0.10, 0.01),
    },
    "lsp14": {
        "left_hip": (-0.02, -0.04), "right_hip": (0.02, -0.04),
        "left_shoulder": (0.0, -0.11), "right_shoulder": (0.0, -0.11),
        "thorax": (0.0, 0.12), "head_top": (0.0, 0.25),
    },
}  # fmt: skip

#: Sides of a person box around the landmarks, as fractions of the landmarks' extent
#: ``(left, top, right, bottom)`` in the image, measured like `OFFSETS` against the
#: ground-truth boxes (projected body vertices; medians 0.093, 0.088, 0.083, 0.044, the two
#: sides averaged): the top of the head above the eyes, the hands and feet past their landmarks.
BOX_MARGINS: tuple[float, float, float, float] = (0.09, 0.09, 0.09, 0.04)


def _basis_rows() -> tuple[np.ndarray, np.ndarray]:
    """(33,) rows giving ``e_hip`` and ``e_torso`` as combinations of landmarks."""
    e_hip = np.zeros(len(LANDMARK_NAMES))
    e_hip[LANDMARK_INDEX["left_hip"]], e_hip[LANDMARK_INDEX["right_hip"]] = 1.0, -1.0
    e_torso = np.zeros(len(LANDMARK_NAMES))
    for name, w in _SHOULDERS.items():
        e_torso[LANDMARK_INDEX[name]] += w
    for name, w in _HIPS.items():
        e_torso[LANDMARK_INDEX[name]] -= w
    return e_hip, e_torso


def base_matrix(joint_set: str = "smpl24") -> np.ndarray:
    """(J, 33) float64 base combinations of `BASE_WEIGHTS` (no offsets)."""
    names = JOINT_NAMES[joint_set]
    W = np.zeros((len(names), len(LANDMARK_NAMES)))
    for j, name in enumerate(names):
        for lm, w in BASE_WEIGHTS[joint_set][name].items():
            W[j, LANDMARK_INDEX[lm]] += w
    return W


def mapping_matrix(joint_set: str = "smpl24",
                   offsets: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(J, 33) float64 matrix M with ``joints = M @ landmarks_xy`` (base + offsets).

    Args:
        joint_set: "smpl24" or "lsp14".
        offsets: joint -> (a, b) (default `OFFSETS` of the set).
    """
    if joint_set not in JOINT_NAMES:
        raise ValueError(f"unknown joint set {joint_set!r}; choose from {sorted(JOINT_NAMES)}")
    offsets = OFFSETS[joint_set] if offsets is None else offsets
    M = base_matrix(joint_set)
    e_hip, e_torso = _basis_rows()
    for j, name in enumerate(JOINT_NAMES[joint_set]):
        a, b = offsets.get(name, (0.0, 0.0))
        M[j] += a * e_hip + b * e_torso
    return M


def landmarks_to_joints(
    landmarks: np.ndarray, joint_set: str = "smpl24",
    offsets: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Body joints and their confidences from mediapipe landmarks.

    Args:
        landmarks: (..., 33, 3 or 4) ``[x, y, (z,) visibility]``, pixels (any image frame).
        joint_set: "smpl24" (SMPL's joints) or "lsp14" (`LSP14_JOINT_NAMES`).
        offsets: Override of `OFFSETS` (for measuring them).

    Returns:
        ``(joints (..., J, 2) float32 pixels of the same image, confidence (..., J) float32)``:
        the confidence is the smallest visibility among the joint's base landmarks.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2] != len(LANDMARK_NAMES) or lm.shape[-1] not in (3, 4):
        raise ValueError(f"landmarks must be (..., 33, 3|4), got {lm.shape}")
    M = mapping_matrix(joint_set, offsets)
    joints = np.einsum("jk,...kc->...jc", M, lm[..., :2])
    support = base_matrix(joint_set) > 0  # (J, 33)
    vis = lm[..., -1]
    conf = np.where(support, vis[..., None, :], np.inf).min(-1)
    return joints.astype(np.float32), np.clip(conf, 0.0, 1.0).astype(np.float32)


def fit_offsets(landmarks: np.ndarray, joints_gt: np.ndarray, joint_set: str = "smpl24",
                weights: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Least-squares offsets ``(a_j, b_j)`` of every joint (see the module docstring).

    Minimises ``sum_i w_ij |gt_ij - W_j x_i - a_j e_hip,i - b_j e_torso,i|^2`` per joint.

    Args:
        landmarks: (N, 33, >=2) landmarks, pixels.
        joints_gt: (N, J, 2) ground-truth joints in the same pixels.
        joint_set: The set of ``joints_gt``.
        weights: (N, J) sample weights (e.g. 0 for frames the detector got wrong).

    Returns:
        joint -> (a, b).
    """
    xy = np.asarray(landmarks, np.float64)[..., :2]
    gt = np.asarray(joints_gt, np.float64)
    N, J = gt.shape[:2]
    w = np.ones((N, J)) if weights is None else np.asarray(weights, np.float64)
    base = np.einsum("jk,nkc->njc", base_matrix(joint_set), xy)
    e_hip_row, e_torso_row = _basis_rows()
    e_hip = np.einsum("k,nkc->nc", e_hip_row, xy)
    e_torso = np.einsum("k,nkc->nc", e_torso_row, xy)
    A = np.stack([e_hip, e_torso], -1)  # (N, 2 coords, 2 unknowns)
    out: dict[str, tuple[float, float]] = {}
    for j, name in enumerate(JOINT_NAMES[joint_set]):
        sw = np.sqrt(w[:, j])[:, None, None]
        lhs = (A * sw).reshape(-1, 2)
        rhs = ((gt[:, j] - base[:, j])[..., None] * sw).reshape(-1)
        sol, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
        out[name] = (float(sol[0]), float(sol[1]))
    return out


def symmetrise_offsets(offsets: Mapping[str, tuple[float, float]]
                       ) -> dict[str, tuple[float, float]]:
    """Mirror-symmetric offsets: a left/right pair shares ``b`` and has opposite ``a`` (the
    mean of the pair's fits); mid-line joints get ``a = 0``. The body and the landmark model
    are left/right symmetric, so an asymmetric fit is measurement noise.
    """
    out: dict[str, tuple[float, float]] = {}
    for name, (a, b) in offsets.items():
        if name.startswith(("left_", "right_")):
            side, rest = name.split("_", 1)
            other = offsets.get(("right_" if side == "left" else "left_") + rest)
            if other is not None:
                a_left = 0.5 * (a - other[0]) if side == "left" else 0.5 * (other[0] - a)
                out[name] = (a_left if side == "left" else -a_left, 0.5 * (b + other[1]))
                continue
            out[name] = (a, b)
        else:
            out[name] = (0.0, b)
    return out


def box_from_landmarks(landmarks: np.ndarray,
                       margins: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Person box ``x0, y0, x1, y1`` around the landmarks, grown by `BOX_MARGINS`.

    Args:
        landmarks: (..., 33, >=2) landmarks, pixels.
        margins: Override of `BOX_MARGINS` (fractions of the landmarks' width / height).

    Returns:
        (..., 4) float32 boxes, pixels (not clipped to the image).
    """
    xy = np.asarray(landmarks, np.float64)[..., :2]
    lo, hi = xy.min(-2), xy.max(-2)
    size = hi - lo
    m = np.asarray(BOX_MARGINS if margins is None else margins, np.float64)
    box = np.concatenate([lo - m[:2] * size, hi + m[2:] * size], -1)
    return box.astype(np.float32)
