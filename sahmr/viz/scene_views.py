"""A body in its scan from a few viewpoints, contact points coloured by region (headless).

Views: optionally the input camera's own view of the scan (everything in the image's world),
then orbit views around the body, looking down at it, chosen among candidates for how much of
the body they see, with a near clipping plane just in front of the body's surroundings and
back faces culled, so walls and furniture between a viewpoint and the body are cut away.
Meshes are ray cast with `sahmr.viz.render.render` (Embree); scans given as point clouds are
splatted into the same depth buffer. Frames: world = the scan's frame, metres;
cameras OpenCV with ``T_w2c``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh
from PIL import Image, ImageDraw

from sahmr.body.constants import CONTACT_REGION_NAMES
from sahmr.scene.orientation import up_vector  # re-exported: the viewpoints use it
from sahmr.viz.colors import (
    BODY_COLOR,
    REGION_COLORS,
    SCENE_COLOR,
    face_colors_from_vertices,
    region_colors,
    to_uint8,
)
from sahmr.viz.grid import image_grid
from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render

logger = logging.getLogger(__name__)

__all__ = [
    "ViewCamera",
    "choose_orbit_views",
    "contact_spheres",
    "orbit_cameras",
    "region_legend",
    "render_scene_view",
    "render_scene_views",
    "up_vector",
]

@dataclass
class ViewCamera:
    """One viewpoint.

    Attributes:
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.
        near: Near clipping depth, metres (0: none).
        label: Caption.
        cull_back_faces: Drop scene faces (and oriented points) facing away from the camera:
            with room-facing normals, walls between an outside viewpoint and the room vanish
            ("doll's house" view) while closed furniture looks the same.
    """

    K: np.ndarray
    T_w2c: np.ndarray
    width: int
    height: int
    near: float = 0.0
    label: str = ""
    cull_back_faces: bool = False

    @property
    def center_world(self) -> np.ndarray:
        """(3,) camera centre, world frame."""
        return -self.T_w2c[:3, :3].T @ self.T_w2c[:3, 3]


def orbit_cameras(
    target_world: np.ndarray,
    radius: float,
    up_world: np.ndarray,
    *,
    azimuths_deg: Sequence[float] = (0.0, 120.0, 240.0),
    elevations_deg: Sequence[float] | float = 35.0,
    reference_world: np.ndarray | None = None,
    size: tuple[int, int] = (400, 300),
    fov_x_deg: float = 55.0,
    keep_radius: float | None = None,
) -> list[ViewCamera]:
    """Cameras on a sphere around a target, looking at it.

    Args:
        target_world: (3,) point looked at, world frame.
        radius: Radius (m) of the region around the target that must fit the view.
        up_world: (3,) unit up direction.
        azimuths_deg: Azimuths about the up axis; 0 is the direction of ``reference_world``
            (e.g. the input camera's centre) from the target when given.
        elevations_deg: Angle above the horizontal plane, one for all or one per azimuth.
        reference_world: Optional (3,) point fixing azimuth 0.
        size: ``(W, H)`` pixels.
        fov_x_deg: Horizontal field of view.
        keep_radius: Geometry nearer the camera than the sphere of this radius (m) around
            the target is clipped away (default ``radius``).

    Returns:
        One `ViewCamera` per azimuth, near-clipped, culling back faces.
    """
    up = np.asarray(up_world, dtype=np.float64)
    up = up / np.linalg.norm(up)
    target = np.asarray(target_world, dtype=np.float64)
    ref = None
    if reference_world is not None:
        ref = np.asarray(reference_world, dtype=np.float64) - target
        ref -= up * (ref @ up)
    if ref is None or np.linalg.norm(ref) < 1e-6:
        ref = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    ref /= np.linalg.norm(ref)
    side = np.cross(up, ref)
    W, H = size
    K = intrinsics_from_fov(W, H, fov_x_deg)
    half_fov = np.arctan(0.5 * min(W, H) / K[0, 0])
    dist = radius / np.sin(half_fov)
    keep = radius if keep_radius is None else keep_radius
    elevs = np.broadcast_to(np.asarray(elevations_deg, np.float64), (len(azimuths_deg),))
    cams = []
    for az, el in zip(azimuths_deg, elevs):
        a, e = np.deg2rad(az), np.deg2rad(el)
        direction = np.cos(e) * (np.cos(a) * ref + np.sin(a) * side) + np.sin(e) * up
        T = look_at(target + dist * direction, target, up)
        cams.append(ViewCamera(K, T, W, H, near=max(dist - keep, 0.05),
                               label=f"azimuth {az % 360:.0f}, elevation {el:.0f} deg",
                               cull_back_faces=True))
    return cams


def choose_orbit_views(
    scene_mesh: tuple[np.ndarray, np.ndarray] | None,
    body_vertices: np.ndarray,
    cameras: Sequence[ViewCamera],
    count: int,
    *,
    min_separation_deg: float = 75.0,
    samples: int = 64,
) -> list[ViewCamera]:
    """Pick the candidate views that see most of the body, spread around it.

    Visibility of a view = share of sampled body vertices whose segment from the view's
    near plane is not blocked by the scene mesh (back faces culled as when rendering).
    Views are taken greedily by visibility, skipping those closer than
    ``min_separation_deg`` (viewing directions) to one already taken.

    Args:
        scene_mesh: ``(vertices, faces)`` world frame, or None (all views equal).
        body_vertices: (V, 3) world frame.
        cameras: Candidates (e.g. `orbit_cameras` over several azimuths and elevations).
        count: Views wanted.
        min_separation_deg: Least angle between chosen viewing directions.
        samples: Body vertices tested.

    Returns:
        Up to ``count`` cameras, most visible first.
    """
    cams = list(cameras)
    if scene_mesh is None or count <= 0 or not cams:
        return cams[: max(count, 0)]
    from sahmr.viz.render import _intersector

    bv = np.asarray(body_vertices, np.float64)
    pts = bv[np.linspace(0, len(bv) - 1, min(samples, len(bv))).astype(np.int64)]
    sv, sf = np.asarray(scene_mesh[0], np.float64), np.asarray(scene_mesh[1], np.int64)
    mesh = trimesh.Trimesh(sv, sf, process=False)
    normals = mesh.face_normals
    intersector = _intersector(mesh)  # one BVH; back faces are ignored per view below
    scores, dirs = [], []
    for cam in cams:
        eye = cam.center_world
        axis = cam.T_w2c[2, :3]
        d = pts - eye
        length = np.linalg.norm(d, axis=1)
        d /= length[:, None]
        t0 = cam.near / np.clip(d @ axis, 1e-6, None)  # rays start on the near plane
        start = eye + d * t0[:, None]
        tri, ray, loc = intersector.intersects_id(start, d, multiple_hits=True,
                                                  return_locations=True)
        t = t0[ray] + np.linalg.norm(loc - start[ray], axis=1)
        front = (normals[tri] * (eye - loc)).sum(1) > 0
        blocked = np.zeros(len(pts), bool)
        blocked[ray[front & (t < length[ray] - 0.02)]] = True
        scores.append(float(1.0 - blocked.mean()))
        dirs.append(-axis)
    chosen: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if all(np.degrees(np.arccos(np.clip(dirs[i] @ dirs[j], -1, 1))) >= min_separation_deg
               for j in chosen):
            chosen.append(int(i))
        if len(chosen) == count:
            break
    logger.debug("orbit view visibility %s -> %s", np.round(scores, 2).tolist(), chosen)
    return [cams[i] for i in chosen]


def contact_spheres(
    points_world: np.ndarray, labels: np.ndarray, radius: float = 0.025
) -> MeshToRender | None:
    """Small spheres at contact points, coloured by region, as one mesh.

    Args:
        points_world: (P, 3) points, world frame.
        labels: (P,) int regions 1..7.
        radius: Sphere radius, metres.

    Returns:
        A `MeshToRender` with per-face colours, or None for P = 0.
    """
    pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return None
    ico = trimesh.creation.icosphere(subdivisions=1, radius=radius)
    nv, nf = len(ico.vertices), len(ico.faces)
    verts = (pts[:, None, :] + ico.vertices[None]).reshape(-1, 3)
    faces = (ico.faces[None] + nv * np.arange(len(pts))[:, None, None]).reshape(-1, 3)
    colors = np.repeat(region_colors(labels), nf, axis=0)
    return MeshToRender(verts, faces, face_colors=colors)


MAX_SPLAT_RADIUS_PX = 4
"""Largest point splat (a square of ``2 r - 1`` pixels) when splats grow with nearness."""


def _splat(
    rgb: np.ndarray,
    depth: np.ndarray,
    points_world: np.ndarray,
    colors: np.ndarray,
    cam: ViewCamera,
    radius_px: int = 1,
    spacing_m: float | None = None,
) -> None:
    """Draw points into an image in place as squares of ``2 r - 1`` pixels, nearest wins
    against the depth buffer.

    ``r`` is ``radius_px`` for every point, or with ``spacing_m`` (the points' spacing on
    their surfaces) as large as that spacing projects at the point's depth, so that near
    surfaces close up (1.5 x the spacing, at least ``radius_px``, at most
    `MAX_SPLAT_RADIUS_PX`)."""
    p = points_world @ cam.T_w2c[:3, :3].T + cam.T_w2c[:3, 3]
    keep = p[:, 2] > max(cam.near, 1e-3)
    p, colors = p[keep], colors[keep]
    uv = np.rint(p[:, :2] / p[:, 2:] @ cam.K[:2, :2].T + cam.K[:2, 2]).astype(np.int64)
    order = np.argsort(-p[:, 2])  # far first: nearer points overwrite
    uv, z, colors = uv[order], p[order, 2], colors[order]
    if spacing_m is None:
        radius = np.full(len(z), int(radius_px))
    else:
        footprint_px = 1.5 * float(spacing_m) * float(max(cam.K[0, 0], cam.K[1, 1])) / z
        radius = np.clip(np.ceil((footprint_px + 1.0) / 2.0), radius_px, MAX_SPLAT_RADIUS_PX)
    r_max = int(radius.max()) if len(radius) else 1
    H, W = depth.shape
    for di in range(-r_max + 1, r_max):
        for dj in range(-r_max + 1, r_max):
            big = radius > max(abs(di), abs(dj))
            u, v = uv[big, 0] + dj, uv[big, 1] + di
            ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
            u, v, zz, cc = u[ok], v[ok], z[big][ok], colors[big][ok]
            front = zz < depth[v, u]
            rgb[v[front], u[front]] = cc[front]
            depth[v[front], u[front]] = zz[front]


def _front_facing(vertices: np.ndarray, faces: np.ndarray, eye_world: np.ndarray) -> np.ndarray:
    """(F,) bool: faces whose normal (right-hand winding) points towards ``eye_world``."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return ((eye_world - tri.mean(axis=1)) * n).sum(1) > 0


def _point_colors(points: np.ndarray, normals: np.ndarray | None, colors: np.ndarray | None,
                  cam: ViewCamera) -> np.ndarray:
    if colors is not None:
        return to_uint8(colors)
    base = np.asarray(SCENE_COLOR)
    if normals is None:
        return np.tile(to_uint8(base), (len(points), 1))
    view = -cam.T_w2c[2, :3]
    shade = 0.45 + 0.55 * np.abs(normals @ view)
    return to_uint8(base[None] * shade[:, None])


def render_scene_view(
    cam: ViewCamera,
    *,
    scene_mesh: tuple[np.ndarray, np.ndarray] | None,
    body_vertices: np.ndarray,
    body_faces: np.ndarray,
    body_vertex_colors: np.ndarray | None = None,
    contacts: MeshToRender | None = None,
    scene_points: np.ndarray | None = None,
    scene_point_normals: np.ndarray | None = None,
    scene_point_colors: np.ndarray | None = None,
    scene_point_spacing_m: float | None = None,
    scene_face_colors: np.ndarray | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Render the body (and contact spheres) in the scan from one viewpoint.

    Args:
        cam: The viewpoint.
        scene_mesh: ``(vertices (N, 3), faces (F, 3))`` world frame, or None.
        body_vertices: (V, 3) world frame.
        body_faces: (F_b, 3).
        body_vertex_colors: Optional (V, 3) float RGB.
        contacts: Optional contact spheres (`contact_spheres`).
        scene_points: Optional (N, 3) world points (a scan without faces), splatted.
        scene_point_normals: Optional (N, 3) normals of ``scene_points`` for shading.
        scene_point_colors: Optional (N, 3) float RGB of ``scene_points``.
        scene_point_spacing_m: Optional spacing of ``scene_points`` on their surfaces (e.g.
            their voxel pitch): near points are drawn larger, so surfaces close up; None: every
            point 3 x 3 pixels.
        scene_face_colors: Optional (F, 3) float RGB of the scene mesh.
        background: RGB where nothing is hit.

    Returns:
        (H, W, 3) uint8.
    """
    body_fc = (
        None if body_vertex_colors is None
        else face_colors_from_vertices(body_vertex_colors, body_faces)
    )
    meshes = [MeshToRender(body_vertices, body_faces, BODY_COLOR, body_fc)]
    if contacts is not None:
        meshes.append(contacts)
    if scene_mesh is not None:
        sv, sf = np.asarray(scene_mesh[0], np.float64), np.asarray(scene_mesh[1])
        sfc = scene_face_colors
        if cam.cull_back_faces:
            keep = _front_facing(sv, sf, cam.center_world)
            sf = sf[keep]
            sfc = None if sfc is None else np.asarray(sfc)[keep]
        if len(sf):
            meshes.append(MeshToRender(sv, sf, SCENE_COLOR, sfc))
    out = render(meshes, cam.K, cam.T_w2c, cam.width, cam.height, background=background,
                 near=cam.near)
    if scene_points is None or len(scene_points) == 0:
        return out.rgb
    rgb, depth = out.rgb.copy(), out.depth.copy()
    pts = np.asarray(scene_points, dtype=np.float64)
    colors = _point_colors(pts, scene_point_normals, scene_point_colors, cam)
    if cam.cull_back_faces and scene_point_normals is not None:
        keep = ((cam.center_world - pts) * scene_point_normals).sum(1) >= 0
        pts, colors = pts[keep], colors[keep]
    _splat(rgb, depth, pts, colors, cam, radius_px=2, spacing_m=scene_point_spacing_m)
    return rgb


def region_legend(labels: Sequence[int], width: int, height: int = 22) -> np.ndarray:
    """A strip naming the contact regions present, with their colours.

    Args:
        labels: Region labels to list (1..7; 0 and repeats are dropped).
        width: Strip width, pixels.
        height: Strip height, pixels.

    Returns:
        (height, width, 3) uint8.
    """
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    present = sorted({int(v) for v in labels if int(v) > 0})
    x = 6
    if not present:
        draw.text((x, 5), "no contact", fill=(60, 60, 60))
    for lab in present:
        c = tuple(int(v) for v in to_uint8(REGION_COLORS[lab]))
        draw.rectangle([x, 5, x + 12, 17], fill=c)
        name = CONTACT_REGION_NAMES[lab].replace("_", " ")
        draw.text((x + 16, 5), name, fill=(30, 30, 30))
        x += 16 + 7 * len(name) + 14
    return np.asarray(strip)


def render_scene_views(
    *,
    scene_mesh: tuple[np.ndarray, np.ndarray] | None,
    body_vertices: np.ndarray,
    body_faces: np.ndarray,
    contact_points: np.ndarray | None = None,
    contact_labels: np.ndarray | None = None,
    body_vertex_colors: np.ndarray | None = None,
    scene_points: np.ndarray | None = None,
    scene_point_normals: np.ndarray | None = None,
    scene_point_colors: np.ndarray | None = None,
    scene_point_spacing_m: float | None = None,
    up_axis: str = "z",
    input_camera: ViewCamera | None = None,
    num_orbit_views: int = 2,
    size: tuple[int, int] = (400, 300),
    context_m: float = 0.8,
    clip_context_m: float = 0.4,
    legend: bool = True,
    show_input_camera: bool = True,
) -> np.ndarray:
    """The body in its scan from the input camera and from orbit viewpoints, as one image.

    Args:
        scene_mesh: ``(vertices, faces)`` of the scan, world frame, or None (point scans).
        body_vertices: (V, 3) body, world frame.
        body_faces: (F, 3).
        contact_points: Optional (P, 3) contact scene points, world frame.
        contact_labels: Optional (P,) regions 1..7 of ``contact_points``.
        body_vertex_colors: Optional (V, 3) float RGB (e.g. contact regions painted).
        scene_points: Optional (N, 3) scan points drawn when there is no mesh.
        scene_point_normals: Optional (N, 3) normals of ``scene_points``.
        scene_point_colors: Optional (N, 3) float RGB of ``scene_points``.
        scene_point_spacing_m: Optional spacing of ``scene_points`` (`render_scene_view`).
        up_axis: The scan's up axis (``"z"``, ``"-y"``...).
        input_camera: The image's camera, drawn first (rescaled to ``size``), or None.
        num_orbit_views: Orbit views around the body.
        size: ``(W, H)`` of each view, pixels.
        context_m: Scene context (m) framed around the body's bounding sphere.
        clip_context_m: Orbit views clip away geometry nearer the camera than this (m) in
            front of the body's bounding sphere.
        legend: Add a strip naming the contact regions shown.
        show_input_camera: Draw the ``input_camera`` view; False: it only turns the orbit
            views towards the side it saw.

    Returns:
        (H', W', 3) uint8 grid of the views (captioned), with the legend below.
    """
    bv = np.asarray(body_vertices, dtype=np.float64)
    centre = 0.5 * (bv.min(0) + bv.max(0))
    body_radius = 0.5 * float(np.linalg.norm(bv.max(0) - bv.min(0)))
    radius = body_radius + context_m
    up = up_vector(up_axis)
    cams: list[ViewCamera] = []
    ref = None
    if input_camera is not None:
        if show_input_camera:
            cams.append(_fit_camera(input_camera, size))
        ref = -input_camera.T_w2c[:3, :3].T @ input_camera.T_w2c[:3, 3]
    n = max(int(num_orbit_views), 0)
    if n:
        # Candidates every 30 degrees at two elevations; keep the n that see the body best.
        azimuths = [30.0 * k for k in range(12)] * 2
        elevations = [35.0] * 12 + [65.0] * 12
        candidates = orbit_cameras(
            centre, radius, up, azimuths_deg=azimuths, elevations_deg=elevations,
            reference_world=ref, size=size, keep_radius=body_radius + clip_context_m,
        )
        cams += choose_orbit_views(scene_mesh, bv, candidates, n)
    if not cams:
        raise ValueError("render_scene_views: no view requested")
    contacts = None
    if contact_points is not None and len(contact_points):
        labels = contact_labels
        if labels is None:
            labels = np.ones(len(contact_points), np.int64)
        contacts = contact_spheres(contact_points, labels)
    views = [
        render_scene_view(
            cam,
            scene_mesh=scene_mesh,
            body_vertices=bv,
            body_faces=body_faces,
            body_vertex_colors=body_vertex_colors,
            contacts=contacts,
            scene_points=scene_points if scene_mesh is None else None,
            scene_point_normals=scene_point_normals,
            scene_point_colors=scene_point_colors,
            scene_point_spacing_m=scene_point_spacing_m,
        )
        for cam in cams
    ]
    grid = image_grid(views, [c.label for c in cams], columns=len(views))
    if not legend:
        return grid
    labels = [] if contact_labels is None else np.asarray(contact_labels).reshape(-1).tolist()
    return np.concatenate([grid, region_legend(labels, grid.shape[1])], axis=0)


def _fit_camera(cam: ViewCamera, size: tuple[int, int]) -> ViewCamera:
    """The camera rescaled (and letter-boxed) to render at ``size``, same view."""
    W, H = size
    s = min(W / cam.width, H / cam.height)
    K = cam.K.astype(np.float64).copy()
    K[:2, :2] *= s
    K[:2, 2] = (K[:2, 2] + 0.5) * s - 0.5
    K[0, 2] += 0.5 * (W - cam.width * s)
    K[1, 2] += 0.5 * (H - cam.height * s)
    return ViewCamera(K, np.asarray(cam.T_w2c, np.float64), W, H, cam.near,
                      cam.label or "input camera")
