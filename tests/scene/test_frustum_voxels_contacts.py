"""Frustum crop, ROI, voxelisation and contact labels vs slow references (CPU + CUDA)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sahmr.scene.contact import scene_contact_labels
from sahmr.scene.frustum import frustum_crop, roi_select
from sahmr.scene.voxels import voxelize


def _cameras(B: int, g: torch.Generator):
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]).expand(B, 3, 3).clone()
    T = torch.eye(4).expand(B, 4, 4).clone()
    angle = torch.rand(B, generator=g) * 6.28
    c, s = torch.cos(angle), torch.sin(angle)
    # Rotation about world z, then a world->camera axis swap (camera looks along world +x).
    Rz = torch.zeros(B, 3, 3)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, s, -s, c, 1
    swap = torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
    T[:, :3, :3] = swap @ Rz
    T[:, :3, 3] = torch.randn(B, 3, generator=g) * 0.3
    x1 = torch.rand(B, generator=g) * 300
    y1 = torch.rand(B, generator=g) * 200
    bbox = torch.stack([x1, y1, x1 + 200, y1 + 250], 1)
    return K, T, bbox


def _frustum_reference(points, K, T, bbox, near, far):
    out = []
    for b in range(K.shape[0]):
        for i, p in enumerate(points.double().numpy()):
            pc = T[b, :3, :3].double().numpy() @ p + T[b, :3, 3].double().numpy()
            if not near <= pc[2] <= far:
                continue
            u = K[b, 0, 0].item() * pc[0] / pc[2] + K[b, 0, 2].item()
            v = K[b, 1, 1].item() * pc[1] / pc[2] + K[b, 1, 2].item()
            x1, y1, x2, y2 = bbox[b].tolist()
            if x1 <= u <= x2 and y1 <= v <= y2:
                out.append((b, i))
    return out


def test_frustum_matches_loop_and_chunks():
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(600, 3, generator=g) - 0.5) * torch.tensor([16.0, 16.0, 3.0])
    K, T, bbox = _cameras(3, g)
    fp = frustum_crop(pts.double(), K, T, bbox, near=0.5, far=12.5, chunk_size=97)
    got = list(zip(fp.batch_idx.tolist(), fp.point_idx.tolist()))
    assert got == _frustum_reference(pts, K, T, bbox, 0.5, 12.5)
    assert len(got) > 20
    R = T[fp.batch_idx, :3, :3].double()
    ref_cam = torch.einsum("mij,mj->mi", R, pts[fp.point_idx].double())
    ref_cam += T[fp.batch_idx, :3, 3].double()
    torch.testing.assert_close(fp.points_cam, ref_cam)
    assert fp.counts().sum() == len(got)


def test_frustum_packed_scenes():
    g = torch.Generator().manual_seed(1)
    pts = (torch.rand(400, 3, generator=g) - 0.5) * 12
    scene_idx = torch.randint(0, 2, (400,), generator=g)
    K, T, bbox = _cameras(4, g)
    frame_scene = torch.tensor([0, 1, 1, 0])
    fp = frustum_crop(pts, K, T, bbox, scene_idx=scene_idx, frame_scene=frame_scene)
    full = frustum_crop(pts, K, T, bbox)
    keep = scene_idx[full.point_idx] == frame_scene[full.batch_idx]
    assert torch.equal(fp.point_idx, full.point_idx[keep])
    assert torch.equal(fp.batch_idx, full.batch_idx[keep])


def test_roi_select():
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(500, 3, generator=g) * 2
    bidx = torch.randint(0, 2, (500,), generator=g)
    anchors = torch.randn(2, 3, 3, generator=g)
    mask = roi_select(pts, bidx, anchors, radius=1.25)
    for m in range(500):
        d = (anchors[bidx[m]] - pts[m]).norm(dim=-1).min()
        assert bool(mask[m]) == bool(d <= 1.25)


def _voxel_reference(points, bidx, feats, size, origin):
    acc: dict = {}
    for p, b, f in zip(points.double().numpy(), bidx.tolist(), feats.double().numpy()):
        ijk = np.floor((p - origin[b]) / size).astype(int)
        key = (b, int(ijk[2]), int(ijk[1]), int(ijk[0]))
        acc.setdefault(key, []).append(f)
    return {k: np.mean(v, 0) for k, v in acc.items()}


@pytest.mark.parametrize("per_frame_origin", [False, True])
def test_voxelize_matches_dict(per_frame_origin):
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(800, 3, generator=g) * torch.tensor([1.0, 0.6, 0.4])
    bidx = torch.randint(0, 3, (800,), generator=g)
    feats = torch.randn(800, 5, generator=g, dtype=torch.float64)
    origin = torch.randn(3, 3, generator=g).abs().neg() if per_frame_origin else None
    vg = voxelize(pts.double(), bidx, feats, voxel_size=0.1, origin=origin)
    org = vg.origin.numpy()
    ref = _voxel_reference(pts, bidx, feats, 0.1, org)
    keys = [tuple(c) for c in vg.coords.tolist()]
    assert set(keys) == set(ref) and len(keys) == len(ref)
    assert keys == sorted(keys)
    for k, f in zip(keys, vg.features.numpy()):
        np.testing.assert_allclose(f, ref[k], atol=1e-12)
    # Inverse map, centres, and [b, z, y, x] order with x the fastest axis.
    for m in range(0, 800, 37):
        b, z, y, x = keys[vg.point2voxel[m]]
        assert b == bidx[m]
        ijk = np.floor((pts[m].double().numpy() - org[b]) / 0.1).astype(int)
        assert (x, y, z) == tuple(ijk)
        assert np.all(np.abs(vg.centres[vg.point2voxel[m]].numpy() - pts[m].numpy()) <= 0.05 + 1e-6)
    assert vg.tensor.indices.dtype == torch.int32 and vg.tensor.indices.is_contiguous()
    assert list(vg.tensor.spatial_shape) == vg.spatial_shape
    torch.testing.assert_close(vg.voxel_to_points(vg.features), vg.features[vg.point2voxel])
    shift = torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float64)
    vg2 = voxelize(pts.double() + shift, bidx, feats, voxel_size=0.1, origin=vg.origin + shift)
    assert torch.equal(vg2.coords, vg.coords)


def test_voxelize_spatial_shape_checks():
    pts = torch.tensor([[0.01, 0.02, 0.03], [0.31, 0.02, 0.03]])
    vg = voxelize(pts, torch.zeros(2, dtype=torch.long), pts, 0.1, origin=torch.zeros(3),
                  spatial_shape=(2, 2, 8))
    assert vg.coords.tolist() == [[0, 0, 0, 0], [0, 0, 0, 3]]
    with pytest.raises(ValueError):
        voxelize(pts, torch.zeros(2, dtype=torch.long), pts, 0.1, origin=torch.zeros(3),
                 spatial_shape=(2, 2, 2))


def _contact_reference(points, bidx, verts, region, thr):
    out = np.zeros(len(points), np.int64)
    for m in range(len(points)):
        best, lab = np.inf, 0
        for v in range(verts.shape[1]):
            if region[v] == 0:
                continue
            d = np.linalg.norm(points[m] - verts[bidx[m], v])
            if d < best:
                best, lab = d, region[v]
        out[m] = lab if best <= thr else 0
    return out


def test_contact_labels_match_loop():
    g = torch.Generator().manual_seed(4)
    verts = torch.rand(2, 60, 3, generator=g, dtype=torch.float64)
    region = torch.randint(0, 8, (60,), generator=g)
    pts = torch.rand(300, 3, generator=g, dtype=torch.float64)
    bidx = torch.randint(0, 2, (300,), generator=g)
    got = scene_contact_labels(pts, bidx, verts, region, threshold=0.07, chunk_size=50)
    ref = _contact_reference(pts.numpy(), bidx.numpy(), verts.numpy(), region.numpy(), 0.07)
    assert np.array_equal(got.numpy(), ref)
    assert (ref > 0).sum() > 10


@pytest.mark.slow  # a fresh interpreter importing spconv
def test_torch_path_imports_without_open3d():
    code = (
        "import sys; sys.modules['open3d'] = None\n"
        "import sahmr.scene.frustum, sahmr.scene.voxels, sahmr.scene.contact\n"
        "import sahmr.scene.sdf, sahmr.sparse\n"
        "import numpy as np, torch, tempfile, os\n"
        "from sahmr.scene.sdf import SDFGrid\n"
        "g = SDFGrid(np.zeros(3, np.float32), 0.1, np.zeros((3, 4, 5), np.float32))\n"
        "p = os.path.join(tempfile.mkdtemp(), 'g.npz'); g.save(p)\n"
        "print(float(SDFGrid.load(p).sample(torch.zeros(2, 3)).sum()))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0.0"


@pytest.mark.gpu
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    pts = (torch.rand(5000, 3, generator=g) - 0.5) * 12
    K, T, bbox = _cameras(4, g)
    a = frustum_crop(pts, K, T, bbox)
    b = frustum_crop(pts.cuda(), K.cuda(), T.cuda(), bbox.cuda())
    assert torch.equal(a.point_idx, b.point_idx.cpu())
    torch.testing.assert_close(a.points_cam, b.points_cam.cpu())
    feats = torch.randn(a.points_cam.shape[0], 4, generator=g)
    va = voxelize(a.points_cam, a.batch_idx, feats, 0.05)
    vb = voxelize(b.points_cam, b.batch_idx, feats.cuda(), 0.05)
    assert torch.equal(va.coords, vb.coords.cpu())
    torch.testing.assert_close(va.features, vb.features.cpu(), atol=1e-5, rtol=1e-5)
    assert torch.equal(va.point2voxel, vb.point2voxel.cpu())
    verts = torch.rand(4, 100, 3, generator=g) * 3
    region = torch.randint(0, 8, (100,), generator=g)
    la = scene_contact_labels(a.points_cam, a.batch_idx, verts, region, 0.3)
    lb = scene_contact_labels(b.points_cam, b.batch_idx, verts.cuda(), region.cuda(), 0.3)
    assert torch.equal(la, lb.cpu())
