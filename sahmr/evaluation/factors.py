"""Where a method's error comes from: per-frame errors binned by what the frame shows.

A mean over a test split hides which bodies and cameras a method fails on. For a generated
split (`sahmr.data.synthetic.SyntheticDataset`) every frame records its camera, its body and
its occlusion, so the evaluator's per-frame rows (``per_frame.csv``) can be grouped by:

=====================  =====  ======================================================
factor                 unit   what
=====================  =====  ======================================================
``camera_distance``    m      camera centre to the pelvis
``camera_above``       m      camera centre above the pelvis along the scan's up axis
``focal_35mm``         mm     35 mm-equivalent focal length across the long image side
``person_px``          px     height of the person's box in the image
``stature``            m      the body's rest-pose height (``height`` column)
``girth``              -      the second shape coefficient (beta 1)
``occlusion``          -      share of the body's pixels hidden
``occluder``           -      a synthetic occluder in front (0 none, else its kind)
``mirrored``           -      1: the action drawn as its mirror image, 0: as the pose
                              library holds it, ``MIRRORED_UNKNOWN`` (255): not recorded
                              (a set made before the generator recorded it)
``action``             -      what the person does (sit, lie_floor, ...)
=====================  =====  ======================================================

Units metres, world frame = the scan, ``T_w2c`` world -> camera (OpenCV), as everywhere in
sahmr. Used by ``tools/error_by_factor.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sahmr.data.shards import MIRRORED_UNKNOWN
from sahmr.scene.orientation import up_vector

__all__ = [
    "FACTORS",
    "FILM_LONG_SIDE_MM",
    "Factor",
    "bin_errors",
    "camera_factors",
    "dataset_factors",
]

FILM_LONG_SIDE_MM = 36.0
"""Long side of the 35 mm film frame: ``focal_35mm = f_px * 36 / long side in px``."""

INF = float("inf")


@dataclass(frozen=True)
class Factor:
    """One way of grouping frames.

    Attributes:
        name: Key in `dataset_factors`' output.
        unit: Unit of the values ("" for none).
        edges: Bin edges, increasing (a frame falls in ``[edges[i], edges[i + 1])``); None
            for a categorical factor (one group per value).
        what: One line for tables and plots.
    """

    name: str
    unit: str
    edges: tuple[float, ...] | None
    what: str


FACTORS: tuple[Factor, ...] = (
    Factor("camera_distance", "m", (0, 2, 3, 4, 5, 6, 8, INF), "camera to pelvis"),
    Factor("camera_above", "m", (-INF, -0.5, 0, 0.5, 1, 1.5, 2, INF), "camera above pelvis"),
    Factor("focal_35mm", "mm", (0, 20, 28, 35, 50, 85, INF), "35 mm-equivalent focal length"),
    Factor("person_px", "px", (0, 100, 150, 200, 300, 500, INF), "person's box height"),
    Factor("stature", "m", (0, 1.5, 1.6, 1.7, 1.8, 1.9, INF), "rest-pose stature"),
    Factor("girth", "", (-INF, -2, -1, 1, 2, INF), "shape coefficient beta 1"),
    Factor("occlusion", "", (0, 0.05, 0.2, 0.4, INF), "share of the body hidden"),
    Factor("occluder", "", None, "synthetic occluder kind (0: none)"),
    Factor("mirrored", "", None, "the action's mirror image (1), as in the library (0), "
           f"not recorded ({MIRRORED_UNKNOWN})"),
    Factor("action", "", None, "what the person does"),
)
"""Every factor `dataset_factors` computes, in report order."""


def camera_factors(
    T_w2c: np.ndarray, pelvis_world: np.ndarray, up_axis: str = "z"
) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-pelvis distance and camera height above the pelvis.

    Args:
        T_w2c: (N, 4, 4) world -> camera.
        pelvis_world: (N, 3) pelvis (joint 0), world frame, metres.
        up_axis: The scan's up axis (`sahmr.scene.io.UP_AXES`).

    Returns:
        ``(distance_m, above_m)``, each (N,) float64.
    """
    T = np.asarray(T_w2c, dtype=np.float64)
    R, t = T[:, :3, :3], T[:, :3, 3]
    pelvis = np.asarray(pelvis_world, dtype=np.float64)
    pelvis_cam = np.einsum("nij,nj->ni", R, pelvis) + t
    centre_world = -np.einsum("nji,nj->ni", R, t)  # -R^T t
    above = (centre_world - pelvis) @ up_vector(up_axis)
    return np.linalg.norm(pelvis_cam, axis=1), above


def dataset_factors(dataset, up_axis: str = "z") -> dict[str, np.ndarray]:
    """Every factor of `FACTORS` for each frame of a generated split, in index order.

    Args:
        dataset: A `sahmr.data.synthetic.SyntheticDataset` (read through its columns, no
            image decoded).
        up_axis: The rooms' up axis (the generator writes z-up rooms).

    Returns:
        ``{factor name: (N,)}``; numeric factors float64, ``action`` a string array.
    """
    c = dataset.columns(
        ["T_w2c", "joints_world", "K", "image_size", "bbox", "betas", "height", "occlusion",
         "occluder", "mirrored"]
    )  # fmt: skip
    distance, above = camera_factors(c["T_w2c"], c["joints_world"][:, 0], up_axis)
    long_side_px = np.asarray(c["image_size"], dtype=np.float64).max(axis=1)
    bbox = np.asarray(c["bbox"], dtype=np.float64)
    return {
        "camera_distance": distance,
        "camera_above": above,
        "focal_35mm": np.asarray(c["K"], dtype=np.float64)[:, 0, 0]
        * FILM_LONG_SIDE_MM
        / long_side_px,
        "person_px": bbox[:, 3] - bbox[:, 1],
        "stature": np.asarray(c["height"], dtype=np.float64),
        "girth": np.asarray(c["betas"], dtype=np.float64)[:, 1],
        "occlusion": np.asarray(c["occlusion"], dtype=np.float64),
        "occluder": np.asarray(c["occluder"], dtype=np.float64),
        "mirrored": np.asarray(c["mirrored"], dtype=np.float64),
        "action": np.asarray(dataset.strings("action")),
    }


def _label(lo: float, hi: float) -> str:
    if lo == -INF:
        return f"< {hi:g}"
    if hi == INF:
        return f">= {lo:g}"
    return f"{lo:g} - {hi:g}"


def bin_errors(
    values: np.ndarray,
    errors: Mapping[str, np.ndarray],
    edges: Sequence[float] | None,
) -> list[dict]:
    """Mean errors per group of frames.

    Args:
        values: (N,) the factor per frame (numbers, or strings for a categorical factor).
        errors: ``{metric: (N,)}``, NaN where a frame has no value (it is left out of that
            metric's mean, not of the count).
        edges: Increasing bin edges; None: one group per distinct value, sorted. A number
            outside every bin or NaN goes nowhere.

    Returns:
        One dict per non-empty group: ``bin`` (label), ``lo`` and ``hi`` (numeric bins) or
        ``value`` (categorical), ``frames``, and per metric the mean (None where every frame
        lacks it).
    """
    values = np.asarray(values)
    groups: list[tuple[dict, np.ndarray]] = []
    if edges is None:
        for v in sorted(set(values.tolist())):
            shown = f"{v:g}" if isinstance(v, float) else str(v)
            groups.append(({"bin": shown, "value": v}, values == v))
    else:
        x = values.astype(np.float64)
        for lo, hi in itertools.pairwise(edges):
            groups.append(({"bin": _label(lo, hi), "lo": lo, "hi": hi}, (x >= lo) & (x < hi)))
    rows = []
    for head, mask in groups:
        n = int(mask.sum())
        if n == 0:
            continue
        row = {**head, "frames": n}
        for name, e in errors.items():
            kept = np.asarray(e, dtype=np.float64)[mask]
            kept = kept[np.isfinite(kept)]
            row[name] = float(kept.mean()) if kept.size else None
        rows.append(row)
    return rows
