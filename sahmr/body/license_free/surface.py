"""Surface of the license-free body: an implicit body meshed to SMPL's vertex/face count.

The body is a smooth union of simple signed-distance primitives (rounded cones along the
bones, ellipsoids for the torso, head and muscles, rounded boxes for hands and feet), cut
by the plane of the soles so that the feet stand on a flat sole. The field is sampled on
a regular grid, meshed by marching cubes, reduced to its largest component and decimated
by quadric edge collapse to exactly `NUM_FACES` faces; a closed genus-0 triangle mesh with
F faces has V = F / 2 + 2 vertices, i.e. SMPL's 6890.

Each primitive carries the joint whose bone it belongs to; the vertex labels derived
from the nearest primitive seed the skinning weights.

Frame: the rest frame of `sahmr.body.license_free.skeleton` (metres, y up, facing +z,
the person's left at +x).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import fast_simplification
import numpy as np
import trimesh
from skimage.measure import marching_cubes

from sahmr.body.license_free.skeleton import JOINT_NAMES, SOLE_Y, joint_index, mirror_x

logger = logging.getLogger(__name__)

#: SMPL's face count; a closed genus-0 mesh with it has 6890 vertices.
NUM_FACES = 13776
NUM_VERTICES = NUM_FACES // 2 + 2

#: Default grid spacing of the sampled field (m).
DEFAULT_SPACING = 0.005

#: Default blend radius of the smooth union (m).
DEFAULT_BLEND = 0.02

#: Value of the field far from every primitive (m); the field is truncated there.
_FAR = 0.1


@dataclass(frozen=True)
class Primitive:
    """One signed-distance primitive of the implicit body.

    Attributes:
        kind: "cone" (rounded cone between two centres), "ellipsoid" or "box"
            (axis-aligned rounded box).
        a: Cone start / ellipsoid or box centre, shape (3,), metres.
        b: Cone end (unused otherwise), shape (3,), metres.
        size: Cone radii (r_a, r_b, -); ellipsoid semi-axes; box outer half extents (m).
        round: Rounding radius of a box (m).
        joint: Index of the joint whose bone the primitive belongs to.
        blend: Smooth-union radius with the primitives before it (m).
    """

    kind: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    size: tuple[float, float, float]
    round: float
    joint: int
    blend: float = DEFAULT_BLEND

    def mirrored(self, joint: int) -> Primitive:
        """Returns the mirror image through x = 0 assigned to ``joint``."""
        return Primitive(
            self.kind,
            tuple(mirror_x(np.array(self.a))),
            tuple(mirror_x(np.array(self.b))),
            self.size,
            self.round,
            joint,
            self.blend,
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (lo, hi) of the primitive's interior, each shape (3,) m."""
        a, b, s = np.array(self.a), np.array(self.b), np.array(self.size)
        if self.kind == "cone":
            r = max(s[0], s[1])
            return np.minimum(a, b) - r, np.maximum(a, b) + r
        return a - s, a + s

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Approximate signed distance (negative inside) of points to the primitive.

        Args:
            p: Array of shape (N, 3), points in metres.

        Returns:
            Array of shape (N,), signed distances in metres.
        """
        a, s = np.array(self.a), np.array(self.size)
        if self.kind == "cone":
            ab = np.array(self.b) - a
            t = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
            radius = s[0] + t * (s[1] - s[0])
            return np.linalg.norm(p - a - t[:, None] * ab, axis=1) - radius
        q = p - a
        if self.kind == "ellipsoid":
            k0 = np.linalg.norm(q / s, axis=1)
            k1 = np.maximum(np.linalg.norm(q / (s * s), axis=1), 1e-9)
            return k0 * (k0 - 1.0) / k1
        if self.kind == "box":
            d = np.abs(q) - (s - self.round)
            outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
            inside = np.minimum(d.max(axis=1), 0.0)
            return outside + inside - self.round
        raise ValueError(f"unknown primitive kind {self.kind!r}")


def _cone(a, b, ra, rb, joint, blend=DEFAULT_BLEND) -> Primitive:
    return Primitive("cone", a, b, (ra, rb, 0.0), 0.0, joint_index(joint), blend)


def _ell(c, radii, joint, blend=DEFAULT_BLEND) -> Primitive:
    return Primitive("ellipsoid", c, c, radii, 0.0, joint_index(joint), blend)


def _box(c, half, rnd, joint, blend=DEFAULT_BLEND) -> Primitive:
    return Primitive("box", c, c, half, rnd, joint_index(joint), blend)


def body_primitives() -> list[Primitive]:
    """The designed primitives of the neutral body, midline first, then left and right.

    Returns:
        List of primitives in a fixed order (the smooth union depends on it).
    """
    mid = [
        _ell((0.0, -0.265, 0.0), (0.160, 0.115, 0.105), "pelvis"),
        _ell((0.0, -0.10, 0.01), (0.140, 0.120, 0.098), "spine1", 0.04),
        _ell((0.0, 0.03, 0.02), (0.145, 0.120, 0.100), "spine2", 0.04),
        _ell((0.0, 0.15, 0.0), (0.165, 0.120, 0.108), "spine3", 0.04),
        _cone((0.0, 0.22, -0.012), (0.0, 0.37, 0.0), 0.058, 0.052, "neck", 0.03),
        _ell((0.0, 0.44, 0.015), (0.078, 0.105, 0.095), "head", 0.03),
        _ell((0.0, 0.39, 0.045), (0.058, 0.058, 0.07), "head", 0.03),
        _ell((0.0, 0.425, 0.112), (0.012, 0.022, 0.02), "head", 0.01),
    ]
    left = [
        # hip and leg
        _ell((0.07, -0.33, -0.04), (0.082, 0.09, 0.068), "pelvis", 0.03),
        _cone((0.09, -0.33, 0.015), (0.10, -0.70, 0.02), 0.078, 0.052, "left_hip", 0.03),
        _cone((0.10, -0.70, 0.02), (0.09, -1.09, -0.035), 0.050, 0.034, "left_knee"),
        _ell((0.10, -0.82, -0.02), (0.048, 0.10, 0.048), "left_knee"),
        # foot: heel, arch, instep, toes (the part below the sole is cut away)
        _ell((0.09, -1.14, -0.045), (0.036, 0.045, 0.040), "left_ankle"),
        _box((0.10, -1.15, 0.03), (0.045, 0.04, 0.10), 0.025, "left_ankle"),
        _cone((0.09, -1.09, -0.035), (0.11, -1.14, 0.095), 0.038, 0.03, "left_ankle"),
        _box((0.11, -1.16, 0.15), (0.043, 0.022, 0.042), 0.016, "left_foot", 0.015),
        # ear
        _ell((0.078, 0.43, 0.005), (0.012, 0.03, 0.02), "head", 0.01),
        # shoulder girdle and arm
        _cone((0.04, 0.22, -0.012), (0.17, 0.235, -0.02), 0.07, 0.055, "left_collar", 0.03),
        _ell((0.19, 0.228, -0.02), (0.062, 0.058, 0.058), "left_shoulder", 0.03),
        _cone((0.185, 0.235, -0.02), (0.445, 0.225, -0.03), 0.05, 0.04, "left_shoulder"),
        _cone((0.445, 0.225, -0.03), (0.715, 0.225, -0.03), 0.04, 0.027, "left_elbow"),
        _ell((0.53, 0.227, -0.03), (0.08, 0.042, 0.044), "left_elbow"),
        # mitten hand with a thumb (palm down)
        _box((0.762, 0.22, -0.03), (0.052, 0.02, 0.043), 0.014, "left_wrist", 0.015),
        _box((0.852, 0.217, -0.03), (0.046, 0.015, 0.041), 0.012, "left_hand", 0.015),
        _cone((0.74, 0.215, -0.005), (0.80, 0.207, 0.062), 0.014, 0.011, "left_wrist", 0.01),
    ]
    right = [p.mirrored(_mirror_joint(p.joint)) for p in left]
    return mid + left + right


def _mirror_joint(joint: int) -> int:
    name = JOINT_NAMES[joint]
    if name.startswith("left_"):
        return joint_index("right_" + name[5:])
    return joint


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two distance fields with blend radius ``k`` (m)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


@dataclass(frozen=True)
class Grid:
    """A regular sampling grid: point ``(i, j, k)`` is ``origin + spacing * (i, j, k)``."""

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]


def body_grid(primitives: list[Primitive], spacing: float) -> Grid:
    """A grid covering all primitives with a margin of a few cells.

    Args:
        primitives: The body's primitives.
        spacing: Grid spacing (m).

    Returns:
        The grid; its origin is a multiple of ``spacing`` so that builds are reproducible.
    """
    lo = np.min([p.bounds()[0] for p in primitives], axis=0) - 4 * spacing
    hi = np.max([p.bounds()[1] for p in primitives], axis=0) + 4 * spacing
    lo = np.floor(lo / spacing) * spacing
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
    return Grid(origin=lo, spacing=spacing, shape=shape)


def sample_field(primitives: list[Primitive], grid: Grid) -> np.ndarray:
    """Samples the body's signed distance field (negative inside) on a grid.

    Each primitive is evaluated only inside its bounds padded by its blend radius and a
    margin, which leaves the zero level set unchanged; the field is truncated at ``_FAR``.

    Args:
        primitives: The body's primitives, in union order.
        grid: The sampling grid.

    Returns:
        Array of shape ``grid.shape``, float64 signed distances in metres.
    """
    field = np.full(grid.shape, _FAR, dtype=np.float64)
    for prim in primitives:
        pad = prim.blend + 2 * grid.spacing
        lo, hi = prim.bounds()
        i0 = np.maximum(np.floor((lo - pad - grid.origin) / grid.spacing).astype(int), 0)
        i1 = np.minimum(np.ceil((hi + pad - grid.origin) / grid.spacing).astype(int) + 1,
                        grid.shape)
        axes = [grid.origin[d] + grid.spacing * np.arange(i0[d], i1[d]) for d in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        sub = (slice(i0[0], i1[0]), slice(i0[1], i1[1]), slice(i0[2], i1[2]))
        d = np.minimum(prim.sdf(pts.reshape(-1, 3)).reshape(pts.shape[:3]), _FAR)
        field[sub] = _smooth_min(field[sub], d, prim.blend)
    # Flat soles: intersect with the half-space above the sole plane.
    ys = grid.origin[1] + grid.spacing * np.arange(grid.shape[1])
    return np.maximum(field, (SOLE_Y - ys)[None, :, None])


def primitive_labels(primitives: list[Primitive], points: np.ndarray) -> np.ndarray:
    """Joint of the nearest primitive (smallest signed distance) for each point.

    Args:
        primitives: The body's primitives.
        points: Array of shape (N, 3), metres.

    Returns:
        Int64 array of shape (N,), joint indices.
    """
    dists = np.stack([p.sdf(points) for p in primitives], axis=1)
    joints = np.array([p.joint for p in primitives], dtype=np.int64)
    return joints[np.argmin(dists, axis=1)]


def _largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    parts = mesh.split(only_watertight=False)
    if len(parts) == 1:
        return mesh
    return max(parts, key=lambda m: len(m.faces))


def is_closed_genus0(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether a triangle mesh is one closed, consistently oriented genus-0 surface.

    Args:
        vertices: Array of shape (V, 3).
        faces: Int array of shape (F, 3).

    Returns:
        True when the mesh is watertight, winding-consistent, connected, has Euler
        characteristic 2 and uses every vertex.
    """
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if not (mesh.is_watertight and mesh.is_winding_consistent):
        return False
    if len(np.unique(faces)) != len(vertices):
        return False
    if mesh.body_count != 1:
        return False
    return mesh.euler_number == 2


def mesh_body(
    primitives: list[Primitive],
    spacing: float = DEFAULT_SPACING,
    num_faces: int = NUM_FACES,
    seed: int = 0,
    max_tries: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Meshes the implicit body to a closed genus-0 mesh with exactly ``num_faces`` faces.

    Marching cubes on the sampled field, largest component, outward orientation, then
    quadric decimation. If the result is not a closed genus-0 surface of the expected size,
    the grid is shifted by a sub-cell offset drawn from ``seed`` and the build is retried
    (deterministically for a given seed).

    Args:
        primitives: The body's primitives.
        spacing: Grid spacing (m).
        num_faces: Target face count (even).
        seed: Seed of the retry offsets.
        max_tries: Number of attempts before giving up.

    Returns:
        Tuple of vertices (V, 3) float64 in metres, rest frame, and faces (F, 3) int64,
        counter-clockwise seen from outside.

    Raises:
        RuntimeError: If no attempt produced a valid mesh.
    """
    rng = np.random.default_rng(seed)
    base = body_grid(primitives, spacing)
    for attempt in range(max_tries):
        offset = np.zeros(3) if attempt == 0 else rng.uniform(-0.5, 0.5, 3) * spacing
        grid = Grid(base.origin + offset, spacing, base.shape)
        field = sample_field(primitives, grid)
        verts, faces, _, _ = marching_cubes(field, level=0.0, spacing=(spacing,) * 3)
        verts = verts.astype(np.float64) + grid.origin
        mesh = _largest_component(trimesh.Trimesh(verts, faces, process=True))
        if mesh.volume < 0:
            mesh.invert()
        logger.debug("marching cubes: %d vertices, %d faces", len(mesh.vertices),
                     len(mesh.faces))
        v_dec, f_dec = fast_simplification.simplify(
            np.ascontiguousarray(mesh.vertices), np.ascontiguousarray(mesh.faces),
            target_count=num_faces,
        )
        v_dec = np.asarray(v_dec, dtype=np.float64)
        f_dec = np.asarray(f_dec, dtype=np.int64)
        used = np.unique(f_dec)
        if len(used) != len(v_dec):  # drop vertices the decimation left unreferenced
            remap = np.full(len(v_dec), -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            v_dec, f_dec = v_dec[used], remap[f_dec]
        ok = len(f_dec) == num_faces and is_closed_genus0(v_dec, f_dec)
        if ok:
            if trimesh.Trimesh(v_dec, f_dec, process=False).volume < 0:
                f_dec = f_dec[:, ::-1].copy()
            return v_dec, f_dec
        logger.warning("meshing attempt %d gave %d faces / invalid topology; retrying",
                       attempt, len(f_dec))
    raise RuntimeError("could not mesh the body to a closed genus-0 surface")
