"""One-image inference in a scanned scene: scan + image + camera + bbox -> body in the scan.

Steps (DESIGN.md data flow, the same preprocessing as training):

1. `load_scene_data`: the scan (`sahmr.scene.io.load_scene`), checked for plausible units,
   voxel-down-sampled to 2 cm (`sahmr.scene.points.downsample`; without open3d the trimesh
   sampler of the data generator), packed in a `SceneBank`.
2. `frame_inputs_from_image`: the square crop around the bbox (`square_bbox` scale
   `CROP_BBOX_SCALE`, `crop_image`), ImageNet normalisation, the crop camera and the bbox
   frustum's scene points in the camera frame: exactly what `prepare_inputs` makes of a
   dataset `Batch`.
3. `InferencePipeline.run`: ``method.predict(inputs)`` -> `BodyPrediction` (camera frame) ->
   world frame through ``T_w2c``; SMPL-format parameters moved to the world frame when the
   method has them; penetration (PenE, `sahmr.evaluation.metrics.penetration`) and body
   contact from the scene SDF (`sahmr.scene.sdf.load_or_build_sdf`); errors against a
   ground-truth body when one is given. Every stage is timed.

Frames: world = the scan's frame, camera = OpenCV, metres; ``T_w2c`` world -> camera.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_image, square_bbox
from sahmr.inference.camera_io import CameraSpec
from sahmr.inference.errors import (
    CameraError,
    CheckpointError,
    InputError,
    check_bbox,
    check_camera_sees_scan,
    check_frustum,
    check_image_size,
    check_scan_extent,
    require_file,
)
from sahmr.inference.images import read_image
from sahmr.records import BodyPrediction, FrameInputs
from sahmr.scene.contact import vertex_contact
from sahmr.scene.frontend import (
    CROP_BBOX_SCALE,
    FRUSTUM_FAR_M,
    FRUSTUM_NEAR_M,
    SceneBank,
    build_inputs,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SCENE_VOXEL_SIZE_M",
    "FramePrediction",
    "FrameSpec",
    "InferencePipeline",
    "LoadedMethod",
    "PreparedFrame",
    "SceneData",
    "SceneFitRefiner",
    "StageTimer",
    "bundled_checkpoint",
    "check_frame_camera",
    "check_method_checkpoint",
    "default_points_cache_dir",
    "frame_inputs_from_image",
    "load_method_checkpoint",
    "load_scene_data",
    "params_cam_to_world",
    "prepare_frame",
    "read_image",
]

SCENE_VOXEL_SIZE_M = 0.02
"""Scene point spacing fed to the models (DESIGN.md: 2 cm)."""
_POINTS_CACHE_VERSION = 1


class StageTimer:
    """Wall-clock seconds per named stage (CUDA is synchronised around each stage).

    Args:
        device: Device whose queue is synchronised, if CUDA.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# ---------------------------------------------------------------------------- scene


@dataclass
class SceneData:
    """A scan ready for inference.

    Attributes:
        name: Scene id used in the bank.
        path: The scan file.
        mesh: `sahmr.scene.io.SceneMesh` when the scan has faces, else None.
        points: `sahmr.scene.points.ScenePoints` down-sampled at ``voxel_size`` (world).
        up_axis: Gravity-up axis of the scan frame.
        scale: Factor applied to the file's units to get metres.
        extent_m: Largest side of the scan's bounding box, metres.
        timings: Seconds of the loading stages.
    """

    name: str
    path: Path
    mesh: Any
    points: Any
    up_axis: str
    scale: float
    extent_m: float
    timings: dict[str, float] = field(default_factory=dict)
    _banks: dict[str, SceneBank] = field(default_factory=dict, repr=False)

    @property
    def points_world(self) -> np.ndarray:
        """(N, 3) float32 down-sampled scene points, world frame."""
        return self.points.points

    def bank(self, device: torch.device | str = "cpu") -> SceneBank:
        """The scene's `SceneBank` on ``device`` (cached)."""
        key = str(torch.device(device))
        if key not in self._banks:
            self._banks[key] = SceneBank({self.name: self.points_world}, device)
        return self._banks[key]


def _downsample(scene: Any, voxel_size: float) -> Any:
    """`sahmr.scene.points.downsample`, or the generator's trimesh sampler without open3d."""
    from sahmr.scene.points import ScenePoints, downsample

    try:
        import open3d  # noqa: F401
    except ImportError:
        import trimesh

        from sahmr.scene.io import SceneMesh
        from sahmr.synth.room_store import sample_scene_points

        logger.info("open3d is not installed: down-sampling the scan with trimesh")
        if isinstance(scene, SceneMesh):
            pts = sample_scene_points(trimesh.Trimesh(scene.vertices, scene.faces, process=False),
                                      voxel_size)
        else:
            cells = np.floor(scene.points / voxel_size).astype(np.int64)
            _, first = np.unique(cells, axis=0, return_index=True)
            pts = scene.points[np.sort(first)]
        return ScenePoints(pts.astype(np.float32), up_axis=scene.up_axis, voxel_size=voxel_size)
    return downsample(scene, voxel_size)


def default_points_cache_dir() -> Path:
    """``$SAHMR_CACHE_DIR/scene_points`` if set, else ``~/.cache/sahmr/scene_points``."""
    from sahmr.scene.sdf import default_cache_dir

    return default_cache_dir().parent / "scene_points"


def _points_cache_path(path: Path, voxel_size: float, scale: float, cache_dir: Path) -> Path:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    h.update(f"v{_POINTS_CACHE_VERSION}|{voxel_size:.6g}|{scale:.9g}".encode())
    return cache_dir / f"{path.stem}-{h.hexdigest()[:20]}.npz"


def _cached_downsample(
    path: Path, scene: Any, voxel_size: float, scale: float, cache_dir: Path | None
) -> Any:
    """`_downsample` through an on-disk cache keyed by the file's bytes, pitch and scale."""
    from sahmr.scene.points import ScenePoints

    cache = Path(cache_dir) / "scene_points" if cache_dir is not None else (
        default_points_cache_dir())
    file = _points_cache_path(path, voxel_size, scale, cache)
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        logger.info("scene points cache hit: %s", file)
        return ScenePoints(arrays["points"], arrays.get("normals"), arrays.get("colors"),
                           up_axis=scene.up_axis, voxel_size=voxel_size)
    points = _downsample(scene, voxel_size)
    arrays = {"points": points.points}
    arrays.update({k: v for k in ("normals", "colors")
                   if (v := getattr(points, k)) is not None})
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, file)
    except OSError as exc:  # a read-only cache only costs time
        logger.warning("cannot cache scene points in %s: %s", cache, exc)
    return points


def load_scene_data(
    path: str | Path,
    *,
    name: str | None = None,
    scale: float = 1.0,
    up_axis: str = "z",
    voxel_size: float = SCENE_VOXEL_SIZE_M,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> SceneData:
    """Load, check and down-sample a scan (the down-sampled points are cached on disk).

    Args:
        path: A scan `sahmr.scene.io.load_scene` reads (``.ply``, ``.obj``, ``.glb``, ``.npz``).
        name: Scene id (default: the file's parent folder name for ``mesh.*``, else the stem).
        scale: File units -> metres (0.001 for millimetres).
        up_axis: Gravity-up axis of the scan frame.
        voxel_size: Down-sampling pitch, metres (the models are trained on 2 cm).
        cache_dir: Cache root: points go to ``<cache_dir>/scene_points`` (default
            `default_points_cache_dir`).
        use_cache: Read / write that cache.

    Returns:
        `SceneData`.

    Raises:
        MissingFileError: Missing or unreadable file.
        ScanUnitsError: The extent is implausible for metres (> 100 m).
        InputError: Any other unreadable content.
    """
    from sahmr.scene.io import SceneMesh, load_scene

    p = require_file(path, "scene scan")
    timer = StageTimer()
    with timer("load_scene"):
        try:
            scene = load_scene(p, up_axis=up_axis, scale=scale)
        except ValueError as exc:
            msg = str(exc)
            if "extent" in msg and "--scale" in msg:
                from sahmr.inference.errors import ScanUnitsError

                raise ScanUnitsError(msg) from exc
            raise InputError(msg) from exc
    xyz = scene.vertices if isinstance(scene, SceneMesh) else scene.points
    extent = check_scan_extent(xyz, p, scale)
    with timer("downsample_scene"):
        if use_cache:
            points = _cached_downsample(p, scene, voxel_size, scale, cache_dir)
        else:
            points = _downsample(scene, voxel_size)
    if len(points) == 0:
        raise InputError(f"{p}: no scene points after down-sampling")
    if name is None:
        name = p.parent.name if p.stem == "mesh" else p.stem
    logger.info("scene %s: %d points at %.3f m, extent %.1f m", name, len(points), voxel_size,
                extent)
    return SceneData(
        name=name,
        path=p,
        mesh=scene if isinstance(scene, SceneMesh) else None,
        points=points,
        up_axis=up_axis,
        scale=scale,
        extent_m=extent,
        timings=dict(timer.seconds),
    )


# ---------------------------------------------------------------------------- frames


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


def check_frame_camera(frame: FrameSpec, scene: SceneData, hint: str = "") -> None:
    """Check that the frame's camera can see its person in the scan, before any model runs:
    its centre inside the scan, gravity roughly image-up, the person box looking at scan
    surfaces a person can stand among (`sahmr.scene.camera_checks`).

    Args:
        frame: The frame (camera and person box).
        scene: The scan.
        hint: Appended to the message (how to go on anyway).

    Raises:
        CameraError: One line naming the camera and what fails; when the inverse matrix
            passes, that the extrinsics look like camera-to-world.
    """
    from sahmr.scene.camera_checks import OddCameraError, check_camera_view

    cam = frame.camera
    source = f"camera {cam.path}" if cam.path else f"camera of frame {frame.name}"
    try:
        check_camera_view(scene.points_world, cam.K, cam.T_w2c, frame.bbox, scene.up_axis,
                          source)
    except OddCameraError as exc:
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
    in the scan (`check_frame_camera`, unless ``check_camera`` is false). Needs no model, so
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
        check_camera_sees_scan(scene.points_world, cam.K, cam.T_w2c, (W, H),
                               FRUSTUM_NEAR_M, FRUSTUM_FAR_M)
        inputs = frame_inputs_from_image(image, bbox, cam.K, cam.T_w2c, scene.bank(device),
                                         scene.name, device=device)
    n = 0 if inputs.scene_points_cam is None else int(inputs.scene_points_cam.shape[0])
    check_frustum(n, bbox, FRUSTUM_NEAR_M, FRUSTUM_FAR_M)
    if check_camera:
        check_frame_camera(frame, scene, " (check_camera=False goes on anyway)")
    return PreparedFrame(image, inputs, dict(timer.seconds))


# ---------------------------------------------------------------------------- methods


@dataclass
class LoadedMethod:
    """A method restored from a checkpoint.

    Attributes:
        module: The method (eval mode) with ``predict(inputs) -> BodyPrediction``.
        name: Method name (``--method``, or the checkpoint's model class).
        checkpoint: The file.
        config: The checkpoint's resolved config (OmegaConf DictConfig).
        device: Where it runs.
    """

    module: nn.Module
    name: str
    checkpoint: Path
    config: Any
    device: torch.device


_CHECKPOINT_PACKAGE = "sahmr"
_CHECKPOINT_FOLDER = "checkpoints"


def bundled_checkpoint(method: str = "sahmr") -> Path:
    """The shipped checkpoint of a method: ``sahmr/checkpoints/<method>_small.pt`` (or
    ``<method>.pt``), found with importlib.resources.

    Raises:
        CheckpointError: None is shipped for the method; the message names the files looked
            for and how to pass one.
    """
    from importlib.resources import files

    folder = files(_CHECKPOINT_PACKAGE).joinpath(_CHECKPOINT_FOLDER)
    tried = [folder.joinpath(f"{method}_small.pt"), folder.joinpath(f"{method}.pt")]
    for cand in tried:
        if cand.is_file():
            return Path(str(cand))
    raise CheckpointError(
        f"no shipped checkpoint for method {method!r}: {tried[0]} is missing. Train one "
        f"(tools/train.py exp={method}_small) and pass --checkpoint PATH"
    )


def check_method_checkpoint(path: str | Path) -> Path:
    """Check a checkpoint before any slow work: a readable, weights-only sahmr file whose
    stored config builds only the project's own classes (`sahmr.engine.safe_config`).

    Returns:
        The path.

    Raises:
        MissingFileError: No file.
        CheckpointError: Unreadable, holding pickled objects, or a refused config (one line
            naming the file).
    """
    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    p = require_file(path, "checkpoint")
    try:
        checkpoint_config(load_checkpoint(p), p)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(
            text if text.startswith(str(p)) else f"cannot load checkpoint {p}: {text}"
        ) from exc
    return p


def load_method_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", *, name: str | None = None
) -> LoadedMethod:
    """Build a method from a sahmr checkpoint (`sahmr.engine.checkpoint.load_method`).

    Raises:
        MissingFileError: No file.
        CheckpointError: Not a sahmr checkpoint, or the model cannot be built / loaded, or it
            has no ``predict``.
    """
    from sahmr.engine.checkpoint import load_method

    p = require_file(path, "checkpoint")
    try:
        module, cfg = load_method(p, device)
    except (ValueError, RuntimeError, KeyError, TypeError, EOFError) as exc:
        text = " ".join(str(exc).split())  # one line; engine errors already name the file
        raise CheckpointError(
            text if text.startswith(str(p)) else f"cannot load checkpoint {p}: {text}"
        ) from exc
    except Exception as exc:  # hydra wraps instantiation errors in its own types
        text = " ".join(str(exc).split())[:500]
        raise CheckpointError(f"cannot build the model of {p}: {text}") from exc
    if not callable(getattr(module, "predict", None)):
        raise CheckpointError(
            f"{p}: {type(module).__name__} has no predict(inputs) -> BodyPrediction (a root/"
            "contact network alone cannot place a body)"
        )
    if name is None:
        target = str(cfg.get("model", {}).get("_target_", type(module).__name__))
        name = target.rsplit(".", 1)[-1].lower()
    return LoadedMethod(module, name, p, cfg, torch.device(device))


# ---------------------------------------------------------------------------- refinement


class SceneFitRefiner:
    """PROX-style scene fitting after a parametric method ("HMR + scene fitting").

    The method's SMPL-format parameters start `sahmr.optim.scene_fit.SceneFitter` (staged
    SMPLify with the scene SDF's penetration and contact terms, known camera). The keypoints
    fitted are the person detector's when the frame has them (the demo without ``--bbox``),
    weighted by their confidences; otherwise the method's own 24 joints projected into the
    full image: the fit keeps the image evidence the method saw and moves the body out of the
    scene and onto nearby surfaces. Contact regions predicted by the
    method (RCNet-style points) restrict which regions are pulled, when present.

    Args:
        body: `sahmr.body.BodyModel` (the method's body); moved to ``device``, so pass an
            instance of its own.
        iterations: Adam steps per fitting stage (`default_prox_stages`).
        lr: Adam step size.
        device: Where the fit runs.
    """

    def __init__(self, *, body: nn.Module, iterations: int = 40, lr: float = 0.02,
                 device: torch.device | str = "cpu") -> None:
        from sahmr.optim.priors import GaussianMixturePrior
        from sahmr.optim.scene_fit import SceneFitter, default_prox_stages

        self.fitter = SceneFitter(
            body_model=body,
            pose_prior=GaussianMixturePrior.from_asset(),
            stages=default_prox_stages(iterations, lr),
        ).to(device)
        self.last_seconds = 0.0

    def refine(self, pred: BodyPrediction, inputs: FrameInputs, sdf: Any,
               keypoints2d: Tensor | None = None,
               keypoint_weights: Tensor | None = None) -> BodyPrediction:
        """Fit the predicted bodies in the scene.

        Args:
            pred: The method's prediction (camera frame) with ``params``.
            inputs: The frames' inputs (``K``, ``T_w2c``).
            sdf: The scene's `sahmr.scene.sdf.SDFGrid` (world frame).
            keypoints2d: Optional Tensor (B, 24, 2) detected SMPL joints, pixels of ``K``
                (default: the method's joints projected).
            keypoint_weights: Optional Tensor (B, 24) their confidences.

        Returns:
            A `BodyPrediction` of the fitted bodies (contact points kept from ``pred``).

        Raises:
            InputError: The method gives no SMPL-format parameters, or there is no SDF.
        """
        from sahmr.geometry.cameras import project
        from sahmr.optim.smplify import SMPLParams

        keys = ("betas", "global_orient", "body_pose", "transl")
        if pred.params is None or not all(k in pred.params for k in keys):
            raise InputError("scene fitting needs a method that predicts SMPL-format "
                             "parameters (hmr, spin); this one regresses vertices only")
        if sdf is None:
            raise InputError("scene fitting needs the scan as a mesh (for its SDF)")
        device = self.fitter.vertex_region.device
        K = inputs.K.to(device).float()
        T = inputs.T_w2c.to(device).float()
        init = SMPLParams(**{k: pred.params[k].detach().to(device).float() for k in keys})
        weights = None
        if keypoints2d is not None:
            keypoints = keypoints2d.to(device).float()
            if keypoint_weights is not None:
                weights = keypoint_weights.to(device).float()
        else:
            with torch.no_grad():
                joints = self.fitter.body_model(**init.as_dict()).joints
            keypoints = project(K, joints)
        regions = None
        if pred.contact_point_region is not None and pred.contact_point_region.numel():
            R = self.fitter.num_regions
            regions = torch.zeros(inputs.batch_size, R, dtype=torch.bool, device=device)
            b = pred.contact_batch_idx.to(device)
            r = pred.contact_point_region.to(device).long()
            regions[b, (r - 1).clamp(0, R - 1)] = True
        res = self.fitter.fit(init, keypoints, K, T, [sdf], contact_regions=regions,
                              keypoint_weights=weights)
        self.last_seconds = res.seconds
        return BodyPrediction(
            verts_cam=res.vertices,
            joints_cam=res.joints,
            root_cam=res.joints[:, 0],
            contact_points_cam=pred.contact_points_cam,
            contact_point_region=pred.contact_point_region,
            contact_batch_idx=pred.contact_batch_idx,
            params=res.params.as_dict(),
        )


# ---------------------------------------------------------------------------- results


@dataclass
class FramePrediction:
    """Everything the demo writes for one frame (numpy, world frame unless named).

    Attributes:
        name: Frame name.
        image: (H, W, 3) uint8 image as used.
        camera: The camera.
        bbox: (4,) person box.
        prediction: The method's `BodyPrediction` (B = 1, camera frame, CPU).
        verts_cam: (V, 3) body vertices, camera frame.
        verts_world: (V, 3) body vertices, world frame.
        joints_world: (J, 3) the method's joints, world frame.
        root_world: (3,) root, world frame.
        contact_points_world: (P, 3) predicted contact scene points, world frame.
        contact_point_region: (P,) int regions 1..7.
        params_cam: SMPL-format parameters in the camera frame, or None.
        params_world: The same parameters for the world frame, or None.
        body_contact: (V,) int region of each vertex within 7 cm of the scan (SDF), or None.
        penetration: PenE figures (mm, counts), or None without an SDF.
        gt_errors: Errors against the ground truth (mm), or None.
        frustum_points: Scene points in the bbox frustum.
        timings: Seconds per stage.
        params_source: ``"regressed"`` (the method's parameters), ``"fitted"`` (a body fitted
            to the method's vertices, `sahmr.optim.fit_vertices`), either with
            ``"+scene_fit"`` after a `SceneFitRefiner`, or None without parameters.
        method_mesh_distance_mm: Mean distance of the parameters' mesh (``verts_world``) to
            the method's own vertices, mm (the fit's vertex error when fitted), or None.
        verts_method_world: (V, 3) the method's own vertices, world frame, when the body
            written is the parameters' mesh; None otherwise.
    """

    name: str
    image: np.ndarray
    camera: CameraSpec
    bbox: np.ndarray
    prediction: BodyPrediction
    verts_cam: np.ndarray
    verts_world: np.ndarray
    joints_world: np.ndarray
    root_world: np.ndarray
    contact_points_world: np.ndarray
    contact_point_region: np.ndarray
    params_cam: dict[str, np.ndarray] | None
    params_world: dict[str, np.ndarray] | None
    body_contact: np.ndarray | None
    penetration: dict[str, float] | None
    gt_errors: dict[str, float] | None
    frustum_points: int
    timings: dict[str, float]
    params_source: str | None = None
    method_mesh_distance_mm: float | None = None
    verts_method_world: np.ndarray | None = None


_PARAM_KEYS = ("betas", "global_orient", "body_pose", "transl")


def _has_params(params: dict[str, Tensor] | None) -> bool:
    return params is not None and all(k in params for k in _PARAM_KEYS)


def params_cam_to_world(
    params_cam: dict[str, Tensor], T_w2c: Tensor, body: nn.Module
) -> dict[str, Tensor]:
    """SMPL-format parameters of a camera-frame body, re-expressed for the world frame.

    SMPL rotates about the rest pelvis ``J0(betas)`` before translating, so with
    ``T_c2w = [R | t]``: ``global_orient_w = R @ global_orient_c`` and
    ``transl_w = R (J0 + transl_c) + t - J0``.

    Args:
        params_cam: ``betas`` (B, NB), ``global_orient`` (B, 3), ``body_pose`` (B, 69),
            ``transl`` (B, 3) (camera frame).
        T_w2c: (B, 4, 4) world -> camera.
        body: `sahmr.body.BodyModel` (gives ``J0``).

    Returns:
        The parameters with world-frame ``global_orient`` and ``transl``.
    """
    from sahmr.geometry.cameras import invert_rigid
    from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    betas = params_cam["betas"]
    B = betas.shape[0]
    dtype = body.shapedirs.dtype
    with torch.no_grad():
        rest = body(
            betas=betas.to(dtype),
            global_orient=torch.zeros(B, 3, dtype=dtype),
            body_pose=torch.zeros(B, 69, dtype=dtype),
        )
    J0 = rest.joints[:, 0].to(params_cam["transl"].dtype)
    T_c2w = invert_rigid(T_w2c.to(J0.dtype))
    R, t = T_c2w[:, :3, :3], T_c2w[:, :3, 3]
    orient = matrix_to_axis_angle(R @ axis_angle_to_matrix(params_cam["global_orient"].to(R)))
    transl = (R @ (J0 + params_cam["transl"])[..., None])[..., 0] + t - J0
    out = dict(params_cam)
    out["global_orient"] = orient
    out["transl"] = transl
    return out


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


def _load_gt(path: Path, body: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth ``(vertices_world (V, 3), root_world (3,))`` from a params/vertices npz.

    Raises:
        InputError: Unreadable, pickled, or arrays of the wrong shape / not finite.
    """
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable ground-truth .npz ({exc})") from None
    num_v = int(body.v_template.shape[0])
    try:
        if "vertices" in data:
            v = np.asarray(data["vertices"], np.float64)
            if v.shape != (num_v, 3):
                raise ValueError(f"vertices {v.shape}, not ({num_v}, 3)")
            reg = np.asarray(body.J_regressor.detach().cpu().numpy(), np.float64)
            root = np.asarray(data["root"], np.float64) if "root" in data else (reg @ v)[0]
            if root.size != 3:
                raise ValueError(f"root {root.shape}, not (3,)")
            root = root.reshape(3)
        else:
            keys = ("betas", "global_orient", "body_pose", "transl")
            if not all(k in data for k in keys):
                raise ValueError(f"needs 'vertices' or {keys}; has {sorted(data)}")
            dtype = body.shapedirs.dtype
            with torch.no_grad():
                out = body(**{k: torch.as_tensor(np.asarray(data[k], np.float64),
                                                 dtype=dtype).reshape(1, -1) for k in keys})
            v, root = out.vertices[0].double().numpy(), out.joints[0, 0].double().numpy()
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise InputError(f"{path}: not a usable ground-truth file ({' '.join(str(exc).split())})"
                         ) from None
    if not (np.isfinite(v).all() and np.isfinite(root).all()):
        raise InputError(f"{path}: the ground truth holds NaN or infinite values")
    return v, root


class InferencePipeline:
    """Runs one method on images of one scan.

    Args:
        method: The loaded method.
        scene: The scan.
        body: `sahmr.body.BodyModel` matching the method's mesh (faces, contact regions,
            SMPL parameters -> vertices).
        sdf: Optional scene SDF (`sahmr.scene.sdf.SDFGrid`) for penetration and contact; None
            builds it on first use when ``penetration`` is on and the scan is a mesh.
        penetration: Compute penetration / SDF contact figures.
        sdf_voxel_size: SDF pitch, metres, when built here.
        sdf_cache_dir: SDF cache folder (default `sahmr.scene.sdf.default_cache_dir`).
        contact_threshold: Vertex-scene distance counted as contact, metres.
        refiner: Optional `SceneFitRefiner` run on every prediction (needs the SDF).
        fit_body: When the method gives no SMPL-format parameters (vertex regressors), fit a
            body to its vertices (`sahmr.optim.fit_vertices.VertexFitter`, camera frame, on
            the method's device). Whenever parameters exist, the body written is their mesh,
            so the saved parameters reproduce it.
        fit_iterations: Iterations of that fit (default: the fitter's).
        check_camera: Check each frame's camera against the scan before predicting
            (`check_frame_camera`); false when the caller has checked (or goes on anyway).
    """

    def __init__(
        self,
        *,
        method: LoadedMethod,
        scene: SceneData,
        body: nn.Module,
        sdf: Any = None,
        penetration: bool = True,
        sdf_voxel_size: float = 0.02,
        sdf_cache_dir: str | Path | None = None,
        contact_threshold: float | None = None,
        refiner: SceneFitRefiner | None = None,
        fit_body: bool = True,
        fit_iterations: int | None = None,
        check_camera: bool = True,
    ) -> None:
        from sahmr.evaluation.metrics import DEFAULT_CONTACT_THRESHOLD_M

        self.method = method
        self.scene = scene
        self.body = body
        self.penetration = penetration
        self.sdf_voxel_size = sdf_voxel_size
        self.sdf_cache_dir = sdf_cache_dir
        self.contact_threshold = (
            DEFAULT_CONTACT_THRESHOLD_M if contact_threshold is None else contact_threshold
        )
        self._sdf = sdf
        self._exact_sdf: Any = None  # the grid + the scan's mesh, for exact vertex distances
        self.refiner = refiner
        self.fit_body = fit_body
        self.fit_iterations = fit_iterations
        self.check_camera = check_camera
        self._fitter: nn.Module | None = None
        self.sdf_seconds = 0.0
        self.sdf_note = ""

    @property
    def device(self) -> torch.device:
        return self.method.device

    def sdf(self) -> Any:
        """The scene SDF (built or loaded from the cache on first call), or None."""
        wanted = self.penetration or self.refiner is not None
        if self._sdf is None and wanted and not self.sdf_note:
            if self.scene.mesh is None:
                self.sdf_note = "the scan is a point cloud: no SDF, no penetration figures"
                return None
            from sahmr.scene.sdf import load_or_build_sdf

            start = time.perf_counter()
            self._sdf = load_or_build_sdf(
                self.scene.path,
                voxel_size=self.sdf_voxel_size,
                cache_dir=self.sdf_cache_dir,
                up_axis=self.scene.up_axis,
                scale=self.scene.scale,
            )
            self.sdf_seconds = time.perf_counter() - start
        return self._sdf

    def run(self, frame: FrameSpec, prepared: PreparedFrame | None = None) -> FramePrediction:
        """Predict the body of one frame and everything derived from it.

        Args:
            frame: The frame.
            prepared: Its `prepare_frame` result when already made (else made here).

        Raises:
            InputError: Bad input (the frame is skipped in batch mode).
        """
        if prepared is None:
            prepared = prepare_frame(frame, self.scene, self.device,
                                     check_camera=self.check_camera)
        timer = StageTimer(self.device)
        timer.seconds.update(prepared.timings)
        image, inputs = prepared.image, prepared.inputs.to(self.device)
        with timer("predict"), torch.no_grad():
            pred = self.method.module.predict(inputs)
        params_source = "regressed" if _has_params(pred.params) else None
        if params_source is None and self.fit_body:
            with timer("fit_body"):
                pred = self._fit_params(pred)
            params_source = "fitted"
        if self.refiner is not None:
            with timer("sdf_load"):
                sdf = self.sdf()
            with timer("scene_fit"):
                kp = kw = None
                if frame.keypoints2d is not None:
                    kp = torch.as_tensor(frame.keypoints2d, dtype=torch.float32)[None]
                    if frame.keypoint_confidence is not None:
                        kw = torch.as_tensor(frame.keypoint_confidence,
                                             dtype=torch.float32)[None]
                pred = self.refiner.refine(pred, inputs, sdf, kp, kw)
            params_source = f"{params_source}+scene_fit"
        pred = pred.to("cpu")
        with timer("to_world"):
            T = inputs.T_w2c.cpu().double()
            verts_cam = pred.verts_cam.double()
            verts_world = pred.verts_world(T)[0].numpy()
            from sahmr.geometry.cameras import camera_to_world, transform_points

            joints_world = camera_to_world(T, pred.joints_cam.double())[0].numpy()
            root_world = camera_to_world(T, pred.root_cam.double()[:, None])[0, 0].numpy()
            cpts = np.zeros((0, 3))
            cregion = np.zeros(0, np.int64)
            if pred.contact_points_cam is not None and pred.contact_points_cam.shape[0]:
                cpts = camera_to_world(T[0], pred.contact_points_cam.double()).numpy()
                cregion = _np(pred.contact_point_region).astype(np.int64)
            params_cam = params_world = None
            verts_method_world = distance_mm = None
            if _has_params(pred.params):
                params_cam = {k: v.detach().double() for k, v in pred.params.items()}
                params_world = params_cam_to_world(params_cam, T, self.body)
                # The body written is the parameters' mesh (world frame), so that the saved
                # parameters reproduce body_world.ply; the method's vertices are kept beside.
                body_out = self._param_body(params_world)
                verts_method_world = verts_world
                verts_world = body_out.vertices[0].double().numpy()
                distance_mm = float(np.linalg.norm(verts_world - verts_method_world,
                                                   axis=1).mean() * 1000.0)
                verts_cam = transform_points(T, torch.from_numpy(verts_world)[None])
                joints_world = self._param_joints(body_out, pred.joints_cam.shape[1],
                                                  joints_world)
                params_cam = {k: v.numpy()[0] for k, v in params_cam.items()}
                params_world = {k: v.numpy()[0] for k, v in params_world.items()}
        body_contact, pen = self._scene_figures(verts_world, timer)
        gt_errors = None
        if frame.gt_path is not None:
            with timer("gt_errors"):
                gt_errors = self._gt_errors(frame.gt_path, verts_world, root_world)
        return FramePrediction(
            name=frame.name,
            image=image,
            camera=frame.camera,
            bbox=np.asarray(frame.bbox, np.float64),
            prediction=pred,
            verts_cam=verts_cam[0].numpy(),
            verts_world=verts_world,
            joints_world=joints_world,
            root_world=root_world,
            contact_points_world=cpts,
            contact_point_region=cregion,
            params_cam=params_cam,
            params_world=params_world,
            body_contact=body_contact,
            penetration=pen,
            gt_errors=gt_errors,
            frustum_points=int(inputs.scene_points_cam.shape[0]),
            timings=dict(timer.seconds),
            params_source=params_source if params_cam is not None else None,
            method_mesh_distance_mm=distance_mm,
            verts_method_world=verts_method_world,
        )

    def _fit_params(self, pred: BodyPrediction) -> BodyPrediction:
        """``pred`` with camera-frame parameters fitted to its vertices (vertices kept)."""
        from dataclasses import replace

        from sahmr.optim.fit_vertices import VertexFitter

        verts = pred.verts_cam.detach().float()
        if self._fitter is None:
            kwargs = {} if self.fit_iterations is None else {"iterations": self.fit_iterations}
            self._fitter = VertexFitter(body_model=self.body, **kwargs)
        if verts.shape[1] != self._fitter.num_vertices:
            raise InputError(
                f"the method predicts {verts.shape[1]} vertices, the body model has "
                f"{self._fitter.num_vertices}: the checkpoint's body does not match")
        res = self._fitter.fit(verts)
        logger.info("fitted a body to the method's vertices: %.2f mm mean vertex error",
                    float(res.vertex_error.mean()) * 1000.0)
        return replace(pred, params=res.params.as_dict())

    def _param_body(self, params_world: dict[str, Tensor]) -> Any:
        """`sahmr.body.BodyOutput` (B = 1) of world-frame parameters, on the body's device."""
        ref = self.body.shapedirs
        with torch.no_grad():
            return self.body(**{k: params_world[k].to(ref) for k in _PARAM_KEYS})

    @staticmethod
    def _param_joints(body_out: Any, num_joints: int, method_joints: np.ndarray) -> np.ndarray:
        """The parametric body's joints of the method's joint set (24 SMPL, 17 H36M or 14
        LSP), world frame; the method's own joints for any other set."""
        by_count = {t.shape[1]: t for t in (body_out.joints, body_out.joints_h36m,
                                             body_out.joints14)}
        if num_joints not in by_count:
            return method_joints
        return by_count[num_joints][0].double().cpu().numpy()

    def _scene_figures(
        self, verts_world: np.ndarray, timer: StageTimer
    ) -> tuple[np.ndarray | None, dict[str, float] | None]:
        """Penetration figures and per-vertex contact regions from the scene SDF."""
        from sahmr.evaluation.metrics import MM_PER_M, penetration

        if not self.penetration:
            return None, None
        with timer("sdf_load"):
            sdf = self.sdf()
        if sdf is None:
            return None, None
        with timer("penetration"):
            d = self._vertex_sdf(sdf, verts_world)
            figs = {k: float(v[0]) for k, v in penetration(d[None]).items()}
            figs["max_depth_mm"] = float(max(0.0, -float(d.min())) * MM_PER_M)
            labels = torch.as_tensor(np.asarray(self.body.topology.contact_labels[0], np.int64))
            contact = vertex_contact(d, labels, self.contact_threshold).numpy()
        return contact, {
            "pene_mm": figs["pene"],
            "pen_count": int(figs["pen_count"]),
            "pen_depth_mean_mm": figs["pen_depth_mean"],
            "pen_fraction_percent": figs["pen_fraction"],
            "max_depth_mm": figs["max_depth_mm"],
            "sdf_voxel_size_m": float(sdf.voxel_size),
        }

    def _vertex_sdf(self, sdf: Any, verts_world: np.ndarray) -> Tensor:
        """Signed distances (V,) float64 of the body's vertices, as the evaluator takes them:
        exact point-to-mesh distances wherever the grid reads inside or near a surface."""
        from sahmr.scene.sdf import ExactSceneSDF, SDFGrid

        if isinstance(sdf, SDFGrid) and self.scene.mesh is not None:
            if self._exact_sdf is None or self._exact_sdf.grid is not sdf:
                self._exact_sdf = ExactSceneSDF(sdf, self.scene.mesh.vertices,
                                                self.scene.mesh.faces)
            sdf = self._exact_sdf
        points = torch.as_tensor(verts_world, dtype=torch.float64)
        if hasattr(sdf, "sample_exact"):
            band = self.contact_threshold + 3 * float(sdf.voxel_size)
            return sdf.sample_exact(points, band).double()
        return sdf.sample(points.float()).double()

    def _gt_errors(self, path: Path, verts_world: np.ndarray, root_world: np.ndarray
                   ) -> dict[str, float]:
        """Errors against the ground truth: the evaluator's `body_errors` (SMPL joints,
        pelvis = J_regressor row 0 of each mesh), plus the method's own root output."""
        from sahmr.evaluation.evaluator import body_errors
        from sahmr.evaluation.metrics import mesh_edges, root_error

        gt_v, _ = _load_gt(path, self.body)
        if gt_v.shape != verts_world.shape:
            raise InputError(f"{path}: ground truth has {len(gt_v)} vertices, the prediction "
                             f"{len(verts_world)}")
        pv = torch.as_tensor(verts_world, dtype=torch.float64)[None]
        gv = torch.as_tensor(gt_v, dtype=torch.float64)[None]
        reg = self.body.J_regressor
        reg = (reg.to_dense() if reg.is_sparse else reg).detach().cpu().double()
        edges = mesh_edges(torch.as_tensor(np.asarray(self.body.faces, np.int64)))
        errs = body_errors(pv, gv, reg, pelvis=0, edges=edges)
        out = {f"{k}_mm": float(v[0]) for k, v in errs.items() if k != "edge_error"}
        out["edge_error_percent"] = float(errs["edge_error"][0])
        # the method's own root estimate (RCNet's for SA-HMR), which need not be its mesh's
        # pelvis: root_error_mm above is the mesh's, as the evaluator scores every method
        gt_pelvis = (reg @ gv[0])[0]
        out["method_root_error_mm"] = float(
            root_error(torch.as_tensor(root_world, dtype=torch.float64)[None], gt_pelvis[None])[0]
        )
        return out
