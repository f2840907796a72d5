"""Placement: every action in generated rooms, checked independently against the room mesh."""

import numpy as np
import pytest
import torch
import trimesh

from sahmr.body import BodyModel
from sahmr.synth.placement import CONTACT_THRESHOLD, PlacedBody, Placer
from sahmr.synth.poses import ACTIONS
from sahmr.synth.rooms import generate_room

VOXEL = 0.03
# The SDF grid is trilinear at 3 cm: allow its interpolation error on top of the limits.
GRID_TOL = 0.006

# room kind, seed, optional xy region (keeps the SDF small), actions to place there
SETUPS = {
    "bedroom": ("bedroom", 0, None),
    "sofa": ("living_room", 0, [[1.2, -1.3], [2.9, 0.8]]),
    "step": ("gym", 0, [[-2.2, -0.3], [-0.1, 1.4]]),
}
ACTION_SETUP = {a: "bedroom" for a in ACTIONS}
ACTION_SETUP.update({"sit_sofa": "sofa", "lie_sofa": "sofa", "sit_step": "step"})


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
    assert -sd.min() <= 0.01 + GRID_TOL, f"penetration {-sd.min():.4f} m"
    assert p.max_penetration <= 0.01
    lab = labels[idx]
    for req in ACTIONS[action].contacts:
        for r in req.regions:
            gap = np.abs(sd[lab == r]).min()
            assert gap <= 0.02 + GRID_TOL, f"region {r} gap {gap:.4f} m"
            assert p.contact_gap[r] <= 0.02
    # 7 cm rule against the brute-force distance (tolerate the grid error at the threshold)
    d = np.abs(sd)
    want = np.where(d < CONTACT_THRESHOLD, lab, 0)
    got = p.vertex_contact[idx]
    ambiguous = np.abs(d - CONTACT_THRESHOLD) < GRID_TOL
    assert np.all((got == want) | ambiguous)
    assert np.all(p.vertex_contact[labels == 0] == 0)
    # contact points lie on the scene surface, within 7 cm of a vertex of their region
    n_contact = int((p.vertex_contact > 0).sum())
    assert 0.9 * n_contact <= len(p.contact_points_world) <= n_contact
    if len(p.contact_points_world):
        cp = p.contact_points_world.astype(np.float64)
        # the grid rounds sharp edges: projected points may sit up to ~0.75 voxel off them
        assert np.abs(_signed_distance(room.mesh, cp)).max() < 0.75 * VOXEL
        for r in np.unique(p.contact_point_region):
            pts = cp[p.contact_point_region == r]
            dv = np.linalg.norm(pts[:, None] - p.vertices_world[labels == r][None], axis=-1)
            assert dv.min(1).max() <= CONTACT_THRESHOLD + 1e-5


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


def test_stats(placers):
    st = placers["bedroom"].stats
    assert st.accepts["stand"] >= 1
    assert st.attempts["stand"] >= st.accepts["stand"]
    assert 0.0 < st.acceptance_rate("stand") <= 1.0
    assert "stand" in st.summary()
