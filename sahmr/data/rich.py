"""RICH (Huang et al., CVPR 2022) loader: multi-view images, XML calibration, scans, SMPL-X, HSC.

Layout read (``root`` = the folder the RICH toolkit calls ``data/``; folder names are
constructor arguments of `RichDataset` with these defaults):

| path under root                                            | gives                              |
| ---------------------------------------------------------- | ---------------------------------- |
| ``images/<split>/<seq>/cam_<CC>/<FFFFF>_<CC>.<ext>``       | frame of camera CC (ext per scene: |
|                                                            | bmp/png in the toolkit, jpeg/jpg   |
|                                                            | in re-encoded releases)            |
| ``scan_calibration/<scene>/calibration/<CCC>.xml``         | OpenCV-style XML: ``CameraMatrix`` |
|                                                            | 3x4 [R|t] world -> camera,         |
|                                                            | ``Intrinsics`` 3x3, ``Distortion`` |
| ``scan_calibration/<scene>/scan_camcoord.ply``             | scene scan in the multi-camera     |
|                                                            | frame (camera 0 = reference)       |
| ``bodies/<split>/<seq>/<FFFFF>/<subject>.pkl``             | SMPL-X params, multi-camera frame  |
| ``human_scene_contact/<split>/<seq>/<FFFFF>/<subject>.pkl``| ``contact`` (6890,) 0/1 per SMPL   |
|                                                            | vertex, ``s2m_dist_id`` (10475, 3) |
|                                                            | SMPL-X vertex -> closest scan      |
|                                                            | point, ``closest_triangles_id``    |
|                                                            | (10475, 3, 3) that scan triangle   |
| ``multicam2world/<scene>_multicam2world.json``             | ``R`` (3x3), ``t`` (3,), ``c``:    |
|                                                            | ``x_w = c * x @ R + t`` (row vecs) |

``<seq>`` is ``<scene>_<subject>_<action>`` (e.g. ``ParkingLot1_005_pushup2``); frame ids are
5 digits, camera ids 2 digits in image paths and 3 digits in calibration files. Source: the
RICH toolkit (github.com/paulchhuang/rich_toolkit: README, smplx2images.py, hsc_params.py,
multicam2world.py, utils.py) and SA-HMR's RICH loader. Subject genders come from the
toolkit's ``resource/gender.json`` (not part of the data): pass ``gender_map``.

World frame: by default the scan's own frame, i.e. the multi-camera frame of
``scan_camcoord.ply`` (ground plane generally not axis-aligned); ``T_w2c`` is the XML
``CameraMatrix``. ``world_frame="gravity"`` applies ``multicam2world`` instead (ground
axis-aligned) and requires its scale ``c`` to be 1 (to 1e-4): a scaled transform cannot be
expressed on body parameters or on a rigid ``T_w2c``.

Training samples: with ``targets`` (`sahmr.data.smplx_targets.SmplTargets`: the user's SMPL-X
model + the SMPL-X -> SMPL transfer matrix) a sample carries SMPL ``vertices_world`` /
``joints_world``, ``vertex_contact`` (HSC labels x the body's contact regions), contact points
(closest scan point of each contact vertex), a box from the body's projection when none is
given, and the crop is sampled from the undistorted image (``undistort``); with ``visibility``
also the generator's visibility fields (`sahmr.data.visibility`): ``Sample.occlusion``, the
crop's person mask ``extra["mask"]`` and per-vertex ``extra["vertex_visible"]`` (vertices
tested where the lens puts them in the stored image). Layouts, splits and
commands: docs/datasets.md. The rest of this paragraph describes the raw fields.

SMPL-X vs SMPL: `Sample`'s SMPL-format parameter fields stay ``None``; ``extra["smplx_params_fit"]``
holds the SMPL-X params in the multi-camera frame, ``extra["T_fit2world"]`` the 4x4 transform
to the world frame, and with ``root_joint_fn`` ``extra["smplx_params_world"]`` (see
`sahmr.data.prox` for the meaning). HSC contact is per SMPL vertex (6890): with
``smpl_vertex_regions`` (V,) region labels 0..7 it becomes ``Sample.vertex_contact``;
otherwise the 0/1 labels stay in ``extra["hsc_contact_smpl"]``. Scene contact points are the
centroids of ``closest_triangles_id`` for SMPL-X vertices whose ``|s2m_dist_id|`` is below
``contact_threshold``; with ``smplx_vertex_regions`` (10475,) they fill
``Sample.contact_points_world`` / ``contact_point_region``, otherwise they go to
``extra["hsc_contact_points_world"]`` unlabelled. (The triangles are taken to be in the scan's
frame; RICH does not state it in the files.)

Images: RICH ships no person boxes; pass ``bboxes``, else (with ``targets``) the box of the
projected ground-truth mesh is used, as SA-HMR does (``extra["bbox_source"] == "projection"``),
else the whole image (``"full_image"``). For
downscaled image copies (e.g. SA-HMR's ``images_ds4``) set ``image_downscale`` (4) so ``K`` is
scaled to the stored resolution.
"""

from __future__ import annotations

import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from sahmr.atomic_write import atomic_open
from sahmr.data.safe_pickle import load_data_pickle
from sahmr.data.sample import RootJointFn, Sample, crop_around_bbox
from sahmr.data.smplx_params import clean_smplx_params, transform_smplx_params
from sahmr.data.smplx_targets import (
    ScanPoints,
    SmplTargets,
    contact_targets,
    project_bbox,
    scan_distance,
)
from sahmr.data.visibility import SceneCasters, frame_visibility
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.scene.contact import CONTACT_THRESHOLD_M

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp")
"""Image extensions tried, in order, when listing ``cam_<CC>`` folders."""
_IMAGE_NAME = re.compile(r"^(\d+)_(\d+)$")


@dataclass(frozen=True)
class RichCamera:
    """One calibrated RICH camera.

    Attributes:
        K: (3, 3) float64 intrinsics at the calibrated (full) resolution, pixels.
        dist: (N,) float64 distortion coefficients as stored (OpenCV order; applied to crops
            by `RichDataset` with ``undistort``).
        T_w2c: (4, 4) float64 multi-camera (scan) frame -> camera, metres.
    """

    K: np.ndarray
    dist: np.ndarray
    T_w2c: np.ndarray


def _xml_matrix(root: ET.Element, tag: str, path: Path) -> np.ndarray:
    """Reads an OpenCV ``opencv-matrix`` node (``rows``/``cols``/``data``) as float64."""
    node = root.find(f"./{tag}")
    if node is None:
        node = root.find(f".//{tag}")
    if node is None:
        raise ValueError(f"{path}: no <{tag}> element")
    data_node = node.find("data")
    text = data_node.text if data_node is not None else node.text
    values = np.array([float(v) for v in (text or "").split()], dtype=np.float64)
    rows, cols = node.findtext("rows"), node.findtext("cols")
    if rows is not None and cols is not None:
        shape = (int(rows), int(cols))
        if values.size != shape[0] * shape[1]:
            raise ValueError(f"{path}: <{tag}> says {shape} but holds {values.size} values")
        return values.reshape(shape)
    return values


def load_rich_camera(
    root: str | Path,
    scene: str,
    cam_id: int,
    *,
    calib_dirname: str = "scan_calibration",
    xml_path: str | Path | None = None,
) -> RichCamera:
    """Parses ``<calib_dirname>/<scene>/calibration/<cam_id:03d>.xml`` (no OpenCV needed).

    Args:
        root: Dataset root.
        scene: Scene name, e.g. ``"ParkingLot1"``.
        cam_id: Camera number.
        calib_dirname: Calibration folder name under ``root``.
        xml_path: Explicit XML path (overrides the layout).

    Returns:
        `RichCamera`.

    Raises:
        ValueError: On missing elements or wrong sizes.
    """
    path = (
        Path(xml_path)
        if xml_path is not None
        else Path(root) / calib_dirname / scene / "calibration" / f"{cam_id:03d}.xml"
    )
    if not path.is_file():
        raise FileNotFoundError(f"RICH calibration not found: {path}")
    tree = ET.parse(path).getroot()
    ext = _xml_matrix(tree, "CameraMatrix", path).reshape(-1)
    K = _xml_matrix(tree, "Intrinsics", path).reshape(-1)
    dist = _xml_matrix(tree, "Distortion", path).reshape(-1)
    if ext.size not in (12, 16) or K.size != 9:
        raise ValueError(f"{path}: CameraMatrix needs 12 (3x4) values, Intrinsics 9")
    T_w2c = np.eye(4)
    T_w2c[:3, :4] = ext[:12].reshape(3, 4)
    R = T_w2c[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
        raise ValueError(f"{path}: CameraMatrix rotation is not orthonormal")
    return RichCamera(K=K.reshape(3, 3), dist=dist, T_w2c=T_w2c)


def load_rich_multicam2world(root: str | Path, scene: str) -> tuple[float, np.ndarray]:
    """Reads ``multicam2world/<scene>_multicam2world.json``.

    The file maps row vectors ``x_w = c * x @ R + t``; as a column-vector matrix that is
    ``S = [[c * R^T, t], [0, 1]]``.

    Returns:
        ``(c, S)``: the scale and the (4, 4) float64 similarity multi-camera -> scan world.
    """
    path = Path(root) / "multicam2world" / f"{scene}_multicam2world.json"
    if not path.is_file():
        raise FileNotFoundError(f"RICH multicam2world not found: {path}")
    with path.open("r", encoding="utf-8") as fh:
        data = json.load(fh)
    c = float(data.get("c", 1.0))
    R = np.asarray(data["R"], dtype=np.float64).reshape(3, 3)
    S = np.eye(4)
    S[:3, :3] = c * R.T
    S[:3, 3] = np.asarray(data["t"], dtype=np.float64).reshape(3)
    return c, S


def load_rich_scene_mesh(
    root: str | Path,
    scene: str,
    *,
    calib_dirname: str = "scan_calibration",
    scan_filename: str = "scan_camcoord.ply",
) -> tuple[np.ndarray, np.ndarray]:
    """Reads the scene scan (multi-camera frame) with trimesh, imported lazily.

    Returns:
        ``(vertices, faces)``: (Nv, 3) float64 metres and (Nf, 3) int64.
    """
    import trimesh

    path = Path(root) / calib_dirname / scene / scan_filename
    if not path.is_file():
        raise FileNotFoundError(f"RICH scene scan not found: {path}")
    mesh = trimesh.load(path, process=False, force="mesh")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def load_rich_hsc(path: str | Path, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Reads one human-scene-contact pickle.

    Returns:
        ``contact`` (6890,) int64 0/1 per SMPL vertex; when present ``s2m`` (Vx, 3) float32
        SMPL-X vertex -> closest scan point vectors (metres) and ``closest_triangles``
        (Vx, 3, 3) float32 the scan triangle holding that point.
    """
    raw = load_data_pickle(path, allow_pickle=allow_pickle, what="RICH contact file")
    if not isinstance(raw, Mapping) or "contact" not in raw:
        raise ValueError(f"{path}: expected a dict with a 'contact' entry")
    out = {"contact": (np.asarray(raw["contact"]).reshape(-1) > 0).astype(np.int64)}
    if "s2m_dist_id" in raw:
        out["s2m"] = np.asarray(raw["s2m_dist_id"], dtype=np.float32).reshape(-1, 3)
    if "closest_triangles_id" in raw:
        out["closest_triangles"] = np.asarray(raw["closest_triangles_id"], np.float32).reshape(
            -1, 3, 3
        )
    return out


def read_rich_image(path: str | Path) -> np.ndarray:
    """Reads a RICH frame as (H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class _RichFrame:
    sequence: str
    scene: str
    subject: str
    action: str
    frame_id: int
    cam_id: int
    image_path: Path
    body_path: Path | None
    hsc_path: Path | None


class RichDataset(Dataset):
    """RICH frames (one per camera view) as `Sample`s.

    Args:
        root: Dataset root (the toolkit's ``data/``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        sequences: Sequence names to use; default all found under the split's images.
        cameras: Camera ids to use; default all.
        allow_pickle: Opt-in to read the ``.pkl`` body / contact files (restricted unpickler).
        images_dirname, bodies_dirname, hsc_dirname, calib_dirname, multicam2world_dirname:
            Folder names under ``root`` (defaults as released).
        image_exts: Image extensions to accept.
        image_downscale: Stored images are this many times smaller than the calibration.
        world_frame: ``"scan"`` (multi-camera frame of scan_camcoord.ply) or ``"gravity"``.
        require_bodies: Skip frames without a body file.
        frame_step: Keep frames whose id is a multiple of ``frame_step``.
        root_joint_fn: betas -> SMPL-X rest pelvis, enables ``extra["smplx_params_world"]``.
        bboxes: Optional ``"<seq>/<cam>/<frame>" -> (4,)`` xyxy boxes at the stored resolution.
        smpl_vertex_regions: Optional (6890,) int64 region label per SMPL vertex.
        smplx_vertex_regions: Optional (10475,) int64 region label per SMPL-X vertex.
        contact_threshold: Distance (metres) below which an SMPL-X vertex is in contact.
        gender_map: Optional subject id (int) -> ``"male"``/``"female"``.
        crop_size: Side of ``Sample.crop``.
        keep_image: Whether to return the full frame in ``Sample.image``.
        targets: `SmplTargets` giving SMPL vertices / joints (world frame) from the SMPL-X
            fits: makes the samples training samples (``vertices_world``, ``joints_world``,
            ``vertex_contact`` from RICH's HSC labels x the body's contact regions, contact
            points = the closest scan point of each contact vertex, a box from the body's
            projection when none is given). Its body hash becomes ``body_hash``.
        undistort: Sample the crop from the undistorted image (RICH's ``Distortion``), so
            ``K`` is an exact pinhole camera of the crop.
        cache_dir: Folder for the scans' 2 cm points and world-frame meshes (default
            ``<root>/sahmr_cache``).
        frame_list: Optional text file of ``<seq>/<cam:02d>/<frame:05d>`` keys, one a line:
            only those frames (e.g. the official SA-HMR test list of 3,116 frames).
        visibility: With ``targets``: ray-cast the body against the scan and itself for
            ``Sample.occlusion``, ``extra["mask"]`` (crop person mask) and
            ``extra["vertex_visible"]`` (`sahmr.data.visibility`).

    Attributes:
        scene_points: `ScanPoints` of the split's scenes (world frame, 2 cm).
        body_hash: Content hash of the body the targets use (None without ``targets``).
    """

    source = "rich"

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        sequences: Sequence[str] | None = None,
        cameras: Sequence[int] | None = None,
        allow_pickle: bool = False,
        images_dirname: str = "images",
        bodies_dirname: str = "bodies",
        hsc_dirname: str = "human_scene_contact",
        calib_dirname: str = "scan_calibration",
        multicam2world_dirname: str = "multicam2world",
        image_exts: Sequence[str] = DEFAULT_IMAGE_EXTS,
        image_downscale: float = 1.0,
        world_frame: str = "scan",
        require_bodies: bool = True,
        frame_step: int = 1,
        root_joint_fn: RootJointFn | None = None,
        bboxes: Mapping[str, np.ndarray] | None = None,
        smpl_vertex_regions: np.ndarray | None = None,
        smplx_vertex_regions: np.ndarray | None = None,
        contact_threshold: float = CONTACT_THRESHOLD_M,
        gender_map: Mapping[int, str] | None = None,
        crop_size: int = DEFAULT_CROP_SIZE,
        keep_image: bool = False,
        targets: SmplTargets | None = None,
        undistort: bool = True,
        cache_dir: str | Path | None = None,
        frame_list: str | Path | None = None,
        visibility: bool = True,
    ) -> None:
        if world_frame not in ("scan", "gravity"):
            raise ValueError(f"world_frame must be 'scan' or 'gravity', got {world_frame!r}")
        if frame_step < 1 or image_downscale <= 0:
            raise ValueError("frame_step must be >= 1 and image_downscale > 0")
        self.root = Path(root)
        self.split = split
        self.allow_pickle = allow_pickle
        self.calib_dirname = calib_dirname
        self.multicam2world_dirname = multicam2world_dirname
        self.image_downscale = float(image_downscale)
        self.world_frame = world_frame
        self.root_joint_fn = root_joint_fn
        self.bboxes = dict(bboxes) if bboxes is not None else {}
        self.smpl_vertex_regions = (
            None if smpl_vertex_regions is None else np.asarray(smpl_vertex_regions, np.int64)
        )
        self.smplx_vertex_regions = (
            None if smplx_vertex_regions is None else np.asarray(smplx_vertex_regions, np.int64)
        )
        self.contact_threshold = contact_threshold
        self.gender_map = dict(gender_map) if gender_map is not None else {}
        self.crop_size = crop_size
        self.keep_image = keep_image
        self.targets = targets
        self.undistort = undistort
        self.visibility = visibility
        self.body_hash = targets.body_hash if targets is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / "sahmr_cache"
        wanted_keys = None
        if frame_list is not None:
            lines = Path(frame_list).read_text(encoding="utf-8").split()
            wanted_keys = {line.strip() for line in lines if line.strip()}
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in image_exts}

        image_root = self.root / images_dirname / split
        if not image_root.is_dir():
            raise FileNotFoundError(f"RICH images folder not found: {image_root}")
        if sequences is None:
            sequences = sorted(p.name for p in image_root.iterdir() if p.is_dir())
        wanted_cams = None if cameras is None else {int(c) for c in cameras}
        self.frames: list[_RichFrame] = []
        for seq in sequences:
            parts = seq.split("_")
            if len(parts) < 3:
                raise ValueError(f"RICH sequence names are <scene>_<subject>_<action>: {seq!r}")
            scene, subject, action = parts[0], parts[1], "_".join(parts[2:])
            for cam_dir in sorted((image_root / seq).glob("cam_*")):
                for img in sorted(cam_dir.iterdir()):
                    match = _IMAGE_NAME.match(img.stem)
                    if img.suffix.lower() not in exts or match is None:
                        continue
                    frame_id, cam_id = int(match.group(1)), int(match.group(2))
                    if wanted_cams is not None and cam_id not in wanted_cams:
                        continue
                    if frame_id % frame_step:
                        continue
                    if (
                        wanted_keys is not None
                        and f"{seq}/{cam_id:02d}/{frame_id:05d}" not in wanted_keys
                    ):
                        continue
                    rel = Path(split) / seq / match.group(1) / f"{subject}.pkl"
                    body = self.root / bodies_dirname / rel
                    hsc = self.root / hsc_dirname / rel
                    if not body.is_file():
                        if require_bodies:
                            continue
                        body = None
                    self.frames.append(
                        _RichFrame(
                            seq,
                            scene,
                            subject,
                            action,
                            frame_id,
                            cam_id,
                            img,
                            body,
                            hsc if hsc.is_file() else None,
                        )
                    )
        self._cameras: dict[tuple[str, int], RichCamera] = {}
        self._to_world: dict[str, np.ndarray] = {}
        self._meshes: dict[str, Any] = {}
        scenes = sorted({fr.scene for fr in self.frames})
        self.scene_points = ScanPoints(
            self.scene_mesh, scenes, self.cache_dir / f"points_{self.world_frame}"
        )
        self.scene_casters = SceneCasters(self.scene_mesh)
        logger.info("RICH %s: %d frames from %d sequences", split, len(self.frames), len(sequences))

    def __len__(self) -> int:
        return len(self.frames)

    def camera(self, scene: str, cam_id: int) -> RichCamera:
        """The (cached) calibrated camera, at full resolution, multi-camera frame."""
        key = (scene, cam_id)
        if key not in self._cameras:
            self._cameras[key] = load_rich_camera(
                self.root, scene, cam_id, calib_dirname=self.calib_dirname
            )
        return self._cameras[key]

    def multicam_to_world(self, scene: str) -> np.ndarray:
        """(4, 4) rigid transform multi-camera frame -> this dataset's world frame."""
        if scene not in self._to_world:
            T = np.eye(4)
            if self.world_frame == "gravity":
                c, S = load_rich_multicam2world(self.root, scene)
                if abs(c - 1.0) > 1e-4:
                    raise ValueError(
                        f"{scene}_multicam2world.json has scale c={c}; world_frame='gravity' "
                        "needs c == 1 (use world_frame='scan')"
                    )
                T = S
            self._to_world[scene] = T
        return self._to_world[scene]

    def scene_mesh(self, scene: str) -> Any:
        """The scan as a ``trimesh.Trimesh`` in this dataset's world frame (cached)."""
        if scene not in self._meshes:
            import trimesh

            verts, faces = load_rich_scene_mesh(self.root, scene, calib_dirname=self.calib_dirname)
            T = self.multicam_to_world(scene)
            verts = verts @ T[:3, :3].T + T[:3, 3]
            self._meshes[scene] = trimesh.Trimesh(verts, faces, process=False)
        return self._meshes[scene]

    @property
    def scene_mesh_dir(self) -> Path:
        """Folder of ``<scene>.ply`` world-frame scans (written once), for scene metrics."""
        folder = self.cache_dir / f"scenes_{self.world_frame}"
        for scene in self.scene_points:
            path = folder / f"{scene}.ply"
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_open(path) as fh:
                    self.scene_mesh(scene).export(fh, file_type="ply")
        return folder

    def __getitem__(self, index: int) -> Sample:
        fr = self.frames[index]
        cam = self.camera(fr.scene, fr.cam_id)
        T_m2w = self.multicam_to_world(fr.scene)
        T_w2c = cam.T_w2c @ np.linalg.inv(T_m2w)
        K = cam.K.copy()
        K[:2] /= self.image_downscale
        image = read_rich_image(fr.image_path)
        h, w = image.shape[:2]
        extra: dict[str, Any] = {
            "cam_id": fr.cam_id,
            "subject": fr.subject,
            "dist": cam.dist.astype(np.float32),
            "body_model": "smplx",
            "T_fit2world": T_m2w.astype(np.float32),
            "undistorted": bool(self.undistort),
        }
        if self.body_hash is not None:
            extra["body_hash"] = self.body_hash
        if int(fr.subject) in self.gender_map:
            extra["gender"] = self.gender_map[int(fr.subject)]
        if fr.body_path is not None:
            raw = load_data_pickle(fr.body_path, allow_pickle=self.allow_pickle, what="RICH body")
            if not isinstance(raw, Mapping):
                raise ValueError(f"{fr.body_path} holds a {type(raw).__name__}, expected a dict")
            params = clean_smplx_params(raw)
            extra["smplx_params_fit"] = params
            if self.root_joint_fn is not None:
                extra["smplx_params_world"] = transform_smplx_params(
                    params, T_m2w, self.root_joint_fn
                )
        vertices_world = joints_world = None
        if self.targets is not None and "smplx_params_fit" in extra:
            vertices_world, joints_world = self.targets(
                extra["smplx_params_fit"], T_m2w, extra.get("gender")
            )
        key = f"{fr.sequence}/{fr.cam_id:02d}/{fr.frame_id:05d}"
        bbox = None
        if key in self.bboxes:
            bbox, bbox_source = np.asarray(self.bboxes[key], np.float64).reshape(4), "given"
        elif vertices_world is not None:
            bbox, bbox_source = project_bbox(vertices_world, K, T_w2c, (w, h)), "projection"
        if bbox is None:
            bbox, bbox_source = np.array([0.0, 0.0, w, h]), "full_image"
        extra["bbox_source"] = bbox_source
        vertex_contact = None
        contact_points = np.zeros((0, 3), np.float32)
        contact_region = np.zeros((0,), np.int64)
        regions = self.smpl_vertex_regions
        if regions is None and self.targets is not None:
            regions = self.targets.vertex_region
        if fr.hsc_path is not None:
            hsc = load_rich_hsc(fr.hsc_path, allow_pickle=self.allow_pickle)
            contact = hsc["contact"]
            if vertices_world is not None and regions is not None:
                if regions.shape != contact.shape:
                    raise ValueError(
                        f"{fr.hsc_path}: {contact.shape[0]} contact labels for a body of "
                        f"{regions.shape[0]} vertices"
                    )
                labels = np.where(contact > 0, regions, 0)
                _, closest = scan_distance(
                    vertices_world,
                    self.scene_points[fr.scene],
                    self.scene_mesh(fr.scene),
                    tree=self.scene_points.tree(fr.scene),
                    vertex_mask=labels > 0,
                )
                vertex_contact, contact_points, contact_region = contact_targets(labels, closest)
            elif self.smpl_vertex_regions is not None:
                if self.smpl_vertex_regions.shape != contact.shape:
                    raise ValueError(
                        f"smpl_vertex_regions has shape {self.smpl_vertex_regions.shape}, "
                        f"contact labels {contact.shape}"
                    )
                vertex_contact = np.where(contact > 0, self.smpl_vertex_regions, 0)
            else:
                extra["hsc_contact_smpl"] = contact
            if vertices_world is None and "s2m" in hsc and "closest_triangles" in hsc:
                near = np.linalg.norm(hsc["s2m"], axis=1) < self.contact_threshold
                centroids = hsc["closest_triangles"][near].mean(axis=1).astype(np.float64)
                pts = (centroids @ T_m2w[:3, :3].T + T_m2w[:3, 3]).astype(np.float32)
                if self.smplx_vertex_regions is not None:
                    regions = self.smplx_vertex_regions[near]
                    keep = regions > 0
                    contact_points, contact_region = pts[keep], regions[keep]
                else:
                    extra["hsc_contact_points_world"] = pts
        occlusion = math.nan
        if self.visibility and vertices_world is not None and self.targets is not None:
            vis = frame_visibility(
                vertices_world, self.targets.faces, self.scene_casters[fr.scene], K, T_w2c, (w, h),
                bbox, self.crop_size, dist_coeffs=cam.dist,
            )  # fmt: skip
            occlusion = vis.occlusion
            extra.update(vis.extras())
        if self.undistort and np.any(cam.dist != 0):
            from sahmr.geometry.distortion import undistorted_crop

            crop = undistorted_crop(image, K, cam.dist, bbox, size=self.crop_size)
        else:
            crop = crop_around_bbox(image, bbox, size=self.crop_size)
        return Sample(
            crop=crop,
            bbox=bbox,
            K=K,
            T_w2c=T_w2c,
            image_size=np.array([w, h]),
            scene_id=fr.scene,
            source=self.source,
            sequence_id=fr.sequence,
            frame_index=fr.frame_id,
            image=image if self.keep_image else None,
            vertex_contact=vertex_contact,
            contact_points_world=contact_points,
            contact_point_region=contact_region,
            action=fr.action,
            vertices_world=vertices_world,
            joints_world=joints_world,
            occlusion=occlusion,
            extra=extra,
        )
