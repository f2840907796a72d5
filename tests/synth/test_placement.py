"""Placement: every action in generated rooms, checked independently against the room mesh."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from sahmr.body import BodyModel
from sahmr.body.pose_library import ACTIONS, ContactRequirement, mirror_action
from sahmr.scene.contact import CONTACT_THRESHOLD_M
from sahmr.synth.placement import PlacedBody, Placer
from sahmr.synth.placement_checks import rectangle_distance
from sahmr.synth.room_kinds import generate_room

VOXEL = 0.03
# The SDF grid is trilinear at 3 cm: allow its interpolation error where the grid is used
# (the 7 cm labels, contact points); acceptance itself is decided on the exact mesh.
GRID_TOL = 0.006
EXACT_TOL = 1e-4

# room kind, seed, optional xy region (keeps the SDF small), actions to place there
SETUPS = {
    "bedroom": ("bedroom", 0, None),
    "sofa": ("living_room", 0, [[1.2, -1.3], [2.9, 0.8]]),
    "step": ("gym", 0, [[-2.2, -0.3], [-0.1, 1.4]]),
}
ACTION_SETUP = {a: "bedroom" for a in ACTIONS}
ACTION_SETUP.update(
    {"sit_sofa": "sofa", "lie_sofa": "sofa", "sit_back_sofa": "sofa", "sit_step": "step"}
)


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel()


@pytest.fixture(scope="module")
def placers(body) -> dict[str, Placer]:
    torch.set_num_threads(1)
    out = {}
    for name, (kind, seed, region) in SETUPS.items():
        room = generate_room(kind, seed)
        out[name] = Placer(room, body, voxel_size=VOXEL, region_xy=region)
    return out


@pytest.fixture(scope="module")
def placed(placers) -> dict[str, PlacedBody]:
    rng = np.random.default_rng(0)
    out = {}
    for action in sorted(ACTIONS):
        p = placers[ACTION_SETUP[action]].sample(rng, action)
        assert p is not None, f"{action}: no accepted placement"
        out[action] = p
    return out


def _signed_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Exact closest-point distance, signed by the closest face's normal (brute reference)."""
    closest, dist, tri = trimesh.proximity.closest_point(mesh, points)
    side = ((points - closest) * mesh.face_normals[tri]).sum(1)
    return np.where(side < 0, -dist, dist)


def test_every_action_feasible_somewhere(placers):
    for action, setup in ACTION_SETUP.items():
        assert action in placers[setup].feasible_actions(), action


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_placement_checked_with_trimesh(placers, placed, body, action):
    p = placed[action]
    room = placers[ACTION_SETUP[action]].room
    labels = body.topology.contact_labels[0]
    V = body.num_vertices
    assert p.vertices_world.shape == (V, 3) and p.vertices_world.dtype == np.float32
    assert p.joints_world.shape == (24, 3)
    assert p.betas.shape == (10,) and p.body_pose.shape == (69,)
    assert p.action == action
    # independent check: region vertices + a strided subset of all vertices
    idx = np.unique(np.concatenate([np.flatnonzero(labels > 0), np.arange(0, V, 4)]))
    sd = _signed_distance(room.mesh, p.vertices_world[idx].astype(np.float64))
    assert -sd.min() <= 0.01 + EXACT_TOL, f"penetration {-sd.min():.4f} m"
    assert max(0.0, -sd.min()) <= p.max_penetration + EXACT_TOL  # recorded over every vertex
    assert p.max_penetration <= 0.01
    lab = labels[idx]
    spec = mirror_action(ACTIONS[action]) if p.mirrored else ACTIONS[action]
    for req in spec.contacts:
        for r in req.regions:
            gap = np.abs(sd[lab == r]).min()
            assert gap <= 0.02 + EXACT_TOL, f"region {r} gap {gap:.4f} m"
            assert p.contact_gap[r] <= 0.02
    # 7 cm rule against the brute-force distance: exact near the threshold (exact_check), so
    # only float rounding of the distance itself may differ
    d = np.abs(sd)
    want = np.where(d < CONTACT_THRESHOLD_M, lab, 0)
    got = p.vertex_contact[idx]
    ambiguous = np.abs(d - CONTACT_THRESHOLD_M) < EXACT_TOL
    assert np.all((got == want) | ambiguous)
    assert np.all(p.vertex_contact[labels == 0] == 0)
    # contact points lie on the scene surface, within 7 cm of a vertex of their region; a
    # vertex whose projection lands farther gives none (thighs overhanging a stool's front
    # edge by just under 7 cm: 86 % of the contacts kept one in this test's stool placement)
    n_contact = int((p.vertex_contact > 0).sum())
    assert 0.8 * n_contact <= len(p.contact_points_world) <= n_contact
    if len(p.contact_points_world):
        cp = p.contact_points_world.astype(np.float64)
        # the grid rounds sharp edges: projected points may sit up to ~0.75 voxel off them
        assert np.abs(_signed_distance(room.mesh, cp)).max() < 0.75 * VOXEL
        for r in np.unique(p.contact_point_region):
            pts = cp[p.contact_point_region == r]
            dv = np.linalg.norm(pts[:, None] - p.vertices_world[labels == r][None], axis=-1)
            assert dv.min(1).max() <= CONTACT_THRESHOLD_M + 1e-5


def test_params_reproduce_vertices(placed, body):
    for p in list(placed.values())[:4]:
        with torch.no_grad():
            out = body(
                betas=torch.as_tensor(p.betas, dtype=torch.float32)[None],
                global_orient=torch.as_tensor(p.global_orient, dtype=torch.float32)[None],
                body_pose=torch.as_tensor(p.body_pose, dtype=torch.float32)[None],
                transl=torch.as_tensor(p.transl, dtype=torch.float32)[None],
            )
        np.testing.assert_allclose(out.vertices[0].numpy(), p.vertices_world, atol=1e-4)
        np.testing.assert_allclose(out.joints[0].numpy(), p.joints_world, atol=1e-4)


def test_world_up_and_walkable(placed, placers):
    room = placers["bedroom"].room
    for action in ("stand", "walk"):
        p = placed[action]
        head, feet = p.joints_world[15], p.joints_world[[7, 8]]
        assert head[2] > feet[:, 2].max() + 1.0  # z up, metres
        assert np.all(room.free_space.is_walkable(p.joints_world[[0, 7, 8], :2]))
        assert p.object_id == -1
    sit = placed["sit_chair"]
    assert sit.object_id >= 0
    assert room.objects[sit.object_id].category in ACTIONS["sit_chair"].categories


def test_determinism(body):
    room = generate_room("bedroom", 0)
    pl = Placer(room, body, voxel_size=0.05, num_candidates=3, iterations=5)
    a = pl.sample_batch(np.random.default_rng(3), "sit_chair")
    b = pl.sample_batch(np.random.default_rng(3), "sit_chair")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.vertices_world, y.vertices_world)
        np.testing.assert_array_equal(x.body_pose, y.body_pose)


def test_some_actions_are_drawn_as_their_mirror_image(placed):
    mirrored = sorted(a for a, p in placed.items() if p.mirrored)
    assert 0 < len(mirrored) < len(placed), mirrored


@pytest.mark.parametrize("fraction, hand", [(1.0, 3), (0.0, 4)])
def test_a_mirrored_touch_uses_the_other_hand(body, fraction, hand):
    """``touch_wall`` is the right hand's in the pose library; its mirror image touches with
    the left hand (region 3) and is flagged."""
    room = generate_room("bedroom", 0)
    pl = Placer(room, body, voxel_size=0.05, num_candidates=4, iterations=15,
                mirror_fraction=fraction)  # fmt: skip
    p = pl.sample(np.random.default_rng(1), "touch_wall")
    assert p is not None and p.mirrored == (fraction == 1.0)
    assert hand in p.contact_gap and 7 - hand not in p.contact_gap
    assert p.contact_gap[hand] <= 0.02
    labels = body.topology.contact_labels[0]
    # the touching hand is the one nearer the wall's contact points
    near = [np.linalg.norm(p.vertices_world[labels == h][:, None] - p.contact_points_world[None],
                           axis=-1).min() for h in (3, 4)]  # fmt: skip
    assert near[hand - 3] < 0.08


def test_mirror_fraction_is_checked(body):
    with pytest.raises(ValueError, match="mirror_fraction"):
        Placer(generate_room("bedroom", 0), body, voxel_size=0.05, mirror_fraction=1.5)


def test_stats(placers):
    st = placers["bedroom"].stats
    assert st.accepts["stand"] >= 1
    assert st.attempts["stand"] >= st.accepts["stand"]
    assert 0.0 < st.acceptance_rate("stand") <= 1.0
    assert "stand" in st.summary()


@pytest.mark.parametrize("action", ["sit_back_chair", "sit_back_sofa", "sit_back_bed", "lie_bed"])
def test_back_touches_the_required_surface(placers, placed, body, action):
    """Leaning back puts the back on the target object's backrest (a vertical face of that
    object); lying on a bed puts it on the mattress top. Checked against the room mesh."""
    assert any(5 in req.regions for req in ACTIONS[action].contacts)
    p = placed[action]
    room = placers[ACTION_SETUP[action]].room
    back = p.vertices_world[body.topology.contact_labels[0] == 5].astype(np.float64)
    _, dist, tri = trimesh.proximity.closest_point(room.mesh, back)
    touching = tri[dist <= 0.02 + GRID_TOL]
    assert len(touching) > 0
    on_target = touching[room.face_object_id[touching] == p.object_id]
    normals = room.mesh.face_normals[on_target]
    if action == "lie_bed":
        assert np.any(normals[:, 2] > 0.9)
    else:
        assert np.any(np.abs(normals[:, 2]) < 0.3)
        # ... and the buttocks sit on the seat (an upward face of the same object)
        glute = p.vertices_world[body.topology.contact_labels[0] == 6].astype(np.float64)
        _, dist, tri = trimesh.proximity.closest_point(room.mesh, glute)
        seat = tri[(dist <= 0.02 + GRID_TOL) & (room.face_object_id[tri] == p.object_id)]
        assert np.any(room.mesh.face_normals[seat][:, 2] > 0.9)


def test_upright_sitting_kept_without_back_contact():
    assert all(5 not in req.regions for req in ACTIONS["sit_chair"].contacts)
    assert ACTIONS["sit_back_chair"].contacts[1] == ContactRequirement((5,), ("backrest",))
    assert ACTIONS["sit_back_sofa"].categories == ("sofa",)


def test_surface_check_rejects_a_back_off_the_backrest(placers, placed):
    pl = placers["bedroom"]
    p = placed["sit_back_chair"]
    spec = ACTIONS["sit_back_chair"]
    back_only = dataclasses.replace(spec, contacts=(spec.contacts[1],))
    target = SimpleNamespace(object_id=p.object_id)
    touching = np.zeros(len(p.vertices_world))  # pretend every vertex touches the scene
    assert pl.checks.surface_check(back_only, target, p.vertices_world, touching) is None
    away = p.vertices_world + np.array([0.0, 0.0, 0.6])  # lifted 60 cm above the backrest
    assert pl.checks.surface_check(back_only, target, away, touching) == "surface:5"


def test_rectangle_distance_matches_dense_sampling():
    rng = np.random.default_rng(0)
    center = rng.normal(size=(2, 3))
    u = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    axes_u = np.stack([u[:, 0], u[:, 1]])
    axes_v = np.stack([u[:, 1], u[:, 2]])
    half = np.array([[0.4, 0.2], [0.3, 0.5]])
    pts = rng.normal(size=(50, 3))
    got = rectangle_distance(pts, center, axes_u, axes_v, half)
    a, b = np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 201))
    for k in range(2):
        grid = (center[k] + (a.reshape(-1, 1) * half[k, 0]) * axes_u[k]
                + (b.reshape(-1, 1) * half[k, 1]) * axes_v[k])  # fmt: skip
        ref = np.linalg.norm(pts[:, None] - grid[None], axis=-1).min(1)
        assert np.all(got[:, k] <= ref + 1e-9)
        assert np.all(ref - got[:, k] < 0.006)  # grid spacing / 2 and a bit


def test_place_actions_mixes_actions_in_one_batch(placers):
    pl = placers["bedroom"]
    actions = ["stand", "sit_chair", "lie_bed", "stand", "sit_back_chair", "squat"]
    out = pl.place_actions(np.random.default_rng(5), actions)
    assert len(out) == len(actions)
    assert sum(p is not None for p in out) >= len(actions) - 1
    for a, p in zip(actions, out):
        assert p is None or (p.action == a and p.max_penetration <= 0.01)


def test_placer_sees_the_solid_ground(placers):
    """The floor is a closed 5 cm slab: without the room's ground its SDF turns positive
    2.5 cm under the top and pushed sunk vertices further down (in-between sequence frames
    sank 12-19 cm into the floor). The placer's grid and exact distance both hold it."""
    placer = placers["bedroom"]
    pts = torch.tensor([[0.0, 0.0, -0.10], [0.1, -0.2, -0.04], [0.3, 0.1, -0.60]])
    want = pts[:, 2].double()
    got_grid = placer._sdf_fast(pts).double()
    np.testing.assert_allclose(got_grid.numpy(), want.numpy(), atol=1e-4)
    got_exact = placer.mesh_distance(pts.double().numpy())
    np.testing.assert_allclose(got_exact, want.numpy(), atol=1e-6)
    # the gradient lifts a sunk vertex
    p = pts[:1].clone().requires_grad_(True)
    placer._sdf_fast(p).sum().backward()
    assert p.grad[0, 2] == pytest.approx(1.0, abs=1e-3)


def test_generation_mirror_fraction_is_checked_and_zero_keeps_the_dataset_hash(tmp_path):
    from sahmr.synth.plan import GenerationConfig

    def cfg(**kw):
        return GenerationConfig.from_dict(dict(out_dir=str(tmp_path), **kw))

    off, on = cfg(mirror_fraction=0.0), cfg()
    assert on.mirror_fraction == 0.5
    assert "mirror_fraction" not in off.content_dict()  # datasets made before it
    assert on.content_dict()["mirror_fraction"] == 0.5
    assert on.content_hash() != off.content_hash()
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="mirror_fraction"):
            cfg(mirror_fraction=bad)
