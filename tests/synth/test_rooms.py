"""Procedural rooms: determinism, layout rules, dimensions, contact surfaces, openings, I/O."""

import json

import numpy as np
import pytest
from scipy import ndimage

from sahmr.synth.furniture import BUILDERS, DIMENSION_RANGES, REQUIRED_SURFACES, SURFACE_KINDS
from sahmr.synth.room_kinds import generate_room
from sahmr.synth.rooms import (
    FREE_OCCUPIED,
    MIN_WALKABLE_FRACTION,
    ROOM_KINDS,
    Room,
)

SEEDS = (0, 5)

# Surface whose height is a randomised dimension: category -> (surface kind, param name).
_HEIGHT_PARAM = {
    "chair": ("seat", "seat_height"),
    "stool": ("seat", "seat_height"),
    "sofa": ("seat", "seat_height"),
    "bench": ("seat", "seat_height"),
    "bed": ("bed", "top_height"),
    "table": ("tabletop", "top_height"),
    "low_table": ("tabletop", "top_height"),
    "desk": ("tabletop", "top_height"),
    "step": ("step", "height"),
    "mat": ("mat", "thickness"),
    "bollard": ("seat", "height"),
    "box": ("seat", "height"),
}


@pytest.fixture(scope="module")
def rooms() -> list[Room]:
    return [generate_room(kind, seed) for kind in ROOM_KINDS for seed in SEEDS]


def _footprint(o) -> np.ndarray:
    return np.array([o.bbox_min[0], o.bbox_min[1], o.bbox_max[0], o.bbox_max[1]])


def test_same_seed_same_room_and_different_seed_differs(rooms):
    for kind in ROOM_KINDS:
        a, b = generate_room(kind, 11), generate_room(kind, 11)
        np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
        np.testing.assert_array_equal(a.mesh.faces, b.mesh.faces)
        np.testing.assert_array_equal(a.mesh.visual.face_colors, b.mesh.visual.face_colors)
        np.testing.assert_array_equal(a.face_object_id, b.face_object_id)
        np.testing.assert_array_equal(a.free_space.grid, b.free_space.grid)
        assert json.dumps(a.to_metadata()) == json.dumps(b.to_metadata())
        other = next(r for r in rooms if r.kind == kind)
        assert other.seed != 11
        assert other.to_metadata()["objects"] != a.to_metadata()["objects"]


def test_every_kind_has_its_characteristic_furniture(rooms):
    must = {
        "living_room": {"sofa", "table", "chair"},
        "office": {"desk", "chair"},
        "bedroom": {"bed"},
        "lecture_hall": {"desk", "chair", "step"},
        "gym": {"mat", "bench", "step"},
        "outdoor_platform": {"bench", "step", "bollard"},
    }
    for room in rooms:
        cats = {o.category for o in room.furniture}
        assert must[room.kind] <= cats, (room.kind, room.seed, cats)
    halls = [r for r in rooms if r.kind == "lecture_hall"]
    assert all(sum(o.category == "chair" for o in r.furniture) >= 12 for r in halls)


def test_object_ids_and_face_labels_are_consistent(rooms):
    for room in rooms:
        assert room.face_object_id.shape == (len(room.mesh.faces),)
        assert [o.id for o in room.objects] == list(range(len(room.objects)))
        counts = np.bincount(room.face_object_id, minlength=len(room.objects))
        assert counts.min() > 0 and len(counts) == len(room.objects)
        for o in room.objects:
            v = room.mesh.vertices[room.mesh.faces[room.face_object_id == o.id]].reshape(-1, 3)
            np.testing.assert_allclose(v.min(0), o.bbox_min, atol=1e-5)
            np.testing.assert_allclose(v.max(0), o.bbox_max, atol=1e-5)
        assert room.objects[0].category == "floor"
        assert room.up_axis == "z" and room.units == "m"


def test_furniture_footprints_do_not_overlap(rooms):
    for room in rooms:
        rects = [_footprint(o) for o in room.furniture]
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                w = min(a[2], b[2]) - max(a[0], b[0])
                h = min(a[3], b[3]) - max(a[1], b[1])
                assert w <= 1e-9 or h <= 1e-9, (room.kind, room.furniture[i].label,
                                                 room.furniture[j].label)


def test_objects_inside_the_room(rooms):
    for room in rooms:
        W, D = room.floor_size
        for o in room.furniture:
            assert o.bbox_min[0] >= -W / 2 - 1e-6 and o.bbox_max[0] <= W / 2 + 1e-6
            assert o.bbox_min[1] >= -D / 2 - 1e-6 and o.bbox_max[1] <= D / 2 + 1e-6
            assert o.bbox_min[2] == pytest.approx(0.0, abs=1e-6)
            if room.kind != "outdoor_platform":  # low parapets may be lower than bollards
                assert o.bbox_max[2] < room.wall_height


def test_free_space_matches_footprints_and_is_walkable(rooms):
    for room in rooms:
        fs = room.free_space
        W, D = room.floor_size
        assert fs.grid.shape == (round(D / fs.cell_size), round(W / fs.cell_size))
        # Reference occupancy: cell centres inside any non-mat footprint.
        c = fs.cell_centers()
        occ = np.zeros(fs.grid.shape, dtype=bool)
        for o in room.furniture:
            if o.category == "mat":
                continue
            r = _footprint(o)
            occ |= ((c[..., 0] >= r[0] - 1e-6) & (c[..., 0] <= r[2] + 1e-6)
                    & (c[..., 1] >= r[1] - 1e-6) & (c[..., 1] <= r[3] + 1e-6))
        np.testing.assert_array_equal(fs.grid == FREE_OCCUPIED, occ)
        assert fs.free_fraction >= MIN_WALKABLE_FRACTION
        assert fs.walkable_fraction >= MIN_WALKABLE_FRACTION, (room.kind, room.seed)
        _, n = ndimage.label(fs.walkable)  # 4-connected
        assert n == 1, (room.kind, room.seed, n)
        for op in room.openings:
            if op.kind == "door":
                inside = op.center[:2] + op.normal[:2] * (op.wall_thickness / 2 + 0.3)
                assert fs.is_walkable(inside), (room.kind, room.seed)


@pytest.mark.parametrize("category", sorted(BUILDERS))
def test_builder_dimensions_in_range(category):
    labels = {"sofa": ("sofa", "loveseat"), "bed": ("single_bed", "double_bed"),
              "step": ("step", "platform"), "mat": ("gym_mat", "rug")}.get(category, (category,))
    rng = np.random.default_rng(0)
    for label in labels:
        for _ in range(25):
            m = BUILDERS[category](rng, label=label)
            assert set(m.params) == set(DIMENSION_RANGES[category])
            for name, (lo, hi) in DIMENSION_RANGES[category].items():
                assert lo - 1e-9 <= m.params[name] <= hi + 1e-9, (category, name, m.params)
            if category in _HEIGHT_PARAM:
                kind, name = _HEIGHT_PARAM[category]
                z = max(s.center[2] for s in m.surfaces if s.kind == kind)
                assert z == pytest.approx(m.params[name], abs=1e-9)
            assert m.mesh.bounds[0, 2] == pytest.approx(0.0, abs=1e-9)
            np.testing.assert_allclose(m.mesh.bounds[0, :2], -m.mesh.bounds[1, :2], atol=1e-9)


def test_brief_dimension_ranges_hold_in_rooms(rooms):
    brief = {"chair": (0.42, 0.50), "table": (0.70, 0.78), "bed": (0.45, 0.60),
             "sofa": (0.38, 0.48), "stool": (0.45, 0.75), "step": (0.15, 0.40)}
    for room in rooms:
        for o in room.furniture:
            if o.category in brief:
                kind = _HEIGHT_PARAM[o.category][0]
                z = max(s.center[2] for s in o.surfaces if s.kind == kind)
                lo, hi = brief[o.category]
                assert lo <= z <= hi, (o.label, z)


def test_every_object_has_the_surfaces_its_category_implies(rooms):
    for room in rooms:
        for o in room.objects:
            kinds = {s.kind for s in o.surfaces}
            assert REQUIRED_SURFACES[o.category] <= kinds, (o.category, kinds)
            for s in o.surfaces:
                assert s.kind in SURFACE_KINDS
                for v in (s.normal, s.axis_u, s.axis_v):
                    assert np.linalg.norm(v) == pytest.approx(1.0)
                np.testing.assert_allclose(np.cross(s.axis_u, s.axis_v), s.normal, atol=1e-9)
                assert np.all(s.half_size > 0)


def test_surfaces_lie_on_their_objects_and_are_exposed(rooms):
    o3d = pytest.importorskip("open3d")
    eps = 0.01
    for room in rooms[::2]:  # one seed per kind
        for o in room.objects:
            if not o.surfaces:
                continue
            sub = room.object_mesh(o.id)
            own = o3d.t.geometry.RaycastingScene()
            own.add_triangles(o3d.core.Tensor(sub.vertices.astype(np.float32)),
                              o3d.core.Tensor(sub.faces.astype(np.uint32)))
            for s in o.surfaces:
                p = s.grid_points(4, 4, inset=0.005).astype(np.float32)
                d = own.compute_distance(o3d.core.Tensor(p)).numpy()
                assert d.max() < 0.01, (room.kind, o.label, s.kind, d.max())
        # Exposed: from eps in front of the surface, looking back, the first hit is the surface
        # (for the floor: or a rug/mat/paint at most 1 cm thick lying on it).
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(room.mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(room.mesh.faces.astype(np.uint32)))
        for oid, s in room.surfaces():
            p = s.grid_points(4, 4, inset=0.005) + eps * s.normal
            rays = np.concatenate([p, np.tile(-s.normal, (len(p), 1))], axis=1)
            t = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
            lo = -1e-4 if s.kind == "floor" else eps - 5e-3
            assert np.all((t > lo) & (t < eps + 5e-3)), (room.kind, room.objects[oid].label, t)


def test_door_and_window_openings_are_holes(rooms):
    from trimesh.ray.ray_triangle import RayMeshIntersector

    n_checked = 0
    for room in rooms:
        for op in room.openings:
            wall = RayMeshIntersector(room.object_mesh(op.wall_id))
            start = op.center - op.normal * (op.wall_thickness / 2 + 0.5)

            def hits(origin, op=op, wall=wall):
                return wall.intersects_any(origin[None], op.normal[None])[0]

            assert not hits(start), (room.kind, op.kind)
            # ... while the same ray shifted just outside the hole hits the wall.
            if op.kind == "window":
                assert hits(start - (op.half_size[1] + 0.1) * op.axis_v)
            assert hits(start + (op.half_size[0] + 0.1) * op.axis_u)
            assert hits(start - (op.half_size[0] + 0.1) * op.axis_u)
            n_checked += 1
            # No wall contact surface covers the hole.
            for s in room.objects[op.wall_id].surfaces:
                rel = op.center - s.center
                inside = (abs(rel @ s.axis_u) < s.half_size[0] - 1e-6
                          and abs(rel @ s.axis_v) < s.half_size[1] - 1e-6)
                assert not inside
    assert n_checked >= 6


def test_chairs_face_a_table_or_desk_and_large_pieces_stand_at_walls(rooms):
    for room in rooms:
        tables = [_footprint(o) for o in room.furniture
                  if o.category in ("table", "desk", "low_table")]
        W, D = room.floor_size
        for o in room.furniture:
            c = 0.5 * (o.bbox_min[:2] + o.bbox_max[:2])
            f = o.front[:2]
            if o.category == "chair" and room.kind != "outdoor_platform":
                half = 0.5 * abs((o.bbox_max[:2] - o.bbox_min[:2]) @ f)
                probe = c + f[None] * (half + np.linspace(0.02, 0.6, 30))[:, None]
                assert any(np.any((probe[:, 0] > r[0]) & (probe[:, 0] < r[2])
                                  & (probe[:, 1] > r[1]) & (probe[:, 1] < r[3]))
                           for r in tables), (room.kind, o.label)
            if o.category in ("bed", "shelf", "sofa") and room.wall_height > 0:
                back = -f
                edge = o.bbox_min[:2] if back.sum() < 0 else o.bbox_max[:2]
                axis = int(np.argmax(np.abs(back)))
                wall = (W if axis == 0 else D) / 2 * np.sign(back[axis])
                assert abs(edge[axis] - wall) <= 0.05, (room.kind, o.label)


def test_ceiling_is_optional():
    plain = generate_room("bedroom", 3)
    closed = generate_room("bedroom", 3, ceiling=True)
    assert not any(o.category == "ceiling" for o in plain.objects)
    assert sum(o.category == "ceiling" for o in closed.objects) == 1
    assert closed.mesh.bounds[1, 2] > plain.mesh.bounds[1, 2]
    with pytest.raises(KeyError, match="living_room"):
        generate_room("kitchen", 0)


def test_save_load_round_trip(tmp_path, rooms):
    room = rooms[0]
    room.save(tmp_path / "r")
    back = Room.load(tmp_path / "r")
    np.testing.assert_array_equal(back.mesh.vertices, room.mesh.vertices)
    np.testing.assert_array_equal(back.mesh.faces, room.mesh.faces)
    np.testing.assert_array_equal(back.mesh.visual.face_colors, room.mesh.visual.face_colors)
    np.testing.assert_array_equal(back.face_object_id, room.face_object_id)
    np.testing.assert_array_equal(back.free_space.grid, room.free_space.grid)
    assert back.to_metadata() == room.to_metadata()
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["up_axis"] == "z" and meta["units"] == "m"
