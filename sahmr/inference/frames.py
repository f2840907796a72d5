"""One image of an inference run: its camera, person box and model inputs, checked before any
model runs.

`prepare_frame` reads the image, checks it against its calibration and the scan, and builds the
inputs with `frame_inputs_from_image`: the square crop around the bbox (`square_bbox` scale
`CROP_BBOX_SCALE`, `crop_image`), the crop camera and the bbox frustum's scene points in the
camera frame: exactly what `sahmr.data.prepare.prepare_inputs` makes of a dataset `Batch`.

Frames: world = the scan's frame, camera = OpenCV, metres; ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_image, square_bbox
from sahmr.inference.camera_io import CameraSpec
from sahmr.inference.errors import (
    CameraError,
    check_bbox,
    check_camera_sees_scan,
    check_frustum,
    check_image_size,
)
from sahmr.inference.images import read_image
from sahmr.inference.scene import SceneData
from sahmr.inference.timing import StageTimer
from sahmr.records import FrameInputs
from sahmr.scene.frontend import (
    CROP_BBOX_SCALE,
    FRUSTUM_FAR_M,
    FRUSTUM_NEAR_M,
    SceneBank,
    build_inputs,
)


@dataclass
class FrameSpec:
    """One image to run on.

    Attributes:
        name: Frame name (output sub-folder in batch mode).
        image_path: The image file.
        camera: Its calibrated camera.
        bbox: (4,) person box ``x0, y0, x1, y1``, pixels of the image as loaded (after
            un-mirroring PROX frames).
        gt_path: Optional ground-truth body ``.npz`` (world frame, `sahmr.evaluation.readers`
            keys).
        keypoints2d: Optional (24, 2) SMPL joints in pixels of the image as loaded, from the
            person detector (`sahmr.detect`); the scene fit fits them when given.
        keypoint_confidence: Optional (24,) their confidences in [0, 1].
    """

    name: str
    image_path: Path
    camera: CameraSpec
    bbox: np.ndarray
    gt_path: Path | None = None
    keypoints2d: np.ndarray | None = None
    keypoint_confidence: np.ndarray | None = None


def frame_inputs_from_image(
    image: np.ndarray,
    bbox: np.ndarray | Tensor,
    K: np.ndarray | Tensor,
    T_w2c: np.ndarray | Tensor,
    bank: SceneBank | None,
    scene_id: str | None,
    *,
    crop_size: int = DEFAULT_CROP_SIZE,
    device: torch.device | str | None = None,
    near: float = FRUSTUM_NEAR_M,
    far: float = FRUSTUM_FAR_M,
) -> FrameInputs:
    """Model inputs of one full image, as `sahmr.data.prepare.prepare_inputs` makes them.

    Args:
        image: (H, W, 3) uint8 RGB full image.
        bbox: (4,) person box ``x0, y0, x1, y1``, image pixels.
        K: (3, 3) image intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        bank: Scene points (world), or None for inputs without scene points.
        scene_id: The frame's scene in ``bank``.
        crop_size: Crop side S, pixels.
        device: Where the inputs go (default: the bank's device, else CPU).
        near: Nearest frustum depth, metres.
        far: Farthest frustum depth, metres.

    Returns:
        `FrameInputs` with B = 1.
    """
    if device is None:
        device = bank.device if bank is not None else "cpu"
    box = torch.as_tensor(np.asarray(bbox, dtype=np.float32)).reshape(1, 4)
    cx, cy, side = square_bbox(box, CROP_BBOX_SCALE)
    crop = crop_image(np.asarray(image, dtype=np.uint8), (cx, cy, side), crop_size)
    crop_t = torch.from_numpy(np.ascontiguousarray(crop))[None].to(device)
    K_t = torch.as_tensor(np.asarray(K, dtype=np.float32)).reshape(1, 3, 3).to(device)
    T_t = torch.as_tensor(np.asarray(T_w2c, dtype=np.float32)).reshape(1, 4, 4).to(device)
    box = box.to(device)
    if bank is not None and scene_id is None:
        raise ValueError("scene_id is required with a scene bank")
    return build_inputs(crop_t, K_t, box, T_t, bank, [scene_id], near=near, far=far)


@dataclass
class PreparedFrame:
    """A checked frame and its model inputs.

    Attributes:
        image: (H, W, 3) uint8 image as used (un-mirrored for PROX cameras).
        inputs: `FrameInputs` (B = 1).
        timings: Seconds of the preparation stages.
    """

    image: np.ndarray
    inputs: FrameInputs
    timings: dict[str, float]


def check_frame_camera(
    frame: FrameSpec, scene: SceneData, hint: str = "", image: np.ndarray | None = None
) -> None:
    """Check that the frame's camera can see its person in the scan, before any model runs:
    its centre inside the scan, gravity roughly image-up, the person box looking at scan
    surfaces a person can stand among (`sahmr.scene.camera_checks`); then, for a scan with
    faces, that the scan seen from the camera lines up with the image no worse than from its
    inverse or the camera turned about the up axis (`sahmr.scene.image_alignment`).

    Args:
        frame: The frame (camera, person box and image).
        scene: The scan.
        hint: Appended to the message (how to go on anyway).
        image: (H, W, 3) uint8 image as loaded (un-mirrored), or None to read the frame's.

    Raises:
        CameraError: One line naming the camera and what fails; when the inverse matrix
            passes, that the extrinsics look like camera-to-world; when an alternative camera
            lines up with the image better, which.
        InputError: The image cannot be read or does not fit the calibration.
    """
    from sahmr.scene.camera_checks import OddCameraError, check_camera_view
    from sahmr.scene.image_alignment import ImageAlignmentError, check_image_alignment

    cam = frame.camera
    source = f"camera {cam.path}" if cam.path else f"camera of frame {frame.name}"
    try:
        check_camera_view(scene.points_world, cam.K, cam.T_w2c, frame.bbox, scene.up_axis, source)
    except OddCameraError as exc:
        raise CameraError(f"{exc}{hint}") from None
    caster = scene.raycaster()
    if caster is None:
        return
    if image is None:
        image = read_image(frame.image_path, mirrored=cam.mirrored_images)
        check_image_size((image.shape[1], image.shape[0]), cam.image_size, cam.K)
    try:
        check_image_alignment(caster, image, cam.K, cam.T_w2c, frame.bbox, scene.up_axis, source)
    except ImageAlignmentError as exc:
        raise CameraError(f"{exc}{hint}") from None


def prepare_frame(
    frame: FrameSpec,
    scene: SceneData,
    device: torch.device | str = "cpu",
    *,
    check_camera: bool = True,
) -> PreparedFrame:
    """Read and check a frame against its camera and the scan, and build its inputs.

    Checks, in order: image readable, image size vs calibration, bbox inside the image, the
    camera sees the scan, the bbox frustum holds scene points, the camera can see the person
    in the scan and the scan seen from it lines up with the image (`check_frame_camera`, unless
    ``check_camera`` is false). Needs no model, so
    bad input is reported before a checkpoint is loaded.

    Raises:
        InputError: Any of the checks of `sahmr.inference.errors`.
    """
    timer = StageTimer(device)
    cam = frame.camera
    with timer("read_image"):
        image = read_image(frame.image_path, mirrored=cam.mirrored_images)
    H, W = image.shape[:2]
    check_image_size((W, H), cam.image_size, cam.K)
    bbox = check_bbox(frame.bbox, (W, H))
    with timer("prepare_inputs"):
        check_camera_sees_scan(
            scene.points_world, cam.K, cam.T_w2c, (W, H), FRUSTUM_NEAR_M, FRUSTUM_FAR_M
        )
        inputs = frame_inputs_from_image(
            image, bbox, cam.K, cam.T_w2c, scene.bank(device), scene.name, device=device
        )
    n = 0 if inputs.scene_points_cam is None else int(inputs.scene_points_cam.shape[0])
    check_frustum(n, bbox, FRUSTUM_NEAR_M, FRUSTUM_FAR_M)
    if check_camera:
        check_frame_camera(frame, scene, " (check_camera=False goes on anyway)", image)
    return PreparedFrame(image, inputs, dict(timer.seconds))
