"""Where mediapipe lives and how it is run: a private site folder and a child process.

mediapipe 0.10.14 (the pin below) cannot share the main environment: its generated protobuf
code needs protobuf < 5 while tensorboard 2.21 needs protobuf >= 6.31, and its declared
dependencies pull jax + jaxlib (~380 MB installed), opencv-contrib (~305 MB) and sounddevice,
none of which the pose solution uses. ``tools/install.sh`` therefore installs the packages of
`DETECTOR_REQUIREMENTS` with ``pip install --no-deps --target <site>`` into `default_site`
(about 240 MB, mostly OpenCV, which mediapipe's ``solutions`` package imports), and
`run_pose` runs ``_mediapipe_worker.py`` in a child Python with that folder first on its
path. numpy, absl-py, attrs and matplotlib come from the main environment (all are
dependencies of sahmr or tensorboard). Nothing here imports mediapipe: the model, training
and evaluation paths never need it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DETECTOR_REQUIREMENTS",
    "MEDIAPIPE_VERSION",
    "DetectorUnavailableError",
    "PoseLandmarks",
    "default_site",
    "detector_available",
    "run_pose",
]

MEDIAPIPE_VERSION = "0.10.14"
"""Pinned: the last release whose wheel both ships the pose Full model
(``pose_landmark_full.tflite`` + ``pose_detection.tflite``, used offline) and keeps the legacy
``mediapipe.solutions.pose`` API; 0.10.30+ dropped ``solutions``, 1.x wheels ship no model,
and the Lite/Heavy models download at run time (fail offline)."""

DETECTOR_REQUIREMENTS: tuple[str, ...] = (
    f"mediapipe=={MEDIAPIPE_VERSION}",
    "protobuf>=4.25.3,<5",  # mediapipe 0.10.14's generated code; protobuf 5+ breaks it
    "flatbuffers>=2.0",
    "opencv-python-headless>=4.8,<5",  # imported by mediapipe.solutions; no GUI, not contrib
)
"""What tools/install.sh puts into the private site (all with ``--no-deps``)."""

SITE_ENV = "SAHMR_MEDIAPIPE_SITE"
"""Environment variable naming another site folder."""

NUM_LANDMARKS = 33
"""BlazePose GHUM landmarks per person."""

WORKER = Path(__file__).with_name("_mediapipe_worker.py")


class DetectorUnavailableError(RuntimeError):
    """mediapipe is not installed where sahmr looks for it."""


def default_site() -> Path:
    """The private site folder: ``$SAHMR_MEDIAPIPE_SITE``, else
    ``<sys.prefix>/share/sahmr/mediapipe-<version>`` (one per Python environment)."""
    env = os.environ.get(SITE_ENV)
    if env:
        return Path(env)
    return Path(sys.prefix) / "share" / "sahmr" / f"mediapipe-{MEDIAPIPE_VERSION}"


def detector_available(site: Path | None = None) -> bool:
    """Whether the private site holds mediapipe (checked by file, without importing it)."""
    site = default_site() if site is None else Path(site)
    return (site / "mediapipe" / "modules" / "pose_landmark" / "pose_landmark_full.tflite"
            ).is_file()


def _unavailable_message(site: Path) -> str:
    return (f"the person detector (mediapipe {MEDIAPIPE_VERSION}) is not installed in {site}: "
            "run `bash tools/install.sh` (or set $" + SITE_ENV + "), or pass a --bbox")


@dataclass
class PoseLandmarks:
    """mediapipe's 33 landmarks of the people found in a list of images.

    Attributes:
        landmarks: (P, 33, 4) float32 ``[x, y, z, visibility]``: x, y in pixels of the image
            given, z mediapipe's relative depth (pixels, hip-centred), visibility in [0, 1].
        presence: (P, 33) float32 mediapipe's presence scores.
        image_index: (P,) int64 the image each person was found in.
    """

    landmarks: np.ndarray
    presence: np.ndarray
    image_index: np.ndarray

    def for_image(self, i: int) -> np.ndarray:
        """(P_i, 33, 4) landmarks of image ``i``, most salient person first."""
        return self.landmarks[self.image_index == i]


def run_pose(
    images: list[np.ndarray],
    *,
    max_people: int = 1,
    min_detection_confidence: float = 0.5,
    mask_margin: float = 0.1,
    tile_grid: int = 0,
    site: Path | None = None,
    timeout_s: float | None = None,
) -> PoseLandmarks:
    """mediapipe's pose solution (Full model, static images) on each image, in one child process.

    Args:
        images: (H, W, 3) uint8 RGB images.
        max_people: People looked for per image (found one at a time, each masked out before
            the next search).
        min_detection_confidence: mediapipe's person-detector threshold.
        mask_margin: Growth of a found person's landmark box, as a fraction of its larger side,
            before it is masked out.
        tile_grid: When fewer than ``max_people`` were found in the whole image, search
            ``tile_grid`` x ``tile_grid`` overlapping tiles too (small people); 0: no tiles.
        site: Private site folder (default `default_site`).
        timeout_s: Kill the child after this many seconds (default: 30 + 2 s per image).

    Returns:
        `PoseLandmarks` (P >= 0 people in all).

    Raises:
        DetectorUnavailableError: mediapipe is not installed in the site folder.
        RuntimeError: The child process failed (its last stderr lines in the message).
    """
    site = default_site() if site is None else Path(site)
    if not detector_available(site):
        raise DetectorUnavailableError(_unavailable_message(site))
    for k, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"image {k}: expected (H, W, 3) uint8, got {im.shape} {im.dtype}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ info lines
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="sahmr-detect-") as tmp:
        req, res = Path(tmp) / "request.npz", Path(tmp) / "result.npz"
        np.savez(req, max_people=np.int64(max_people),
                 min_detection_confidence=np.float64(min_detection_confidence),
                 mask_margin=np.float64(mask_margin), tile_grid=np.int64(tile_grid),
                 **{f"image_{k}": im for k, im in enumerate(images)})
        per_image = 2.0 * (1 + max(tile_grid, 1) ** 2)
        timeout = 30.0 + per_image * len(images) if timeout_s is None else timeout_s
        proc = subprocess.run([sys.executable, str(WORKER), str(req), str(res)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not res.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"mediapipe worker failed (exit {proc.returncode}): {tail}")
        with np.load(res, allow_pickle=False) as z:
            out = PoseLandmarks(z["landmarks"], z["presence"], z["image_index"])
            logger.debug("mediapipe %s: %d people in %d images", str(z["version"]),
                         len(out.landmarks), len(images))
    return out
