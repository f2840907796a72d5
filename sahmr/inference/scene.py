"""The scan of an inference run: loaded, checked for plausible units, voxel-down-sampled to the
models' 2 cm scene points (`sahmr.scene.points.voxel_downsample`, the data generator's
sampler), cached on disk and packed in a `SceneBank` (`load_scene_data`).

Frames: world = the scan's frame, metres.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sahmr.atomic_write import atomic_save_npz
from sahmr.inference.errors import InputError, check_scan_extent, require_file
from sahmr.inference.timing import StageTimer
from sahmr.scene.frontend import SceneBank
from sahmr.scene.points import SCENE_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

_POINTS_CACHE_VERSION = 2
"""2: every machine samples with `sahmr.scene.points` (1: open3d's down-sampling where present)."""


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
    _caster: Any = field(default=None, repr=False)
    _normals: np.ndarray | None = field(default=None, repr=False)

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

    def point_normals(self, towards: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) float32 unit normals of `points_world`: the scan's own when it has them,
        else estimated from the points' neighbourhoods once (`sahmr.scene.points.
        estimate_normals`, cached) and flipped to face ``towards`` (a (3,) world point, e.g.
        the frame's camera; None: signs as estimated). For pictures of point scans: shading
        and back-face culling."""
        if self.points.normals is not None:
            return np.asarray(self.points.normals, np.float32)
        from sahmr.scene.points import estimate_normals, face_towards

        if self._normals is None:
            self._normals = estimate_normals(self.points_world)
        if towards is None:
            return self._normals
        return face_towards(self.points_world, self._normals, towards)

    def raycaster(self) -> Any:
        """A `sahmr.geometry.raycast.MeshRaycaster` of the scan mesh (cached), or None for a
        point cloud."""
        if self.mesh is None:
            return None
        if self._caster is None:
            from sahmr.geometry.raycast import MeshRaycaster

            self._caster = MeshRaycaster(self.mesh.vertices, self.mesh.faces)
        return self._caster


def _downsample(scene: Any, voxel_size: float) -> Any:
    """`sahmr.scene.points.voxel_downsample`: the sampler the training scenes went through."""
    from sahmr.scene.points import voxel_downsample

    return voxel_downsample(scene, voxel_size)


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

    cache = (
        Path(cache_dir) / "scene_points" if cache_dir is not None else (default_points_cache_dir())
    )
    file = _points_cache_path(path, voxel_size, scale, cache)
    if file.is_file():
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        logger.info("scene points cache hit: %s", file)
        return ScenePoints(
            arrays["points"],
            arrays.get("normals"),
            arrays.get("colors"),
            up_axis=scene.up_axis,
            voxel_size=voxel_size,
        )
    points = _downsample(scene, voxel_size)
    arrays = {"points": points.points}
    arrays.update({k: v for k in ("normals", "colors") if (v := getattr(points, k)) is not None})
    try:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(file, arrays)
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
    logger.info(
        "scene %s: %d points at %.3f m, extent %.1f m", name, len(points), voxel_size, extent
    )
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
