"""What the camera sees of a body in a scene: person masks, occlusion ratio, visible vertices.

Both the generator (`sahmr.synth.render_sample`) and the real datasets (RICH, PROX:
`sahmr.data.visibility`) describe a sample's visibility the same way:

* person mask of a view (one ray per pixel centre): `MASK_VISIBLE` where the body is the
  nearest surface, `MASK_OCCLUDED` where the body is hit but the scene (or a synthetic
  occluder) is nearer, `MASK_BACKGROUND` elsewhere (`body_rays`, `person_mask`);
* occlusion ratio = 1 - visible / person pixels, NaN when the body covers no pixel
  (`occlusion_ratio`; the generator's ``occlusion`` field, `sahmr.data.sample.Sample.occlusion`);
* per body vertex (`vertex_visibility`): inside the image, not behind the scan by more than
  `SCENE_TOLERANCE_M` along its camera ray, not behind the body itself by more than
  `SELF_TOLERANCE_M` (self-occlusion: the far side of the body).

Rays come from `sahmr.geometry.raycast` (one Embree caster per mesh: the scan once per scene,
the body once per frame). Frames: world (scan) frame, metres; camera OpenCV, ``T_w2c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sahmr.geometry.raycast import MeshRaycaster, cast_in_projection, pixel_rays

MASK_BACKGROUND, MASK_VISIBLE, MASK_OCCLUDED = 0, 1, 2
"""Person mask values: not person, visible person, person hidden behind the scene or a
synthetic occluder."""

SCENE_TOLERANCE_M = 0.02
"""A vertex counts as hidden by the scan when the scan surface lies more than this (metres,
along the vertex's camera ray) in front of it: above scan noise and the few millimetres a
fitted foot sinks into a scanned floor."""
SELF_TOLERANCE_M = 0.005
"""A vertex counts as hidden by its own body when another body surface lies more than this
(metres, along the ray) in front of it: the vertex's own faces end at the vertex, so only
float precision needs the margin; thinner than a finger."""


def occlusion_ratio(person_pixels: int, visible_pixels: int) -> float:
    """1 - visible / person pixels (the generator's ``occlusion``); NaN for no person pixel."""
    if person_pixels == 0:
        return float("nan")
    return 1.0 - visible_pixels / person_pixels


@dataclass
class BodyRays:
    """The body's hits along a view's pixel rays.

    Attributes:
        face: (N,) int64 body face hit by each ray, -1 on a miss.
        dist: (N,) float64 distance along the ray to that hit (metres), inf on a miss.
        hit: (N,) bool, the body is hit (the person's un-occluded silhouette).
        front: (N,) bool, the body is hit and nothing else is nearer (visible person).
    """

    face: np.ndarray
    dist: np.ndarray
    hit: np.ndarray
    front: np.ndarray


def body_rays(
    scene: MeshRaycaster,
    body: MeshRaycaster,
    origin: np.ndarray,
    dirs: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
    *,
    other_dist: np.ndarray | None = None,
) -> BodyRays:
    """Casts the body along pixel rays and tells which of its hits the scene hides.

    Where the body is hit, only "is the scene nearer?" is asked (a cheap any-hit query).

    Args:
        scene: Caster of the room / scan (world frame).
        body: Caster of the posed body (world frame).
        origin: (3,) camera centre, world frame.
        dirs: (H * W, 3) unit pixel rays (`sahmr.geometry.raycast.pixel_rays`).
        K: (3, 3) intrinsics of the view, pixels.
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.
        other_dist: Optional (H * W,) distances (metres, inf for none) of further geometry
            drawn like the scene, e.g. a synthetic occluder.

    Returns:
        `BodyRays`.
    """
    face, dist = cast_in_projection(body, origin, dirs, K, T_w2c, width, height)
    hit = face >= 0
    on_body = np.flatnonzero(hit)
    hidden = scene.occluded(origin, dirs[on_body], dist[on_body])
    if other_dist is not None:
        hidden |= other_dist[on_body] < dist[on_body]
    front = hit.copy()
    front[on_body[hidden]] = False
    return BodyRays(face=face, dist=dist, hit=hit, front=front)


def person_mask(rays: BodyRays, width: int, height: int) -> np.ndarray:
    """(H, W) uint8 person mask (`MASK_VISIBLE`, `MASK_OCCLUDED`, else `MASK_BACKGROUND`)."""
    mask = np.full(len(rays.hit), MASK_BACKGROUND, dtype=np.uint8)
    mask[rays.hit] = MASK_OCCLUDED
    mask[rays.front] = MASK_VISIBLE
    return mask.reshape(height, width)


@dataclass
class PersonView:
    """The person in one view.

    Attributes:
        mask: (H, W) uint8 person mask (`MASK_VISIBLE`, `MASK_OCCLUDED`, else 0).
        person_pixels: Pixels where the body is hit at all (person rendered alone).
        visible_pixels: Pixels where the body is the nearest surface.
    """

    mask: np.ndarray
    person_pixels: int
    visible_pixels: int

    @property
    def occlusion(self) -> float:
        """`occlusion_ratio` of the view."""
        return occlusion_ratio(self.person_pixels, self.visible_pixels)


def person_view(
    scene: MeshRaycaster,
    body: MeshRaycaster,
    K: np.ndarray,
    T_w2c: np.ndarray,
    width: int,
    height: int,
) -> PersonView:
    """Person mask and occlusion of a pinhole view (the generator's crop mask, unshaded).

    Args:
        scene: Caster of the room / scan (world frame).
        body: Caster of the posed body (world frame).
        K: (3, 3) intrinsics, pixels (e.g. the crop camera).
        T_w2c: (4, 4) world -> camera.
        width: W, pixels.
        height: H, pixels.

    Returns:
        `PersonView`.
    """
    K = np.asarray(K, dtype=np.float64)
    T_w2c = np.asarray(T_w2c, dtype=np.float64)
    origin, dirs = pixel_rays(K, T_w2c, width, height)
    rays = body_rays(scene, body, origin, dirs, K, T_w2c, width, height)
    return PersonView(
        mask=person_mask(rays, width, height),
        person_pixels=int(rays.hit.sum()),
        visible_pixels=int(rays.front.sum()),
    )


@dataclass
class VertexVisibility:
    """Per-vertex visibility from one camera.

    Attributes:
        in_image: (V,) bool, in front of the camera and projected inside the image.
        scene_hidden: (V,) bool, behind the scan (tested for ``in_image`` vertices only).
        self_hidden: (V,) bool, behind the body itself (``in_image`` vertices only).
    """

    in_image: np.ndarray
    scene_hidden: np.ndarray
    self_hidden: np.ndarray

    @property
    def visible(self) -> np.ndarray:
        """(V,) bool: in the image and hidden by nothing."""
        return self.in_image & ~self.scene_hidden & ~self.self_hidden


def vertex_visibility(
    vertices_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    *,
    scene: MeshRaycaster | None = None,
    body: MeshRaycaster | None = None,
    dist_coeffs: np.ndarray | None = None,
    scene_tolerance: float = SCENE_TOLERANCE_M,
    self_tolerance: float = SELF_TOLERANCE_M,
) -> VertexVisibility:
    """Which body vertices the camera sees.

    A vertex is in the image when it lies in front of the camera (z > 0) and projects inside
    ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` (pixel edges, OpenCV centres); with
    ``dist_coeffs`` its projection is distorted first (the stored image of a distorted lens).
    It is hidden when a ray from the camera centre to it hits the scan more than
    ``scene_tolerance``, or the body more than ``self_tolerance``, before the vertex.

    Args:
        vertices_world: (V, 3) body vertices, world frame, metres.
        K: (3, 3) pinhole intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        image_size: ``(W, H)`` pixels.
        scene: Caster of the scan (world frame); None: nothing hides the body.
        body: Caster of the posed body with these vertices; None: no self-occlusion test.
        dist_coeffs: Optional OpenCV distortion coefficients of the stored image.
        scene_tolerance: Metres (see `SCENE_TOLERANCE_M`).
        self_tolerance: Metres (see `SELF_TOLERANCE_M`).

    Returns:
        `VertexVisibility`.
    """
    verts = np.asarray(vertices_world, dtype=np.float64)
    T = np.asarray(T_w2c, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    cam = verts @ T[:3, :3].T + T[:3, 3]
    n = len(verts)
    in_image = cam[:, 2] > 1e-6
    z = np.where(in_image, cam[:, 2], 1.0)
    uv = cam[:, :2] / z[:, None] @ K[:2, :2].T + K[:2, 2]
    if dist_coeffs is not None and np.any(np.asarray(dist_coeffs) != 0):
        from sahmr.geometry.distortion import distort_pixels

        uv = distort_pixels(uv, K, dist_coeffs)
    w, h = image_size
    in_image &= np.all(np.isfinite(uv), axis=1)
    in_image &= (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5)
    in_image &= (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
    scene_hidden = np.zeros(n, dtype=bool)
    self_hidden = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(in_image)
    if idx.size and (scene is not None or body is not None):
        origin = -T[:3, :3].T @ T[:3, 3]
        ray = verts[idx] - origin
        length = np.linalg.norm(ray, axis=1)
        dirs = ray / length[:, None]
        if scene is not None:
            scene_hidden[idx] = scene.occluded(
                origin, dirs, np.maximum(length - scene_tolerance, 0.0)
            )
        if body is not None:
            self_hidden[idx] = body.occluded(origin, dirs, np.maximum(length - self_tolerance, 0.0))
    return VertexVisibility(in_image=in_image, scene_hidden=scene_hidden, self_hidden=self_hidden)


def scene_hidden_share(
    vertices_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    scene: MeshRaycaster,
) -> float:
    """Share of a body's vertices in the image that the scan hides from the camera
    (`vertex_visibility`'s ``scene_hidden`` over its ``in_image``; the body's own far side
    does not count); 0.0 when no vertex is in the image.

    Args:
        vertices_world: (V, 3) body vertices (a subset will do), world frame, metres.
        K: (3, 3) pinhole intrinsics, pixels.
        T_w2c: (4, 4) world -> camera.
        image_size: ``(W, H)`` pixels.
        scene: Caster of the scan (world frame).
    """
    vis = vertex_visibility(vertices_world, K, T_w2c, image_size, scene=scene)
    seen = int(vis.in_image.sum())
    return float(vis.scene_hidden[vis.in_image].sum()) / seen if seen else 0.0
