"""People in an image: boxes, landmarks and body joints with confidences (`detect_people`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sahmr.detect.keypoints import box_from_landmarks, landmarks_to_joints
from sahmr.detect.runtime import run_pose

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_PERSON_HEIGHT_FRACTION",
    "TILE_GRID",
    "DetectedPerson",
    "NoPersonError",
    "crop_keypoints",
    "detect_people",
    "people_from_landmarks",
    "select_people",
]

MIN_PERSON_HEIGHT_FRACTION = 0.1
"""People whose box is shorter than this fraction of the image height are ignored (the
generated data's smallest person, ``camera.min_bbox_height`` of configs/make_dataset.yaml)."""


TILE_GRID = 3
"""Full images are also searched in 3 x 3 overlapping tiles of half the image when fewer people
than asked were found: mediapipe's person detector sees the image at 224 px and misses people
under about a third of the image height (docs/detection.md)."""


class NoPersonError(ValueError):
    """No person (large enough) was found in an image."""


@dataclass
class DetectedPerson:
    """One person found in an image (pixels of that image).

    Attributes:
        bbox: (4,) float32 ``x0, y0, x1, y1``, clipped to the image.
        landmarks: (33, 4) float32 mediapipe landmarks ``[x, y, z, visibility]``.
        joints_smpl24: (24, 2) float32 SMPL joints (`sahmr.detect.keypoints`).
        confidence_smpl24: (24,) float32 their confidences in [0, 1].
        joints_lsp14: (14, 2) float32 LSP joints.
        confidence_lsp14: (14,) float32.
        score: Mean landmark visibility.
    """

    bbox: np.ndarray
    landmarks: np.ndarray
    joints_smpl24: np.ndarray
    confidence_smpl24: np.ndarray
    joints_lsp14: np.ndarray
    confidence_lsp14: np.ndarray
    score: float

    @property
    def height(self) -> float:
        """Box height, pixels."""
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        """Box area, pixels^2."""
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


def people_from_landmarks(landmarks: np.ndarray, image_size: tuple[int, int]
                          ) -> list[DetectedPerson]:
    """`DetectedPerson` records of landmark arrays.

    Args:
        landmarks: (P, 33, 4) landmarks, pixels.
        image_size: ``(W, H)``: boxes are clipped to it.
    """
    W, H = image_size
    out = []
    for lm in np.asarray(landmarks, np.float32).reshape(-1, 33, 4):
        box = box_from_landmarks(lm)
        box = np.clip(box, 0.0, np.array([W, H, W, H], np.float32)).astype(np.float32)
        j24, c24 = landmarks_to_joints(lm, "smpl24")
        j14, c14 = landmarks_to_joints(lm, "lsp14")
        out.append(DetectedPerson(box, lm, j24, c24, j14, c14, float(lm[:, 3].mean())))
    return out


def select_people(people: list[DetectedPerson], image_size: tuple[int, int], *,
                  which: str = "all",
                  min_height_fraction: float = MIN_PERSON_HEIGHT_FRACTION,
                  image_name: str = "the image") -> list[DetectedPerson]:
    """The people to process: those tall enough, largest box first (``which="largest"``: one).

    Raises:
        NoPersonError: Nobody large enough (one line naming the image and the threshold).
    """
    if which not in ("all", "largest"):
        raise ValueError(f"which must be 'all' or 'largest', got {which!r}")
    H = image_size[1]
    kept = sorted((p for p in people if p.height >= min_height_fraction * H),
                  key=lambda p: -p.area)
    if not kept:
        seen = f" ({len(people)} smaller one(s) ignored)" if people else ""
        raise NoPersonError(
            f"no person found in {image_name}{seen}: the detector needs a person at least "
            f"{min_height_fraction:.0%} of the image height; pass --bbox x0,y0,x1,y1 instead")
    return kept[:1] if which == "largest" else kept


def detect_people(images: list[np.ndarray], *, max_people: int = 4,
                  min_detection_confidence: float = 0.5, tile_grid: int = TILE_GRID,
                  site: Path | None = None) -> list[list[DetectedPerson]]:
    """Every person mediapipe finds in each image (unfiltered; see `select_people`).

    Args:
        images: (H, W, 3) uint8 RGB images.
        max_people: People looked for per image.
        min_detection_confidence: mediapipe's person-detector threshold.
        tile_grid: Overlapping tiles searched for small people (`sahmr.detect.runtime.run_pose`).
        site: mediapipe's private site folder (`sahmr.detect.runtime.default_site`).

    Returns:
        Per image, its people, most salient first.

    Raises:
        sahmr.detect.runtime.DetectorUnavailableError: mediapipe is not installed.
    """
    res = run_pose(images, max_people=max_people, tile_grid=tile_grid,
                   min_detection_confidence=min_detection_confidence, site=site)
    return [people_from_landmarks(res.for_image(i), (im.shape[1], im.shape[0]))
            for i, im in enumerate(images)]


def crop_keypoints(crops: list[np.ndarray], joint_set: str = "smpl24", *,
                   site: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector keypoints of one person per crop (the most salient), in crop pixels.

    Args:
        crops: (S, S, 3) uint8 RGB person crops.
        joint_set: "smpl24" or "lsp14".
        site: mediapipe's private site folder.

    Returns:
        ``(joints (B, J, 2) float32, confidence (B, J) float32, found (B,) bool)``; rows of
        crops without a person are zeros.
    """
    from sahmr.detect.keypoints import JOINT_NAMES

    res = run_pose(crops, max_people=1, site=site)
    J = len(JOINT_NAMES[joint_set])
    joints = np.zeros((len(crops), J, 2), np.float32)
    conf = np.zeros((len(crops), J), np.float32)
    found = np.zeros(len(crops), bool)
    for i in range(len(crops)):
        lm = res.for_image(i)
        if len(lm):
            joints[i], conf[i] = landmarks_to_joints(lm[0], joint_set)
            found[i] = True
    return joints, conf, found
