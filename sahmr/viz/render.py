"""Headless ray-cast rendering of triangle meshes through a pinhole camera.

Rays are traced with trimesh's Embree back end (``embreex``), which runs the same way on the
CPU-only machines and on the GPU machine, needs no OpenGL context and gives exact depth,
instance masks and normals. Shading is Lambertian with one key light plus a head light and
ambient term, which is what a person needs to read a body's shape and its contacts.

Frames: vertices are given in the world frame, the camera is ``K`` (3, 3) and ``T_w2c``
(4, 4) in the OpenCV convention (x right, y down, z forward).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh

from sahmr.geometry.raycast import trimesh_intersector as _intersector

logger = logging.getLogger(__name__)


@dataclass
class MeshToRender:
    """A mesh to draw, with its colour.

    Attributes:
        vertices: array of shape (V, 3), world frame, metres.
        faces: int array of shape (F, 3).
        color: RGB in [0, 1], shape (3,), used where no per-face colours are given.
        face_colors: optional array of shape (F, 3), RGB in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float] = (0.7, 0.7, 0.7)
    face_colors: np.ndarray | None = None


@dataclass
class RenderResult:
    """What one render produces.

    Attributes:
        rgb: uint8 array of shape (H, W, 3).
        depth: float32 array of shape (H, W), camera-frame z in metres, ``inf`` where no hit.
        instance: int32 array of shape (H, W), index of the mesh hit, -1 for background.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray


def camera_rays(
    K: np.ndarray, T_w2c: np.ndarray, width: int, height: int, supersample: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres.

    Args:
        K: (3, 3) intrinsics in pixels.
        T_w2c: (4, 4) world-to-camera transform.
        width: image width in pixels.
        height: image height in pixels.
        supersample: rays per pixel along each axis.

    Returns:
        ``(origin_world (3,), directions_world (H*s, W*s, 3))``, directions unit length; the
        ray of pixel (row i, column j) passes through image point (u=j, v=i).
    """
    s = supersample
    # Pixel centres at integer coordinates (OpenCV), like sahmr.geometry.cameras.project:
    # pixel j covers [j - 0.5, j + 0.5), sampled at s evenly spaced sub-pixel centres.
    u = (np.arange(width * s) + 0.5) / s - 0.5
    v = (np.arange(height * s) + 0.5) / s - 0.5
    uu, vv = np.meshgrid(u, v)
    pix = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
    dirs_cam = pix @ np.linalg.inv(K).T
    R = T_w2c[:3, :3]
    dirs_world = dirs_cam @ R  # R^T applied to row vectors
    dirs_world /= np.linalg.norm(dirs_world, axis=-1, keepdims=True)
    origin_world = -R.T @ T_w2c[:3, 3]
    return origin_world, dirs_world


def render(
    meshes: Sequence[MeshToRender],
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ambient: float = 0.3,
    light_dir_world: np.ndarray | None = None,
    supersample: int = 1,
    near: float = 0.0,
) -> RenderResult:
    """Ray-cast meshes into an image.

    Args:
        meshes: what to draw; indices in this list are the instance ids.
        K: (3, 3) intrinsics in pixels.
        T_w2c: (4, 4) world-to-camera transform (OpenCV convention).
        width: image width in pixels.
        height: image height in pixels.
        background: RGB in [0, 1] where no ray hits.
        ambient: share of light that reaches every surface.
        light_dir_world: (3,) direction the key light comes from; default above and behind
            the camera.
        supersample: rays per pixel along each axis; colours are box-filtered down, depth and
            instance come from the centre sample of each pixel block.
        near: near clipping depth (camera z, metres): surfaces closer than this are not
            drawn (cuts away walls between a viewpoint and what it looks at).

    Returns:
        RenderResult with rgb, depth and instance at (height, width).
    """
    if not meshes:
        raise ValueError("nothing to render: pass at least one mesh")
    K = np.asarray(K, dtype=np.float64)
    T_w2c = np.asarray(T_w2c, dtype=np.float64)
    verts, faces, colors, owner = [], [], [], []
    offset = 0
    for i, m in enumerate(meshes):
        v = np.asarray(m.vertices, dtype=np.float64)
        f = np.asarray(m.faces, dtype=np.int64)
        verts.append(v)
        faces.append(f + offset)
        if m.face_colors is not None:
            colors.append(np.asarray(m.face_colors, dtype=np.float64).reshape(len(f), 3))
        else:
            colors.append(np.tile(np.asarray(m.color, dtype=np.float64), (len(f), 1)))
        owner.append(np.full(len(f), i, dtype=np.int32))
        offset += len(v)
    scene = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)
    face_color = np.concatenate(colors)
    face_owner = np.concatenate(owner)
    normals = scene.face_normals

    s = max(int(supersample), 1)
    origin, dirs = camera_rays(K, T_w2c, width, height, s)
    flat_dirs = dirs.reshape(-1, 3)
    origins = np.broadcast_to(origin, flat_dirs.shape)
    if near > 0:  # start each ray on the near plane z_cam = near
        origins = origin + flat_dirs * (near / (flat_dirs @ T_w2c[2, :3]))[:, None]
    tri, ray, loc = _intersector(scene).intersects_id(
        origins, flat_dirs, multiple_hits=False, return_locations=True
    )

    n_rays = len(flat_dirs)
    hit_face = np.full(n_rays, -1, dtype=np.int64)
    hit_face[ray] = tri
    depth = np.full(n_rays, np.inf, dtype=np.float64)
    loc_cam = loc @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    depth[ray] = loc_cam[:, 2]

    if light_dir_world is None:
        cam_up_world = -T_w2c[1, :3]  # camera -y axis in world
        cam_back_world = -T_w2c[2, :3]
        light_dir_world = 0.6 * cam_up_world + 0.8 * cam_back_world + 0.3 * T_w2c[0, :3]
    light = np.asarray(light_dir_world, dtype=np.float64)
    light = light / np.linalg.norm(light)

    rgb = np.tile(np.asarray(background, dtype=np.float64), (n_rays, 1))
    n = normals[tri]
    view = -flat_dirs[ray]
    n = np.where((np.sum(n * view, axis=1) < 0)[:, None], -n, n)  # two-sided
    key = np.clip(np.sum(n * light, axis=1), 0.0, 1.0)
    head = np.clip(np.sum(n * view, axis=1), 0.0, 1.0)
    shade = ambient + (1.0 - ambient) * (0.65 * key + 0.35 * head)
    rgb[ray] = face_color[tri] * shade[:, None]

    H, W = height, width
    rgb = rgb.reshape(H, s, W, s, 3).mean(axis=(1, 3))
    centre = s // 2
    depth_img = depth.reshape(H, s, W, s)[:, centre, :, centre]
    face_img = hit_face.reshape(H, s, W, s)[:, centre, :, centre]
    instance = np.where(face_img >= 0, face_owner[np.maximum(face_img, 0)], -1)
    return RenderResult(
        rgb=(np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8),
        depth=depth_img.astype(np.float32),
        instance=instance.astype(np.int32),
    )


def look_at(eye_world: np.ndarray, target_world: np.ndarray, up_world: np.ndarray) -> np.ndarray:
    """World-to-camera transform of a camera at ``eye`` looking at ``target``.

    Args:
        eye_world: (3,) camera centre, world frame.
        target_world: (3,) point the optical axis passes through.
        up_world: (3,) world direction that should appear up in the image.

    Returns:
        (4, 4) ``T_w2c`` in the OpenCV convention (image y points down).
    """
    eye = np.asarray(eye_world, dtype=np.float64)
    z = np.asarray(target_world, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up_world, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: the up direction is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Pinhole intrinsics (3, 3) with the principal point at the image centre."""
    f = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
