"""ExactSceneSDF: PenE from exact point-to-mesh distances near surfaces, checked against
trimesh's closest points on the bundled rooms with standing, sitting and lying bodies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sahmr.scene.sdf import ExactSceneSDF, MeshSignedDistance, SDFGrid

trimesh = pytest.importorskip("trimesh")

SCENES = Path(__file__).resolve().parents[2] / "scenes"
VOXEL = 0.02
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def body_model():
    from sahmr.body import BodyModel

    return BodyModel()


def _body(body_model, **params: np.ndarray) -> np.ndarray:
    dtype = body_model.shapedirs.dtype
    with torch.no_grad():
        tensors = {k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in params.items()}
        out = body_model(**{k: t.reshape(1, -1) for k, t in tensors.items()})
    return out.vertices[0].double().numpy()


def _demo_body(body_model, room: str, frame: str) -> np.ndarray:
    with np.load(SCENES / room / "demo" / f"{frame}.gt.npz", allow_pickle=False) as g:
        keys = ("betas", "global_orient", "body_pose", "transl")
        return _body(body_model, **{k: g[k] for k in keys})


def _lying_on_bed(body_model) -> np.ndarray:
    """The standard lying pose on the bedroom's bed, lowest vertex on the mattress top."""
    from sahmr.body.poses import standard_pose

    orient, pose = standard_pose("lying")
    v = _body(body_model, global_orient=orient, body_pose=pose) @ Y_UP_TO_Z_UP.T
    ext = np.ptp(v, axis=0)
    if ext[1] > ext[0]:  # lay the body along the bed's length (x)
        v = v @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T
    centre, top = np.array([1.295, -0.3941]), 0.554  # scenes/bedroom/meta.json, the bed
    v[:, :2] += centre - (v[:, :2].min(0) + v[:, :2].max(0)) / 2
    v[:, 2] += top - v[:, 2].min()
    return v


def _local_scene(room: str, points: np.ndarray) -> tuple[ExactSceneSDF, object]:
    """The room's mesh with an exact-node SDF grid over the body's box (fast to build)."""
    mesh = trimesh.load(SCENES / room / "mesh.ply", process=False, force="mesh")
    lo = points.min(0) - 0.15
    n = np.ceil((points.max(0) + 0.15 - lo) / VOXEL).astype(int) + 1
    sd = MeshSignedDistance(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    k, j, i = np.meshgrid(*(np.arange(c) for c in n[::-1]), indexing="ij")
    nodes = lo + VOXEL * np.stack([i, j, k], -1).reshape(-1, 3)
    grid = SDFGrid(lo.astype(np.float32), VOXEL, sd(nodes).reshape(n[2], n[1], n[0]))
    return ExactSceneSDF(grid, mesh.vertices, mesh.faces), mesh


def _reference_sdf(mesh, points: np.ndarray) -> np.ndarray:
    """trimesh's exact closest-point distance, signed by the closest face's normal."""
    closest, dist, tri = trimesh.proximity.closest_point(mesh, points)
    side = ((points - closest) * mesh.face_normals[tri]).sum(1)
    return np.where(side < 0, -dist, dist)


def _pene(sdf: np.ndarray) -> float:
    return float(np.clip(-sdf, 0, None).sum())


def _standing_at_centre(body_model, room: str) -> np.ndarray:
    """The bundled standing body moved to the room's centre, soles on the floor (z = 0)."""
    v = _demo_body(body_model, "living_room", "stand")
    v[:, :2] -= (v[:, :2].min(0) + v[:, :2].max(0)) / 2
    v[:, 2] -= v[:, 2].min()
    return v


ROOMS = sorted(p.name for p in SCENES.iterdir() if (p / "mesh.ply").is_file())


@pytest.mark.parametrize(
    "case",
    ["living_room/stand", "living_room/sit_sofa", "office/sit_chair", "bedroom/lying"]
    + [f"{room}/centre" for room in ROOMS if room != "living_room"],
)
def test_pene_matches_trimesh_exact_distance(body_model, case):
    room, frame = case.split("/")
    if frame == "lying":
        base = _lying_on_bed(body_model)
    elif frame == "centre":
        base = _standing_at_centre(body_model, room)
    else:
        base = _demo_body(body_model, room, frame)
    sdf, mesh = _local_scene(room, base - [0, 0, 0.05])
    for depth in (0.01, 0.02, 0.05):
        v = base - np.array([0.0, 0.0, depth])  # pushed into the floor / seat / bed
        ref = _pene(_reference_sdf(mesh, v))
        assert ref > 0, f"{case} at {depth} m does not penetrate"
        exact = sdf.sample_exact(torch.from_numpy(v)).numpy()
        grid = sdf.sample(torch.from_numpy(v)).numpy()
        assert abs(_pene(exact) - ref) <= 0.01 * ref, (case, depth, _pene(exact), ref)
        # the grid alone is the under-reading this class fixes
        assert abs(_pene(grid) - ref) >= abs(_pene(exact) - ref)


def test_sample_exact_only_replaces_near_points(body_model):
    """Far points keep the grid's lower bound (>= band); near points equal the mesh distance."""
    v = _demo_body(body_model, "living_room", "stand") - np.array([0.0, 0.0, 0.02])
    sdf, _ = _local_scene("living_room", v)
    pts = torch.from_numpy(v)
    out = sdf.sample_exact(pts, band=0.06)
    exact = sdf.exact(pts)
    near = out < 0.06
    assert near.any() and (~near).any()
    torch.testing.assert_close(out[near], exact[near], rtol=0, atol=1e-6)
    assert (exact[~near] >= 0.06 - 2 * VOXEL * np.sqrt(3)).all()
    forced = torch.zeros(len(v), dtype=torch.bool)
    forced[~near] = True
    both = sdf.sample_exact(pts, band=0.06, exact=forced)
    torch.testing.assert_close(both, exact, rtol=0, atol=1e-6)


def test_torch_backend_matches_default(body_model):
    """The open3d-free backend (the GPU path) gives the same exact values."""
    v = _demo_body(body_model, "living_room", "sit_sofa") - np.array([0.0, 0.0, 0.02])
    sdf, mesh = _local_scene("living_room", v)
    cpu_torch = ExactSceneSDF(sdf.grid, mesh.vertices, mesh.faces, backend="torch", device="cpu")
    pts = torch.from_numpy(v)
    torch.testing.assert_close(
        cpu_torch.sample_exact(pts), sdf.sample_exact(pts), rtol=0, atol=1e-5
    )


def test_exact_scene_sdf_stands_in_for_its_grid(body_model):
    """Scene fitting and losses take grids: the wrapper exposes the grid's API."""
    v = _demo_body(body_model, "living_room", "stand")
    sdf, _ = _local_scene("living_room", v)
    values, origin = sdf.to_torch()
    assert values.shape[2:] == sdf.grid.values.shape
    np.testing.assert_array_equal(origin.numpy(), sdf.origin)
    assert sdf.shape_xyz == sdf.grid.shape_xyz and sdf.voxel_size == VOXEL
