"""PROX (Hassan et al., ICCV 2019) loader: recordings, calibration, scans, SDFs, PROXD fits.

Layout read (``root`` = the extracted qualitative or quantitative dataset; PROXD fits are a
separate download, put (or link) them under ``root/PROXD`` or pass ``fits_dir``):

| path under root                              | gives                                            |
| -------------------------------------------- | ------------------------------------------------ |
| ``recordings/<rec>/Color/<frame>.jpg``       | 1920x1080 RGB frame, stored **mirrored**         |
| ``calibration/Color.json``                   | colour camera: ``camera_mtx`` (3x3), ``f``,      |
|                                              | ``c``, ``k`` (5 OpenCV distortion coefficients), |
|                                              | ``view_mtx`` (3x4), ``R``/``T``                  |
| ``cam2world/<scene>.json``                   | 4x4 camera -> world (scan) transform, metres     |
| ``scenes/<scene>.ply``                       | scene scan mesh, world frame                     |
| ``sdf/<scene>_sdf.npy``                      | SDF values, dim^3, indexed ``[ix, iy, iz]``      |
| ``sdf/<scene>.json``                         | SDF grid ``min`` (3,), ``max`` (3,), ``dim``     |
| ``PROXD/<rec>/results/<frame>/000.pkl``      | SMPL-X fit, camera frame (pickle, opt-in)        |
| ``keypoints/<rec>/<frame>_keypoints.json``   | OpenPose 2D keypoints (optional; bbox)           |

``<rec>`` is ``<scene>_<subjectID>_<seq>`` (e.g. ``N3OpenArea_00157_01``); ``<frame>`` looks like
``s001_frame_00001__00.00.00.029`` (the number after ``frame_`` is the frame index).
Subjects 162, 3452, 159 and 3403 are female (PROX's own visualisation script), others male.

Mirroring: the Color jpgs are stored flipped left-right. PROX's fitting config (``flip: True``)
and SA-HMR's PROX loader flip them back (``cv2.flip(img, 1)``) before using the intrinsics of
``Color.json`` and the camera-frame fits. This loader does the same: returned images are
un-mirrored (``image[:, ::-1]``) so that ``K`` (taken from ``camera_mtx``) and ``T_w2c`` follow the
OpenCV convention. OpenPose keypoints shipped with PROX are taken to be in un-mirrored pixels
(PROX's fitting uses them unchanged with the flipped image); pass ``keypoints_mirrored=True``
if yours were computed on the raw jpgs. Lens distortion (``k``) is returned but not applied:
PROX's own fitting and projection ignore it for the colour camera.

PROXD pickles (keys: ``camera_rotation`` (1,3,3), ``camera_translation`` (1,3), ``betas`` (1,10),
``global_orient`` (1,3), ``transl`` (1,3), ``body_pose`` (1,63) axis-angle decoded from VPoser,
``pose_embedding`` (1,32), ``left/right_hand_pose`` (1,12) PCA, ``jaw_pose``, ``leye_pose``,
``reye_pose`` (1,3), ``expression`` (1,10)) are read only with ``allow_pickle=True``. Older
SMPLify-X outputs store the 32-D VPoser code as ``body_pose``; it is kept as
``vposer_embedding``. The fits are in the fitting camera's frame: ``x_cam = camera_rotation @ x
+ camera_translation`` (identity / zero for PROXD's fixed camera), then the world (scan)
frame via ``cam2world``.

SMPL-X vs SMPL: `Sample`'s SMPL-format fields stay ``None``. ``Sample.extra`` holds
``smplx_params_fit`` (fit frame; PROXD's fixed camera makes it the colour-camera frame),
``T_fit2cam`` and ``T_fit2world`` (4x4; ``vertices_world = T_fit2world @ vertices`` for any
SMPL-X output of those params) and, when a ``root_joint_fn`` (rest pelvis of the SMPL-X model
for given betas, e.g. `sahmr.data.smplx_params.RootJointFromModelFile` on the user's
SMPLX_<GENDER>.npz) is given, ``smplx_params_world`` whose ``global_orient``/``transl`` are
rewritten for the world frame (rotation is about the pelvis, so this needs the model).
With ``targets`` (`sahmr.data.smplx_targets.SmplTargets`: the user's SMPL-X model + the SMPL-X
-> SMPL transfer matrix) samples are training samples: SMPL ``vertices_world`` /
``joints_world``, ``vertex_contact`` by distance to the scan (`sahmr.scene.contact`), contact
points, a box from the body's projection, and with ``visibility`` the generator's visibility
fields (`sahmr.data.visibility`): ``Sample.occlusion``, the crop's person mask
``extra["mask"]`` and per-vertex ``extra["vertex_visible"]``. Layouts, splits and commands:
docs/datasets.md.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from sahmr.data.safe_pickle import load_data_pickle
from sahmr.data.sample import RootJointFn, Sample, crop_around_bbox
from sahmr.data.smplx_params import clean_smplx_params, transform_smplx_params
from sahmr.data.smplx_targets import (
    ScanPoints,
    SmplTargets,
    contact_targets,
    distance_contact,
    project_bbox,
    scan_distance,
)
from sahmr.data.visibility import SceneCasters, frame_visibility
from sahmr.geometry.crops import DEFAULT_CROP_SIZE

logger = logging.getLogger(__name__)

PROX_FEMALE_SUBJECTS = frozenset({162, 3452, 159, 3403})
"""Subject ids PROX marks female (prox/viz/viz_fitting.py); all other subjects are male."""

_FRAME_NUMBER = re.compile(r"frame_(\d+)")


@dataclass(frozen=True)
class ProxCamera:
    """The PROX Kinect colour camera of one scene, for un-mirrored images.

    Attributes:
        K: (3, 3) float64 intrinsics, pixels (OpenCV convention, un-mirrored image).
        dist: (5,) float64 OpenCV distortion ``k1, k2, p1, p2, k3`` (not applied anywhere).
        T_c2w: (4, 4) float64 camera -> world (scan) rigid transform, metres.
        T_w2c: (4, 4) float64 world -> camera, the inverse of ``T_c2w``.
    """

    K: np.ndarray
    dist: np.ndarray
    T_c2w: np.ndarray
    T_w2c: np.ndarray


@dataclass(frozen=True)
class ProxSDF:
    """A PROX scene SDF resampled to this project's grid convention.

    ``values[k, j, i]`` is the signed distance (metres, negative inside the scene geometry) at
    the world point ``origin + (i, j, k) * voxel_size``, i.e. axes (D, H, W) = (z, y, x),
    matching the ``[z, y, x]`` order used for spconv. PROX stores ``dim^3`` samples indexed
    ``[ix, iy, iz]`` spanning ``min`` to ``max`` inclusive (PROX reads them with
    ``grid_sample`` on ``[-1, 1]``; POSA, which reuses these files, passes ``align_corners=True``),
    so the spacing is ``(max - min) / (dim - 1)`` per axis. (PROX's fitting code also computes
    a ``(max - min) / dim`` "voxel size", used only for its normals lookup.)

    Attributes:
        origin: (3,) float64 world position of sample ``(0, 0, 0)``, metres.
        voxel_size: (3,) float64 sample spacing per axis ``(x, y, z)``, metres.
        values: (D, H, W) float32 signed distances, indexed ``[z, y, x]``.
    """

    origin: np.ndarray
    voxel_size: np.ndarray
    values: np.ndarray

    @property
    def is_isotropic(self) -> bool:
        """Whether the spacing is the same along x, y and z (to 1e-6 relative)."""
        return bool(np.allclose(self.voxel_size, self.voxel_size[0], rtol=1e-6, atol=0.0))

    def to_scene_sdf(self) -> Any:
        """Converts to `sahmr.scene.sdf.SDFGrid(origin, voxel_size, values)`.

        Raises:
            ImportError: If `sahmr.scene.sdf` is not available.
            ValueError: If the grid is anisotropic (SDFGrid takes one float voxel size).
        """
        from sahmr.scene.sdf import SDFGrid  # type: ignore[import-not-found]

        if not self.is_isotropic:
            raise ValueError(
                f"PROX SDF spacing {self.voxel_size.tolist()} is anisotropic; SDFGrid takes a "
                "single voxel size (resample the grid first)"
            )
        return SDFGrid(
            origin=self.origin.copy(), voxel_size=float(self.voxel_size[0]), values=self.values
        )


def scene_of_recording(recording: str) -> str:
    """``<scene>_<subject>_<seq>`` -> ``<scene>``.

    Raises:
        ValueError: If the name does not have three ``_``-separated parts.
    """
    parts = recording.split("_")
    if len(parts) != 3:
        raise ValueError(f"PROX recording names are <scene>_<subject>_<seq>, got {recording!r}")
    return parts[0]


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"PROX {what} not found: {path}")
    with path.open("r", encoding="utf-8") as fh:
        return json.load(fh)


def load_prox_color_calibration(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``calibration/Color.json``.

    Uses ``camera_mtx`` when present (checked against ``f``/``c`` when both exist), else builds
    ``K`` from ``f`` (fx, fy) and ``c`` (cx, cy).

    Args:
        path: The JSON file.

    Returns:
        ``(K, dist)``: (3, 3) float64 and (5,) float64 (zeros when ``k`` is absent).

    Raises:
        ValueError: On missing keys or an inconsistent ``camera_mtx``.
    """
    data = _read_json(Path(path), "colour calibration")
    K_fc = None
    if "f" in data and "c" in data:
        (fx, fy), (cx, cy) = data["f"], data["c"]
        K_fc = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
    if "camera_mtx" in data:
        K = np.asarray(data["camera_mtx"], dtype=np.float64).reshape(3, 3)
        if K_fc is not None and not np.allclose(K, K_fc, rtol=1e-6, atol=1e-6):
            raise ValueError(f"{path}: camera_mtx {K.tolist()} disagrees with f/c")
    elif K_fc is not None:
        K = K_fc
    else:
        raise ValueError(f"{path}: needs 'camera_mtx' or 'f' and 'c'; keys {sorted(data)}")
    dist = np.zeros(5, dtype=np.float64)
    if "k" in data:
        k = np.asarray(data["k"], dtype=np.float64).reshape(-1)
        dist[: min(5, k.size)] = k[:5]
    return K, dist


def load_prox_cam2world(root: str | Path, scene: str) -> np.ndarray:
    """Reads ``cam2world/<scene>.json`` as a (4, 4) float64 camera -> world transform.

    Raises:
        ValueError: If the matrix is not 4x4 rigid.
    """
    T = np.asarray(_read_json(Path(root) / "cam2world" / f"{scene}.json", "cam2world"), np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"cam2world/{scene}.json must hold a 4x4 matrix, got {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"cam2world/{scene}.json is not a rigid transform")
    return T


def load_prox_camera(root: str | Path, scene: str) -> ProxCamera:
    """The colour camera of ``scene`` (intrinsics are shared by all PROX scenes).

    Args:
        root: Dataset root.
        scene: Scene name, e.g. ``"N3OpenArea"``.

    Returns:
        `ProxCamera` for un-mirrored images.
    """
    K, dist = load_prox_color_calibration(Path(root) / "calibration" / "Color.json")
    T_c2w = load_prox_cam2world(root, scene)
    T_w2c = np.eye(4)
    T_w2c[:3, :3] = T_c2w[:3, :3].T
    T_w2c[:3, 3] = -T_c2w[:3, :3].T @ T_c2w[:3, 3]
    return ProxCamera(K=K, dist=dist, T_c2w=T_c2w, T_w2c=T_w2c)


def load_prox_sdf(root: str | Path, scene: str) -> ProxSDF:
    """Reads ``sdf/<scene>.json`` + ``sdf/<scene>_sdf.npy`` into the ``[z, y, x]`` convention.

    Args:
        root: Dataset root.
        scene: Scene name.

    Returns:
        `ProxSDF` (call ``.to_scene_sdf()`` for `sahmr.scene.sdf.SDFGrid`).

    Raises:
        ValueError: On a size mismatch between the json ``dim`` and the npy.
    """
    sdf_dir = Path(root) / "sdf"
    meta = _read_json(sdf_dir / f"{scene}.json", "SDF metadata")
    grid_min = np.asarray(meta["min"], dtype=np.float64).reshape(3)
    grid_max = np.asarray(meta["max"], dtype=np.float64).reshape(3)
    dim = int(meta["dim"])
    if dim < 2:
        raise ValueError(f"sdf/{scene}.json: dim must be >= 2, got {dim}")
    npy = sdf_dir / f"{scene}_sdf.npy"
    if not npy.is_file():
        raise FileNotFoundError(f"PROX SDF values not found: {npy}")
    raw = np.load(npy, allow_pickle=False)
    if raw.size != dim**3:
        raise ValueError(f"{npy} has {raw.size} values, expected dim^3 = {dim**3}")
    values_xyz = raw.reshape(dim, dim, dim)
    values = np.ascontiguousarray(values_xyz.transpose(2, 1, 0), dtype=np.float32)
    return ProxSDF(origin=grid_min, voxel_size=(grid_max - grid_min) / (dim - 1), values=values)


def load_prox_scene_mesh(root: str | Path, scene: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``scenes/<scene>.ply`` (world frame) with trimesh, imported lazily.

    Returns:
        ``(vertices, faces)``: (Nv, 3) float64 metres and (Nf, 3) int64.
    """
    import trimesh

    path = Path(root) / "scenes" / f"{scene}.ply"
    if not path.is_file():
        raise FileNotFoundError(f"PROX scene scan not found: {path}")
    mesh = trimesh.load(path, process=False, force="mesh")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def read_prox_color_image(path: str | Path, *, unmirror: bool = True) -> np.ndarray:
    """Reads a PROX Color jpg as (H, W, 3) uint8 RGB, un-mirrored unless told otherwise."""
    from PIL import Image

    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(image[:, ::-1]) if unmirror else image


def bbox_from_openpose(
    path: str | Path, image_width: int, *, mirrored: bool = False, min_conf: float = 0.1
) -> np.ndarray | None:
    """Person box from an OpenPose ``*_keypoints.json`` (most confident person's body joints).

    Args:
        path: The keypoint file.
        image_width: W in pixels (used to un-mirror when ``mirrored``).
        mirrored: Whether the keypoints are in mirrored-image pixels.
        min_conf: Keypoints below this confidence are ignored.

    Returns:
        (4,) float64 ``xyxy`` tight box of the confident joints, or None if nobody is found.
    """
    data = _read_json(Path(path), "keypoints")
    best, best_score = None, 0.0
    for person in data.get("people", []):
        kp = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float64).reshape(-1, 3)
        good = kp[kp[:, 2] >= min_conf]
        score = float(good[:, 2].sum()) if len(good) >= 2 else 0.0
        if score > best_score:
            best, best_score = good, score
    if best is None:
        return None
    u = (image_width - 1) - best[:, 0] if mirrored else best[:, 0]
    return np.array([u.min(), best[:, 1].min(), u.max(), best[:, 1].max()], dtype=np.float64)


@dataclass(frozen=True)
class _ProxFrame:
    recording: str
    scene: str
    frame_name: str
    frame_index: int
    image_path: Path
    fit_path: Path | None


class ProxDataset(Dataset):
    """PROX frames with PROXD SMPL-X fits as `Sample`s (world = the scene scan's frame).

    Args:
        root: Dataset root (see the module docstring for the layout).
        recordings: Recording names to use; default all under ``recordings/``.
        allow_pickle: Opt-in to read the ``.pkl`` fits with the restricted unpickler. Without
            it, fits are not read and indexing a sample with a fit raises `PermissionError`.
        fits_dir: Folder holding ``<rec>/results/<frame>/000.pkl``; default ``root/PROXD``.
        fit_filename: Fit file inside each frame folder.
        require_fits: Skip frames without a fit file (default True); when False, such frames
            come with no body in ``extra``.
        frame_step: Keep every ``frame_step``-th frame of each recording.
        root_joint_fn: betas -> rest pelvis (3,) of the SMPL-X model, enabling
            ``extra["smplx_params_world"]``; see the module docstring.
        bboxes: Optional ``"<rec>/<frame>" -> (4,) xyxy`` boxes (un-mirrored pixels); take
            precedence over OpenPose boxes.
        keypoints_dir: Folder holding ``<rec>/<frame>_keypoints.json``; default
            ``root/keypoints``. Boxes from keypoints are enlarged by ``bbox_margin``.
        keypoints_mirrored: Whether the keypoints are in mirrored (raw jpg) pixels.
        bbox_margin: Relative enlargement of keypoint boxes (keypoints miss head top / feet).
        crop_size: Side of ``Sample.crop``.
        keep_image: Whether to return the full frame in ``Sample.image``.
        targets: `SmplTargets` giving SMPL vertices / joints (world frame) from the PROXD
            fits: makes the samples training samples (``vertices_world``, ``joints_world``,
            ``vertex_contact`` by distance to the scan with `sahmr.scene.contact`'s one
            definition, contact points = the closest scan point of each contact vertex, a
            box from the body's projection when none is given). Its body hash becomes
            ``body_hash``.
        cache_dir: Folder for the scans' 2 cm points (default ``<root>/sahmr_cache``).
        contact_labels: With ``targets``: give ``vertex_contact`` (distance labels). False for
            the official SA-HMR PROX evaluation, which has no ground-truth contact (its ConFE
            on PROX equals PenE); contact points are given either way.
        split: Name only (``train`` / ``val`` / ``test``): PROX splits are recordings
            (``recordings``) or releases (``root``), see docs/datasets.md.
        visibility: With ``targets``: ray-cast the body against the scan and itself for
            ``Sample.occlusion``, ``extra["mask"]`` (crop person mask) and
            ``extra["vertex_visible"]`` (`sahmr.data.visibility`).

    Attributes:
        scene_points: `ScanPoints` of the recordings' scenes (world frame, 2 cm).
        scene_mesh_dir: ``root/scenes`` (``<scene>.ply``), for scene metrics.
        body_hash: Content hash of the body the targets use (None without ``targets``).
    """

    source = "prox"

    def __init__(
        self,
        root: str | Path,
        recordings: Sequence[str] | None = None,
        *,
        allow_pickle: bool = False,
        fits_dir: str | Path | None = None,
        fit_filename: str = "000.pkl",
        require_fits: bool = True,
        frame_step: int = 1,
        root_joint_fn: RootJointFn | None = None,
        bboxes: Mapping[str, np.ndarray] | None = None,
        keypoints_dir: str | Path | None = None,
        keypoints_mirrored: bool = False,
        bbox_margin: float = 0.1,
        crop_size: int = DEFAULT_CROP_SIZE,
        keep_image: bool = False,
        targets: SmplTargets | None = None,
        cache_dir: str | Path | None = None,
        contact_labels: bool = True,
        split: str = "test",
        visibility: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.contact_labels = contact_labels
        self.visibility = visibility
        self.targets = targets
        self.body_hash = targets.body_hash if targets is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / "sahmr_cache"
        self.scene_mesh_dir = self.root / "scenes"
        self.allow_pickle = allow_pickle
        self.fits_dir = Path(fits_dir) if fits_dir is not None else self.root / "PROXD"
        self.keypoints_dir = (
            Path(keypoints_dir) if keypoints_dir is not None else self.root / "keypoints"
        )
        self.root_joint_fn = root_joint_fn
        self.bboxes = dict(bboxes) if bboxes is not None else {}
        self.keypoints_mirrored = keypoints_mirrored
        self.bbox_margin = bbox_margin
        self.crop_size = crop_size
        self.keep_image = keep_image
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        rec_root = self.root / "recordings"
        if recordings is None:
            if not rec_root.is_dir():
                raise FileNotFoundError(f"PROX recordings folder not found: {rec_root}")
            recordings = sorted(p.name for p in rec_root.iterdir() if p.is_dir())
        self.frames: list[_ProxFrame] = []
        for rec in recordings:
            scene = scene_of_recording(rec)
            color_dir = rec_root / rec / "Color"
            if not color_dir.is_dir():
                raise FileNotFoundError(f"PROX Color folder not found: {color_dir}")
            images = sorted(color_dir.glob("*.jpg"))
            for pos, img in enumerate(images[::frame_step]):
                fit = self.fits_dir / rec / "results" / img.stem / fit_filename
                if not fit.is_file():
                    if require_fits:
                        continue
                    fit = None
                match = _FRAME_NUMBER.search(img.stem)
                index = int(match.group(1)) if match else pos * frame_step
                self.frames.append(_ProxFrame(rec, scene, img.stem, index, img, fit))
        self._cameras: dict[str, ProxCamera] = {}
        self._meshes: dict[str, Any] = {}
        scenes = sorted({fr.scene for fr in self.frames})
        self.scene_points = ScanPoints(self.scene_mesh, scenes, self.cache_dir / "points")
        self.scene_casters = SceneCasters(self.scene_mesh)
        logger.info("PROX: %d frames from %d recordings", len(self.frames), len(recordings))

    def __len__(self) -> int:
        return len(self.frames)

    def camera(self, scene: str) -> ProxCamera:
        """The (cached) `ProxCamera` of ``scene``."""
        if scene not in self._cameras:
            self._cameras[scene] = load_prox_camera(self.root, scene)
        return self._cameras[scene]

    def scene_mesh(self, scene: str) -> Any:
        """The scan ``scenes/<scene>.ply`` as a ``trimesh.Trimesh`` (world frame, cached)."""
        if scene not in self._meshes:
            import trimesh

            verts, faces = load_prox_scene_mesh(self.root, scene)
            self._meshes[scene] = trimesh.Trimesh(verts, faces, process=False)
        return self._meshes[scene]

    def _bbox(
        self, frame: _ProxFrame, width: int, height: int, projected: np.ndarray | None = None
    ) -> tuple[np.ndarray, str]:
        key = f"{frame.recording}/{frame.frame_name}"
        if key in self.bboxes:
            return np.asarray(self.bboxes[key], dtype=np.float64).reshape(4), "given"
        if projected is not None:
            return projected, "projection"
        kp_file = self.keypoints_dir / frame.recording / f"{frame.frame_name}_keypoints.json"
        if kp_file.is_file():
            box = bbox_from_openpose(kp_file, width, mirrored=self.keypoints_mirrored)
            if box is not None:
                centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
                half = half * (1.0 + self.bbox_margin)
                return np.concatenate([centre - half, centre + half]), "openpose"
        logger.debug("no box for %s; using the full image", key)
        return np.array([0.0, 0.0, width, height]), "full_image"

    def __getitem__(self, index: int) -> Sample:
        frame = self.frames[index]
        cam = self.camera(frame.scene)
        image = read_prox_color_image(frame.image_path, unmirror=True)
        h, w = image.shape[:2]
        subject = int(frame.recording.split("_")[1])
        extra: dict[str, Any] = {
            "gender": "female" if subject in PROX_FEMALE_SUBJECTS else "male",
            "frame_name": frame.frame_name,
            "dist": cam.dist.astype(np.float32),
            "body_model": "smplx",
        }
        if frame.fit_path is not None:
            raw = load_data_pickle(frame.fit_path, allow_pickle=self.allow_pickle, what="PROXD fit")
            if not isinstance(raw, Mapping):
                raise ValueError(f"{frame.fit_path} holds a {type(raw).__name__}, expected a dict")
            params = clean_smplx_params(raw)
            T_fit2cam = np.eye(4)
            if "camera_rotation" in params:
                T_fit2cam[:3, :3] = params.pop("camera_rotation").reshape(3, 3)
            if "camera_translation" in params:
                T_fit2cam[:3, 3] = params.pop("camera_translation").reshape(3)
            extra["smplx_params_fit"] = params
            extra["T_fit2cam"] = T_fit2cam.astype(np.float32)
            extra["T_fit2world"] = (cam.T_c2w @ T_fit2cam).astype(np.float32)
            if self.root_joint_fn is not None:
                extra["smplx_params_world"] = transform_smplx_params(
                    params, cam.T_c2w @ T_fit2cam, self.root_joint_fn
                )
        vertices_world = joints_world = projected = vertex_contact = None
        contact_points = np.zeros((0, 3), np.float32)
        contact_region = np.zeros((0,), np.int64)
        if self.targets is not None and "smplx_params_fit" in extra:
            extra["body_hash"] = self.body_hash
            vertices_world, joints_world = self.targets(
                extra["smplx_params_fit"], extra["T_fit2world"], extra["gender"]
            )
            projected = project_bbox(vertices_world, cam.K, cam.T_w2c, (w, h))
            regions = self.targets.vertex_region
            dist, closest = scan_distance(
                vertices_world,
                self.scene_points[frame.scene],
                self.scene_mesh(frame.scene),
                tree=self.scene_points.tree(frame.scene),
                vertex_mask=regions > 0,
            )
            vertex_contact, contact_points, contact_region = contact_targets(
                distance_contact(dist, regions), closest
            )
            if not self.contact_labels:
                vertex_contact = None
        bbox, extra["bbox_source"] = self._bbox(frame, w, h, projected)
        occlusion = math.nan
        if self.visibility and vertices_world is not None and self.targets is not None:
            vis = frame_visibility(
                vertices_world, self.targets.faces, self.scene_casters[frame.scene], cam.K,
                cam.T_w2c, (w, h), bbox, self.crop_size,
            )  # fmt: skip
            occlusion = vis.occlusion
            extra.update(vis.extras())
        return Sample(
            crop=crop_around_bbox(image, bbox, size=self.crop_size),
            bbox=bbox,
            K=cam.K,
            T_w2c=cam.T_w2c,
            image_size=np.array([w, h]),
            scene_id=frame.scene,
            source=self.source,
            sequence_id=frame.recording,
            frame_index=frame.frame_index,
            image=image if self.keep_image else None,
            vertices_world=vertices_world,
            joints_world=joints_world,
            vertex_contact=vertex_contact,
            contact_points_world=contact_points,
            contact_point_region=contact_region,
            occlusion=occlusion,
            extra=extra,
        )
