"""Camera and person-box files for inference on custom scenes.

Camera files (format documented in docs/demo.md):

* sahmr camera file, ``.json`` / ``.yaml`` / ``.yml``::

      {"format": "sahmr.camera", "version": 1,
       "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],      # or "fx", "fy", "cx", "cy"
       "T_w2c": [[...4x4...]],                           # or "T_c2w" (camera -> world)
       "image_size": [W, H],                             # optional, checked when given
       "convention": "opencv",                           # or "opengl" (x right, y up, z back)
       "dist": [k1, k2, p1, p2, k3]}                     # optional, stored, not applied

* RICH calibration XML (``<cam>.xml``: ``CameraMatrix`` 3x4 world -> camera, ``Intrinsics``),
  read with `sahmr.data.rich.load_rich_camera`; no image size (full resolution; scale K with
  ``scale`` for down-sampled copies).
* PROX ``calibration/Color.json`` (intrinsics only) plus its ``cam2world/<scene>.json``
  (4x4 camera -> world), read with `sahmr.data.prox.load_prox_color_calibration` and
  `sahmr.data.prox.load_prox_cam2world`. PROX colour frames are stored mirrored:
  `CameraSpec.mirrored_images` is True so the demo flips them back.

Person boxes: ``x0,y0,x1,y1`` pixels, as 4 numbers, a text file holding them, a JSON file
(``[x0, y0, x1, y1]`` or ``{"bbox": [...]}``) or an OpenPose ``*_keypoints.json`` (the most
confident person's joints, `sahmr.data.prox.bbox_from_openpose`).

Frames: camera = OpenCV (x right, y down, z forward), ``T_w2c`` world -> camera, metres.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sahmr.inference.errors import BBoxError, CameraError, MissingFileError, require_file
from sahmr.scene.camera_checks import invert_extrinsics

logger = logging.getLogger(__name__)

__all__ = [
    "CAMERA_FORMAT",
    "CameraSpec",
    "camera_from_dict",
    "load_camera",
    "missing_sidecar",
    "parse_bbox",
    "read_bbox_file",
    "save_camera",
]

CAMERA_FORMAT = "sahmr.camera"
CAMERA_VERSION = 1
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class CameraSpec:
    """A calibrated pinhole camera of one image.

    Attributes:
        K: (3, 3) float64 intrinsics, pixels.
        T_w2c: (4, 4) float64 world (scan) -> camera (OpenCV), metres.
        image_size: ``(W, H)`` the calibration is for, or None when the file does not say.
        dist: Distortion coefficients as stored (not applied), or None.
        source: ``"sahmr"``, ``"rich"`` or ``"prox"``: the file format read.
        mirrored_images: Whether images of this camera are stored mirrored (PROX).
        path: The file read, or None.
    """

    K: np.ndarray
    T_w2c: np.ndarray
    image_size: tuple[int, int] | None = None
    dist: np.ndarray | None = None
    source: str = "sahmr"
    mirrored_images: bool = False
    path: str | None = None

    @property
    def T_c2w(self) -> np.ndarray:
        """(4, 4) camera -> world."""
        R, t = self.T_w2c[:3, :3], self.T_w2c[:3, 3]
        out = np.eye(4)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ t
        return out

    @property
    def center_world(self) -> np.ndarray:
        """(3,) camera centre, world frame."""
        return self.T_c2w[:3, 3]

    def scaled(self, scale: float) -> CameraSpec:
        """The camera of the image resized by ``scale`` (pixel-centre consistent).

        Args:
            scale: Resize factor > 0.
        """
        if not scale > 0:
            raise CameraError(f"camera scale must be positive, got {scale}")
        if scale == 1.0:
            return self
        K = self.K.copy()
        K[:2, :2] *= scale
        K[:2, 2] = (K[:2, 2] + 0.5) * scale - 0.5
        size = None
        if self.image_size is not None:
            size = (round(self.image_size[0] * scale), round(self.image_size[1] * scale))
        return replace(self, K=K, image_size=size)

    def to_dict(self) -> dict[str, Any]:
        """The sahmr camera-file content (JSON-ready)."""
        out: dict[str, Any] = {
            "format": CAMERA_FORMAT,
            "version": CAMERA_VERSION,
            "K": np.round(self.K, 9).tolist(),
            "T_w2c": np.round(self.T_w2c, 12).tolist(),
        }
        if self.image_size is not None:
            out["image_size"] = [int(v) for v in self.image_size]
        if self.dist is not None:
            out["dist"] = np.asarray(self.dist).tolist()
        return out


def save_camera(path: str | Path, camera: CameraSpec) -> Path:
    """Write a sahmr camera file (``.json``)."""
    path = Path(path)
    path.write_text(json.dumps(camera.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


def _matrix(value: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CameraError(f"{where}: {name} is not numeric ({exc})") from exc
    if arr.size != int(np.prod(shape)):
        raise CameraError(f"{where}: {name} must have {int(np.prod(shape))} values "
                          f"{shape}, got {arr.size}")
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        raise CameraError(f"{where}: {name} holds NaN or inf")
    return arr


def _validate(K: np.ndarray, T_w2c: np.ndarray, where: str) -> None:
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-6 or np.any(K[2, :2] != 0):
        raise CameraError(f"{where}: K must be [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0; "
                          f"got {K.tolist()}")
    R = T_w2c[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise CameraError(f"{where}: the extrinsic rotation is not a proper rotation "
                          "(orthonormal, det +1)")
    if not np.allclose(T_w2c[3], [0, 0, 0, 1]):
        raise CameraError(f"{where}: the extrinsic's last row must be [0, 0, 0, 1]")


def camera_from_dict(data: dict[str, Any], where: str = "camera") -> CameraSpec:
    """Parse the content of a sahmr camera file.

    Args:
        data: Mapping with ``K`` (or ``fx``, ``fy``, ``cx``, ``cy``), ``T_w2c`` or ``T_c2w``,
            optional ``image_size`` ``[W, H]``, ``convention`` and ``dist``.
        where: Name for messages (the file).

    Returns:
        The `CameraSpec`.

    Raises:
        CameraError: Missing or malformed entries.
    """
    if not isinstance(data, dict):
        raise CameraError(f"{where}: a camera file holds a mapping, got {type(data).__name__}")
    fmt = data.get("format", CAMERA_FORMAT)
    if fmt != CAMERA_FORMAT:
        raise CameraError(f"{where}: format {fmt!r} is not {CAMERA_FORMAT!r}")
    if int(data.get("version", CAMERA_VERSION)) > CAMERA_VERSION:
        raise CameraError(f"{where}: camera file version {data['version']} is newer than "
                          f"this reader ({CAMERA_VERSION})")
    if "K" in data:
        K = _matrix(data["K"], (3, 3), "K", where)
    elif all(k in data for k in ("fx", "fy", "cx", "cy")):
        K = np.array([[float(data["fx"]), float(data.get("skew", 0.0)), float(data["cx"])],
                      [0.0, float(data["fy"]), float(data["cy"])],
                      [0.0, 0.0, 1.0]])
    else:
        raise CameraError(f"{where}: needs 'K' or 'fx', 'fy', 'cx', 'cy'; has {sorted(data)}")
    has_w2c, has_c2w = "T_w2c" in data, "T_c2w" in data
    if has_w2c == has_c2w:
        raise CameraError(f"{where}: give exactly one of 'T_w2c' (world -> camera) and "
                          "'T_c2w' (camera -> world)")
    T = _matrix(data["T_w2c"] if has_w2c else data["T_c2w"], (4, 4),
                "T_w2c" if has_w2c else "T_c2w", where)
    convention = str(data.get("convention", "opencv")).lower()
    if convention not in ("opencv", "opengl"):
        raise CameraError(f"{where}: convention must be 'opencv' or 'opengl', got {convention!r}")
    _validate(K, T if has_w2c else invert_extrinsics(T), where)
    T_w2c = T if has_w2c else invert_extrinsics(T)
    if convention == "opengl":  # camera axes x right, y up, z backwards -> OpenCV
        T_w2c = _OPENGL_TO_OPENCV @ T_w2c
    size = None
    if data.get("image_size") is not None:
        s = np.asarray(data["image_size"]).reshape(-1)
        if s.size != 2 or np.any(s <= 0):
            raise CameraError(f"{where}: image_size must be [W, H], got {s.tolist()}")
        size = (int(s[0]), int(s[1]))
    dist = np.asarray(data["dist"], dtype=np.float64).reshape(-1) if "dist" in data else None
    if dist is not None and np.any(dist != 0):
        logger.warning("%s: lens distortion %s is ignored (undistort images first)",
                       where, dist.tolist())
    return CameraSpec(K=K, T_w2c=T_w2c, image_size=size, dist=dist, source="sahmr", path=where)


def _read_structured(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # json/yaml raise different types
        raise CameraError(f"{path}: cannot parse ({exc})") from exc


def _is_prox_color(data: Any) -> bool:
    return isinstance(data, dict) and "K" not in data and (
        "camera_mtx" in data or ("f" in data and "c" in data)
    )


def _load_prox(path: Path, cam2world: str | Path | None) -> CameraSpec:
    from sahmr.data.prox import load_prox_cam2world, load_prox_color_calibration

    if cam2world is None:
        raise CameraError(
            f"{path} is a PROX colour calibration (intrinsics only): also pass its "
            "extrinsics, --cam2world <PROX root>/cam2world/<scene>.json"
        )
    c2w_path = require_file(cam2world, "PROX cam2world file")
    try:
        K, dist = load_prox_color_calibration(path)
        # The PROX reader takes (root, scene) and reads root/cam2world/<scene>.json.
        if c2w_path.parent.name == "cam2world":
            T_c2w = load_prox_cam2world(c2w_path.parent.parent, c2w_path.stem)
        else:
            T_c2w = _matrix(_read_structured(c2w_path), (4, 4), "cam2world", str(c2w_path))
    except (ValueError, KeyError, TypeError) as exc:
        raise CameraError(f"PROX calibration: {exc}") from exc
    T_w2c = invert_extrinsics(T_c2w)
    _validate(K, T_w2c, str(c2w_path))
    return CameraSpec(K=K, T_w2c=T_w2c, image_size=None, dist=dist, source="prox",
                      mirrored_images=True, path=str(path))


def _load_rich(path: Path) -> CameraSpec:
    from sahmr.data.rich import load_rich_camera

    try:
        cam = load_rich_camera(path.parent, "", 0, xml_path=path)
    except (ValueError, SyntaxError) as exc:  # ET.ParseError is a SyntaxError
        raise CameraError(f"RICH calibration {path}: {exc}") from exc
    _validate(cam.K, cam.T_w2c, str(path))
    return CameraSpec(K=cam.K, T_w2c=cam.T_w2c, image_size=None, dist=cam.dist,
                      source="rich", path=str(path))


def load_camera(
    path: str | Path, *, cam2world: str | Path | None = None, scale: float = 1.0
) -> CameraSpec:
    """Read a camera file: sahmr JSON/YAML, RICH XML or PROX ``Color.json`` (+ cam2world).

    Args:
        path: The camera file.
        cam2world: PROX only: the scene's ``cam2world/<scene>.json`` (camera -> world).
        scale: Image resize factor the intrinsics are scaled by (e.g. 0.25 for RICH's
            ``images_ds4``).

    Returns:
        The `CameraSpec`.

    Raises:
        MissingFileError: The file is missing or unreadable.
        CameraError: Unknown or malformed content.
    """
    p = require_file(path, "camera file")
    suffix = p.suffix.lower()
    if suffix == ".xml":
        cam = _load_rich(p)
    elif suffix in (".json", ".yaml", ".yml"):
        data = _read_structured(p)
        cam = _load_prox(p, cam2world) if _is_prox_color(data) else camera_from_dict(data, str(p))
    else:
        raise CameraError(f"{p}: unknown camera file type {suffix!r} (.json, .yaml, .xml)")
    if cam2world is not None and cam.source != "prox":
        raise CameraError(f"--cam2world is for PROX Color.json calibrations; {p} is a "
                          f"{cam.source} camera file")
    return cam.scaled(scale)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_bbox(text: str) -> np.ndarray:
    """Parse ``"x0,y0,x1,y1"`` (commas and/or spaces).

    Raises:
        BBoxError: Not exactly 4 numbers.
    """
    values = re.findall(_NUMBER, text)
    if len(values) != 4 or re.sub(rf"{_NUMBER}|[\s,\[\]]", "", text):
        raise BBoxError(f"bbox must be 4 numbers x0,y0,x1,y1; got {text.strip()!r}")
    return np.array([float(v) for v in values])


def read_bbox_file(path: str | Path) -> np.ndarray:
    """Read a person box from a file (text, JSON, or OpenPose keypoints JSON).

    OpenPose keypoints are taken to be in the pixels of the image as the model sees it (for
    PROX: un-mirrored, like PROX's own keypoints).

    Args:
        path: The file.

    Returns:
        (4,) float64 ``x0, y0, x1, y1``.

    Raises:
        MissingFileError: Missing file.
        BBoxError: Unreadable content or nobody found in the keypoints.
    """
    p = require_file(path, "bbox file")
    if p.suffix.lower() != ".json":
        return parse_bbox(p.read_text(encoding="utf-8"))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BBoxError(f"{p}: cannot parse ({exc})") from exc
    if isinstance(data, dict) and "people" in data:
        from sahmr.data.prox import bbox_from_openpose

        box = bbox_from_openpose(p, 0)
        if box is None:
            raise BBoxError(f"{p}: no confident person in the OpenPose keypoints")
        return box
    if isinstance(data, dict):
        if "bbox" not in data:
            raise BBoxError(f"{p}: a JSON bbox file holds [x0,y0,x1,y1] or {{'bbox': [...]}}")
        data = data["bbox"]
    arr = np.asarray(data, dtype=np.float64).reshape(-1) if isinstance(data, list) else None
    if arr is None or arr.size != 4:
        raise BBoxError(f"{p}: bbox must be 4 numbers x0,y0,x1,y1")
    return arr


def missing_sidecar(kind: str, image: Path, tried: list[Path]) -> MissingFileError:
    """The error for an image whose camera or bbox file cannot be found."""
    names = ", ".join(t.name for t in tried)
    return MissingFileError(
        f"no {kind} for {image.name}: pass --{kind} or put one of {names} next to it"
    )
