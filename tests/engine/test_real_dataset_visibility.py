"""RICH / PROX samples carry the generator's visibility: ``occlusion``, the crop person mask
``extra["mask"]`` and per-vertex ``extra["vertex_visible"]``, on the fake trees of
`fake_real_datasets` (with a low wall in front of the person's legs)."""

from __future__ import annotations

import json
import math

import fake_real_datasets as fake
import numpy as np
import pytest
import torch
import trimesh

from sahmr.data.collate import collate_samples
from sahmr.data.prox import ProxDataset
from sahmr.data.rich import RichDataset
from sahmr.data.smplx_targets import SmplTargets
from sahmr.scene.frontend import crop_intrinsics
from sahmr.synth.appearance import Appearance
from sahmr.synth.render_sample import (
    MASK_BACKGROUND,
    MASK_OCCLUDED,
    MASK_VISIBLE,
    BodyRaycaster,
    RoomRaycaster,
    render_view,
)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("visibility")
    transfer = fake.write_transfer(root / "smplx2smpl.npz")
    targets = SmplTargets(transfer, smplx_vertices_fn=fake.FakeSmplx())
    out = {}
    for wall in (False, True):
        rich = fake.make_rich(root / f"rich_{wall}", frames=(1, 0, 0), wall=wall)
        prox = fake.make_prox(root / f"prox_{wall}", frames=1, wall=wall)
        out[wall] = {
            "rich": RichDataset(rich, "train", allow_pickle=True, targets=targets),
            "prox": ProxDataset(prox, allow_pickle=True, targets=targets),
        }
    return out


def _crop_K(s):
    K = torch.as_tensor(s.K, dtype=torch.float64)[None]
    box = torch.as_tensor(s.bbox, dtype=torch.float64)[None]
    return crop_intrinsics(K, box, s.crop.shape[0])[0].numpy()


@pytest.mark.parametrize("name", ["rich", "prox"])
def test_visibility_fields_have_the_generators_form(datasets, name):
    clear, walled = datasets[False][name][0], datasets[True][name][0]
    for s in (clear, walled):
        mask = s.extra["mask"]  # as SyntheticDataset(load_mask_depth=True) gives it
        assert mask.dtype == np.uint8 and mask.shape == s.crop.shape[:2]
        assert set(np.unique(mask)) <= {MASK_BACKGROUND, MASK_VISIBLE, MASK_OCCLUDED}
        person = (mask != MASK_BACKGROUND).sum()
        assert person > 1000  # the body fills the crop
        # the generator's relation between the two (tests/data/test_shards.py)
        assert s.occlusion == pytest.approx((mask == MASK_OCCLUDED).sum() / person)
        vis = s.extra["vertex_visible"]
        assert vis.dtype == bool and vis.shape == (len(s.vertices_world),)
    assert clear.occlusion == 0.0 and 0.2 < walled.occlusion < 0.7
    batch = collate_samples([clear, walled])
    assert batch.occlusion.dtype == torch.float32 and batch.occlusion.shape == (2,)
    torch.testing.assert_close(batch.occlusion, torch.tensor([0.0, walled.occlusion]))


@pytest.mark.parametrize("name", ["rich", "prox"])
def test_crop_mask_is_the_generators_render(datasets, name):
    """The same body, scan and crop camera rendered by the generator give the same mask."""
    ds = datasets[True][name]
    s = ds[0]
    scan = ds.scene_mesh(s.scene_id)
    faces = ds.targets.faces
    look = Appearance(
        body_face_colors=np.full((len(faces), 3), 0.5),
        room_face_colors=np.full((len(scan.faces), 3), 0.5),
        background=np.ones(3),
        ambient=0.3,
        light_dir_world=np.array([0.0, 0.0, 1.0]),
    )
    size = s.crop.shape[0]
    rendered = render_view(RoomRaycaster(scan.vertices, scan.faces),
                           BodyRaycaster(s.vertices_world, faces), look, _crop_K(s), s.T_w2c,
                           size, size)  # fmt: skip
    np.testing.assert_array_equal(s.extra["mask"], rendered.mask)
    assert s.occlusion == rendered.occlusion


@pytest.mark.parametrize("name", ["rich", "prox"])
def test_vertices_behind_the_wall_and_on_the_far_side_are_not_visible(datasets, name):
    s = datasets[True][name][0]
    verts = s.vertices_world.astype(np.float64)
    vis = s.extra["vertex_visible"]
    cam_centre = -s.T_w2c[:3, :3].T.astype(np.float64) @ s.T_w2c[:3, 3]
    body = trimesh.Trimesh(verts, datasets[True][name].targets.faces, process=False)
    to_cam = cam_centre - verts
    cos = np.einsum(
        "ij,ij->i", body.vertex_normals, to_cam / np.linalg.norm(to_cam, axis=1)[:, None]
    )
    # the wall (top 0.8 m, camera at 0.9 m, 3 m away) hides everything below about 0.75 m
    low, high = verts[:, 2] < 0.7, verts[:, 2] > 0.85
    assert low.sum() > 1000 and not vis[low].any()
    # above it: the side facing the camera is seen, the far side is not
    front, back = high & (cos > 0.5), high & (cos < -0.5)
    assert front.sum() > 300 and back.sum() > 300
    assert vis[front].mean() > 0.95 and not vis[back].any()
    # seen vertices land on (or, on the silhouette, next to) visible pixels of the crop's
    # person mask, the wall's hidden ones on occluded pixels
    from scipy.ndimage import maximum_filter

    Kc = _crop_K(s)
    cam = verts @ s.T_w2c[:3, :3].T + s.T_w2c[:3, 3]
    uv = np.rint(cam[:, :2] / cam[:, 2:] @ Kc[:2, :2].T + Kc[:2, 2]).astype(int)
    size = s.crop.shape[0]
    assert np.all((uv >= 0) & (uv < size))
    mask = s.extra["mask"]
    for value, which in ((MASK_VISIBLE, vis), (MASK_OCCLUDED, low)):
        near = maximum_filter((mask == value).astype(np.uint8), size=3)[uv[:, 1], uv[:, 0]]
        assert near[which].all()
    # without the wall only the far side is hidden
    clear = datasets[False][name][0]
    assert clear.extra["vertex_visible"][low & (cos > 0.5)].mean() > 0.95


def test_vertices_outside_the_image_are_not_visible(datasets, tmp_path):
    s = datasets[False]["prox"][0]
    cam = s.vertices_world @ s.T_w2c[:3, :3].T + s.T_w2c[:3, 3]
    x = cam[:, 0] / cam[:, 2]
    # the same tree with the principal point moved so that the image's left edge cuts
    # through the middle of the body
    root = fake.make_prox(tmp_path / "prox", frames=1)
    color = json.loads((root / "calibration" / "Color.json").read_text())
    color["camera_mtx"][0][2] -= float(np.median(x * s.K[0, 0] + s.K[0, 2]))
    color["c"][0] = color["camera_mtx"][0][2]
    (root / "calibration" / "Color.json").write_text(json.dumps(color))
    t = ProxDataset(root, allow_pickle=True, targets=datasets[False]["prox"].targets)[0]
    np.testing.assert_allclose(t.vertices_world, s.vertices_world)
    vis = t.extra["vertex_visible"]
    u = x * t.K[0, 0] + t.K[0, 2]
    outside = u < -0.5
    assert outside.sum() > 1000 and not vis[outside].any()
    assert vis[u > 1.0].sum() > 500  # the part still in the image is seen
    assert 0.0 <= t.occlusion <= 1.0  # (the crop itself still holds the whole body)


def test_visibility_off_gives_the_unknown_values(datasets):
    ds = datasets[True]["rich"]
    off = RichDataset(ds.root, "train", allow_pickle=True, targets=ds.targets, visibility=False)
    s = off[0]
    assert math.isnan(s.occlusion) and "mask" not in s.extra and "vertex_visible" not in s.extra
    bare = RichDataset(ds.root, "train", allow_pickle=True)  # no targets: no body, no test
    assert math.isnan(bare[0].occlusion) and "vertex_visible" not in bare[0].extra
