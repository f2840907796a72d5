"""Rendering one synthetic sample: the 224x224 person crop (rendered directly with the crop
camera), its person mask and depth, the occlusion ratio and an optional small full frame.

The room's Embree ray intersector is built once per room (`RoomRaycaster`) and the body's
once per placed body (`BodyRaycaster`); every view casts its rays against both and keeps the
nearer hit, which gives the person's un-occluded silhouette for free: occlusion ratio =
1 - (pixels where the body is the nearest hit) / (pixels where the body is hit at all).
A synthetic occluder of the view (`sahmr.synth.occluders`) is a third caster, drawn and
counted like the room.
Shading is the same Lambertian model as `sahmr.viz.render.render` (key light + head light +
ambient, two-sided faces). Frames: world z-up, metres; camera OpenCV; ``T_w2c`` world -> cam.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_camera, square_bbox
from sahmr.synth.appearance import Appearance
from sahmr.synth.cameras import Camera, CameraRanges, person_bbox, person_bbox_ok
from sahmr.synth.occluders import Occluder
from sahmr.viz.render import _intersector

logger = logging.getLogger(__name__)

BBOX_SCALE = 1.2
"""Square crop side = longer bbox side x this (as `sahmr.data.sample.crop_around_bbox`)."""

MASK_BACKGROUND, MASK_VISIBLE, MASK_OCCLUDED = 0, 1, 2
"""Person mask values: not person, visible person, person hidden behind the scene or a
synthetic occluder."""


class _Raycaster:
    """Nearest-hit ray caster over one triangle mesh.

    Uses an Embree scene through ``embreex`` directly (vertices shifted to their minimum
    corner for float32 precision; distances along unit rays come from Embree's ``tfar``),
    falling back to trimesh's intersector when ``embreex`` is missing.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        tri = vertices[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        self.normals = normals / np.where(norm > 0, norm, 1.0)
        self._normals32 = self.normals.astype(np.float32)
        self.vertices = vertices
        self._origin = vertices.min(axis=0)
        try:
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh
        except ImportError:
            self._scene = None
            self._isect = _intersector(trimesh.Trimesh(vertices, faces, process=False))
        else:
            self._scene = rtcore_scene.EmbreeScene()
            TriangleMesh(
                scene=self._scene,
                vertices=(vertices - self._origin).astype(np.float32),
                indices=faces.astype(np.int32),
            )

    def occluded(self, origin: np.ndarray, dirs: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Whether each ray hits the mesh within a distance.

        Args:
            origin: (3,) ray origin, world frame.
            dirs: (N, 3) unit directions, world frame.
            dist: (N,) distances along the rays, metres.

        Returns:
            (N,) bool, True where a hit lies at most ``dist`` away.
        """
        n = len(dirs)
        if self._scene is not None:
            o = np.broadcast_to((origin - self._origin).astype(np.float32), (n, 3))
            d = np.ascontiguousarray(dirs, dtype=np.float32)
            far = np.ascontiguousarray(dist, dtype=np.float32)
            return self._scene.run(np.ascontiguousarray(o), d, dists=far, query="OCCLUDED") >= 0
        _, hit = self.cast(origin, dirs)
        return hit <= dist

    def cast(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hits of rays from one origin.

        Args:
            origin: (3,) ray origin, world frame.
            dirs: (N, 3) unit directions, world frame.

        Returns:
            ``(face (N,) int64, -1 on a miss; distance (N,) float64 along the ray, inf on a
            miss)``.
        """
        n = len(dirs)
        if self._scene is not None:
            o = np.broadcast_to((origin - self._origin).astype(np.float32), (n, 3))
            d = np.ascontiguousarray(dirs, dtype=np.float32)
            res = self._scene.run(np.ascontiguousarray(o), d, output=1)
            face = res["primID"].astype(np.int64)
            hit = res["geomID"] >= 0
            face[~hit] = -1
            dist = np.where(hit, res["tfar"].astype(np.float64), np.inf)
            return face, dist
        face = np.full(n, -1, dtype=np.int64)
        dist = np.full(n, np.inf)
        tri, ray, loc = self._isect.intersects_id(
            np.broadcast_to(origin, dirs.shape),
            dirs,
            multiple_hits=False,
            return_locations=True,
        )
        face[ray] = tri
        dist[ray] = np.linalg.norm(loc - origin, axis=1)
        return face, dist


class RoomRaycaster(_Raycaster):
    """Ray caster over a room mesh (world frame); build once per room."""


class BodyRaycaster(_Raycaster):
    """Ray caster over one posed body mesh (world frame); build once per placed body."""


@functools.lru_cache(maxsize=8)
def _pixel_grid(width: int, height: int) -> np.ndarray:
    """(H * W, 3) float32 homogeneous pixel centres ``(u, v, 1)``, row-major (read-only)."""
    uu, vv = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size, np.float32)], axis=-1)
    pix.flags.writeable = False
    return pix


def pixel_rays(
    K: np.ndarray, T_w2c: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit rays through pixel centres, OpenCV convention (pixel ``(i, j)`` at ``(u, v) =
    (j, i)``, as `sahmr.geometry.crops` and `sahmr.geometry.cameras.project`).

    Args:
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.

    Returns:
        ``(origin_world (3,) float64, directions_world (H * W, 3) float32)``, row-major
        pixel order.
    """
    R = np.asarray(T_w2c, dtype=np.float64)[:3, :3]
    # one 3x3 product for all pixels: d = R^T K^-1 (u, v, 1), as a row vector pix @ M
    M = (np.linalg.inv(np.asarray(K, dtype=np.float64)).T @ R).astype(np.float32)
    dirs = _pixel_grid(width, height) @ M
    dirs *= (1.0 / np.sqrt(np.einsum("ij,ij->i", dirs, dirs)))[:, None]
    return -R.T @ np.asarray(T_w2c, dtype=np.float64)[:3, 3], dirs


def _cast_in_projection(
    caster: _Raycaster,
    origin: np.ndarray,
    dirs: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hits of a small mesh, casting only the rays inside its projected bounding
    rectangle (+1 px), or every ray when a vertex lies at or behind the camera plane.

    Args:
        caster: The mesh's caster (``vertices`` (N, 3) world).
        origin: (3,) camera centre, world.
        dirs: (H * W, 3) unit pixel rays, world, row-major (`pixel_rays`).
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.

    Returns:
        ``(face (H * W,) int64, -1 on a miss; distance (H * W,) float64, inf on a miss)``.
    """
    face = np.full(len(dirs), -1, dtype=np.int64)
    dist = np.full(len(dirs), np.inf)
    p = caster.vertices @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    if not np.all(p[:, 2] > 1e-6):
        return caster.cast(origin, dirs)
    uv = p[:, :2] / p[:, 2:] @ K[:2, :2].T + K[:2, 2]
    j0, i0 = np.floor(uv.min(axis=0) - 1.0).astype(int)
    j1, i1 = np.ceil(uv.max(axis=0) + 1.0).astype(int)
    j0, i0, j1, i1 = max(j0, 0), max(i0, 0), min(j1, width - 1), min(i1, height - 1)
    if j0 <= j1 and i0 <= i1:
        jj, ii = np.meshgrid(np.arange(j0, j1 + 1), np.arange(i0, i1 + 1))
        sel = (ii * width + jj).ravel()
        face[sel], dist[sel] = caster.cast(origin, dirs[sel])
    return face, dist


@dataclass
class ViewRender:
    """One rendered view.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 camera z (m) of the nearest surface, inf on a miss.
        mask: (H, W) uint8 person mask (`MASK_VISIBLE`, `MASK_OCCLUDED`, else 0).
        person_pixels: Pixels where the body is hit at all (person rendered alone).
        visible_pixels: Pixels where the body is the nearest surface.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    person_pixels: int
    visible_pixels: int

    @property
    def occlusion(self) -> float:
        """1 - visible / alone person pixels; NaN when the person covers no pixel."""
        if self.person_pixels == 0:
            return float("nan")
        return 1.0 - self.visible_pixels / self.person_pixels


def render_view(
    room: RoomRaycaster,
    body: BodyRaycaster,
    appearance: Appearance,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
    occluder: Occluder | None = None,
) -> ViewRender:
    """Ray-casts room + body (+ an occluder) through a pinhole camera (one ray per pixel
    centre, OpenCV convention: `pixel_rays`).

    Args:
        room: Room caster (faces coloured by ``appearance.room_face_colors``).
        body: Body caster (faces coloured by ``appearance.body_face_colors``).
        appearance: Colours and light.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.
        occluder: Optional synthetic occluder (`sahmr.synth.occluders`), drawn like scene
            geometry: person pixels it hides count as occluded.

    Returns:
        The `ViewRender`.
    """
    T_w2c = np.asarray(T_w2c, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    origin, dirs = pixel_rays(K, T_w2c, width, height)
    # The body can only be hit inside its projected bounding rectangle (+1 px): cast there.
    f_body, d_body = _cast_in_projection(body, origin, dirs, K, T_w2c, width, height)
    body_hit = f_body >= 0
    occ_caster = None
    if occluder is not None:
        occ_caster = _Raycaster(occluder.vertices_world, occluder.faces)
        f_occ, d_occ = _cast_in_projection(occ_caster, origin, dirs, K, T_w2c, width, height)
    # The room: where the body is hit, only "is the room nearer?" (a cheap any-hit query),
    # and its nearest hit where it is (occluded person pixels) or where the body is not.
    on_body = np.flatnonzero(body_hit)
    hidden = room.occluded(origin, dirs[on_body], d_body[on_body])
    if occ_caster is not None:
        hidden |= d_occ[on_body] < d_body[on_body]
    body_front = body_hit.copy()
    body_front[on_body[hidden]] = False
    need = np.flatnonzero(~body_front)
    f_room = np.full(len(dirs), -1, dtype=np.int64)
    d_room = np.full(len(dirs), np.inf)
    f_room[need], d_room[need] = room.cast(origin, dirs[need])
    occ_front = np.zeros(len(dirs), dtype=bool)
    if occ_caster is not None:
        occ_front[need] = d_occ[need] < d_room[need]
        f_room[occ_front] = -1
        d_room[occ_front] = d_occ[occ_front]
    room_front = f_room >= 0
    dist = np.where(body_front, d_body, d_room)

    light = np.asarray(appearance.light_dir_world, dtype=np.float64)
    light = light / np.linalg.norm(light)
    amb = np.float32(appearance.ambient)
    color = np.empty((len(dirs), 3), dtype=np.float32)
    color[:] = appearance.background
    layers = [
        (body_front, f_body, body, appearance.body_face_colors),
        (room_front, f_room, room, appearance.room_face_colors),
    ]
    if occ_caster is not None:
        layers.append((occ_front, f_occ, occ_caster, occluder.face_colors))
    for front, faces, caster, face_colors in layers:
        idx = np.flatnonzero(front)
        if idx.size == 0:
            continue
        fi = faces[idx]
        n_dot_light = (caster.normals @ light).astype(np.float32)  # per face, this light
        # d . n per pixel (= -cos of the view angle); np.take: faster row gathers
        d_dot_n = np.einsum("ij,ij->i", np.take(caster._normals32, fi, axis=0), dirs[idx])
        # two-sided faces: flip the normal towards the viewer
        nl = np.take(n_dot_light, fi)
        key = np.where(d_dot_n > 0, -nl, nl)
        np.clip(key, 0.0, 1.0, out=key)
        head = np.minimum(np.abs(d_dot_n), 1.0)
        shade = amb + (1.0 - amb) * (0.65 * key + 0.35 * head)
        colors32 = np.asarray(face_colors, dtype=np.float32)
        color[idx] = np.take(colors32, fi, axis=0) * shade[:, None]

    z_axis_world = T_w2c[2, :3]
    depth = np.where(np.isfinite(dist), dist * (dirs @ z_axis_world), np.inf)
    mask = np.zeros(len(dirs), dtype=np.uint8)
    mask[body_hit] = MASK_OCCLUDED
    mask[body_front] = MASK_VISIBLE
    rgb = (np.clip(color, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return ViewRender(
        rgb=rgb.reshape(height, width, 3),
        depth=depth.astype(np.float32).reshape(height, width),
        mask=mask.reshape(height, width),
        person_pixels=int(body_hit.sum()),
        visible_pixels=int(body_front.sum()),
    )


def crop_intrinsics(
    K: np.ndarray, bbox: np.ndarray, size: int = DEFAULT_CROP_SIZE, scale: float = BBOX_SCALE
) -> np.ndarray:
    """Intrinsics of the square network crop around a person box.

    Args:
        K: (3, 3) full-image intrinsics, pixels.
        bbox: (4,) person box ``[x0, y0, x1, y1]``, full-image pixels.
        size: Crop side S, pixels.
        scale: Square side = longer box side x scale (`sahmr.geometry.crops.square_bbox`).

    Returns:
        (3, 3) float64 crop intrinsics (`sahmr.geometry.crops.crop_camera`).
    """
    box = torch.as_tensor(np.asarray(bbox, dtype=np.float64)).reshape(1, 4)
    cx, cy, side = square_bbox(box, scale=scale)
    side = torch.clamp(side, min=1.0)
    Kc = crop_camera(torch.as_tensor(np.asarray(K, dtype=np.float64))[None], (cx, cy, side), size)
    return Kc[0].numpy()


@dataclass
class RenderedSample:
    """A rendered, accepted view of a placed body.

    Attributes:
        camera: Full-image camera.
        bbox: (4,) float64 tight person box ``[x0, y0, x1, y1]``, full-image pixels.
        crop: `ViewRender` of the S x S crop camera.
        K_crop: (3, 3) crop intrinsics.
        occlusion: Occlusion ratio in [0, 1].
        image: Optional small full frame (h, w, 3) uint8 rendered at ``image_scale``.
        image_scale: Scale of ``image`` relative to the camera's (W, H) (0 when absent).
        occluder: The synthetic occluder drawn into the view, or None.
    """

    camera: Camera
    bbox: np.ndarray
    crop: ViewRender
    K_crop: np.ndarray
    occlusion: float
    image: np.ndarray | None = None
    image_scale: float = 0.0
    occluder: Occluder | None = None


def render_sample(
    room: RoomRaycaster,
    body: BodyRaycaster,
    vertices_world: np.ndarray,
    appearance: Appearance,
    camera: Camera,
    ranges: CameraRanges,
    *,
    crop_size: int = DEFAULT_CROP_SIZE,
    full_frame_scale: float = 0.0,
    occluder: Occluder | None = None,
) -> tuple[RenderedSample | None, str]:
    """Checks the person's box, renders the crop, measures occlusion, optionally a frame.

    Args:
        room: Room caster.
        body: Body caster of the posed body.
        vertices_world: (V, 3) posed body vertices, world frame, metres.
        appearance: Colours and light.
        camera: Full-image camera.
        ranges: Box / occlusion limits.
        crop_size: Crop side S, pixels.
        full_frame_scale: When > 0, also render the full frame at this scale.
        occluder: Optional synthetic occluder drawn into the crop and the frame.

    Returns:
        ``(sample, "")`` when accepted, else ``(None, reason)`` with reason ``"bbox"``,
        ``"empty"`` or ``"occlusion"``.
    """
    bbox = person_bbox(camera, vertices_world)
    if not person_bbox_ok(camera, bbox, ranges):
        return None, "bbox"
    K_crop = crop_intrinsics(camera.K, bbox, crop_size)
    crop = render_view(room, body, appearance, K_crop, camera.T_w2c, crop_size, crop_size, occluder)
    occ = crop.occlusion
    if np.isnan(occ):
        return None, "empty"
    if occ > ranges.max_occlusion:
        return None, "occlusion"
    image = None
    if full_frame_scale > 0:
        small = camera.scaled(full_frame_scale)
        image = render_view(
            room, body, appearance, small.K, small.T_w2c, small.width, small.height, occluder
        ).rgb
    return (
        RenderedSample(
            camera=camera,
            bbox=bbox,
            crop=crop,
            K_crop=K_crop,
            occlusion=float(occ),
            image=image,
            image_scale=float(full_frame_scale) if image is not None else 0.0,
            occluder=occluder,
        ),
        "",
    )
