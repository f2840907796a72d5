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

import logging
from dataclasses import dataclass

import numpy as np
import torch

from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_camera, square_bbox
from sahmr.geometry.raycast import MeshRaycaster, cast_in_projection, pixel_rays
from sahmr.scene.visibility import (
    MASK_BACKGROUND,
    MASK_OCCLUDED,
    MASK_VISIBLE,
    body_rays,
    occlusion_ratio,
    person_mask,
)
from sahmr.synth.appearance import Appearance
from sahmr.synth.cameras import Camera, CameraRanges, person_bbox, person_bbox_ok
from sahmr.synth.occluders import Occluder

__all__ = [
    "BBOX_SCALE",
    "MASK_BACKGROUND",  # the person mask values live in sahmr.scene.visibility
    "MASK_OCCLUDED",
    "MASK_VISIBLE",
    "BodyRaycaster",
    "RenderedSample",
    "RoomRaycaster",
    "ViewRender",
    "crop_intrinsics",
    "pixel_rays",
    "render_sample",
    "render_view",
]

logger = logging.getLogger(__name__)

BBOX_SCALE = 1.2
"""Square crop side = longer bbox side x this (as `sahmr.data.sample.crop_around_bbox`)."""


class RoomRaycaster(MeshRaycaster):
    """Ray caster over a room mesh (world frame); build once per room."""


class BodyRaycaster(MeshRaycaster):
    """Ray caster over one posed body mesh (world frame); build once per placed body."""


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
        """1 - visible / alone person pixels; NaN when the person covers no pixel
        (`sahmr.scene.visibility.occlusion_ratio`)."""
        return occlusion_ratio(self.person_pixels, self.visible_pixels)


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
    occ_caster = d_occ = None
    if occluder is not None:
        occ_caster = MeshRaycaster(occluder.vertices_world, occluder.faces)
        f_occ, d_occ = cast_in_projection(occ_caster, origin, dirs, K, T_w2c, width, height)
    # The body, cast only inside its projected bounding rectangle (+1 px); where it is hit,
    # only "is the room (or the occluder) nearer?"; the room's nearest hit where the body is
    # hidden (occluded person pixels) or missed.
    rays = body_rays(room, body, origin, dirs, K, T_w2c, width, height, other_dist=d_occ)
    f_body, d_body, body_front = rays.face, rays.dist, rays.front
    need = np.flatnonzero(~body_front)
    f_room = np.full(len(dirs), -1, dtype=np.int64)
    d_room = np.full(len(dirs), np.inf)
    f_room[need], d_room[need] = room.cast(origin, dirs[need])
    occ_front = np.zeros(len(dirs), dtype=bool)
    if d_occ is not None:
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
    rgb = (np.clip(color, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return ViewRender(
        rgb=rgb.reshape(height, width, 3),
        depth=depth.astype(np.float32).reshape(height, width),
        mask=person_mask(rays, width, height),
        person_pixels=int(rays.hit.sum()),
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
