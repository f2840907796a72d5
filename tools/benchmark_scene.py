"""Benchmark the scene front end: SDF building, frustum crop + ROI + voxelisation.

Usage:
    python tools/benchmark_scene.py [--device cpu|cuda] [--triangles 1000000]
        [--points 2000000] [--frames 32] [--voxel 0.02] [--skip-sdf] [--json out.json]

Scenes are made procedurally: a room (floor + four walls) plus subdivided furniture
boxes, about ``--triangles`` triangles, and a 2 M-point cloud sampled from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import time

import numpy as np
import torch
import trimesh

from sahmr.scene.frustum import frustum_crop, roi_select
from sahmr.scene.io import SceneMesh
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M, build_sdf_grid
from sahmr.scene.voxels import voxelize

logger = logging.getLogger("benchmark_scene")


def procedural_room(n_triangles: int, seed: int = 0, size=(8.0, 6.0, 3.0)) -> SceneMesh:
    """A closed-floor open-ceiling room with subdivided boxes, ~n_triangles faces."""
    rng = np.random.default_rng(seed)
    L, W, H = size
    parts = []
    room = trimesh.creation.box(extents=size)
    room.apply_translation(np.array(size) / 2)
    keep = room.triangles_center[:, 2] < H - 1e-6  # drop the ceiling
    room = trimesh.Trimesh(room.vertices, room.faces[keep][:, ::-1], process=False)
    parts.append(room)
    per_box = 12 * 4**5  # 12288 triangles per 5-times subdivided box
    n_boxes = max(1, (n_triangles - len(room.faces)) // per_box)
    for _ in range(n_boxes):
        ext = rng.uniform([0.3, 0.3, 0.3], [1.5, 1.0, 1.2])
        box = trimesh.creation.box(extents=ext)
        for _ in range(5):
            box = box.subdivide()
        pos = rng.uniform([ext[0] / 2, ext[1] / 2, 0], [L - ext[0] / 2, W - ext[1] / 2, 0])
        box.apply_translation(pos + np.array([0.0, 0.0, ext[2] / 2]))
        parts.append(box)
    mesh = trimesh.util.concatenate(parts)
    return SceneMesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_frontend(mesh: SceneMesh, n_points: int, frames: int, device: str, repeat: int = 3):
    """Time frustum crop + ROI + voxelisation for a batch of frames."""
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    pts, _ = trimesh.sample.sample_surface(tm, n_points, seed=0)
    points = torch.from_numpy(np.asarray(pts, np.float32)).to(device)
    g = torch.Generator().manual_seed(0)
    B = frames
    K = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]).expand(B, 3, 3).clone()
    T = torch.eye(4).expand(B, 4, 4).clone()
    yaw = torch.rand(B, generator=g) * 6.283
    c, s = torch.cos(yaw), torch.sin(yaw)
    Rz = torch.zeros(B, 3, 3)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, s, -s, c, 1
    swap = torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
    R = swap @ Rz
    cam_pos = torch.tensor([4.0, 3.0, 1.5]) + (torch.rand(B, 3, generator=g) - 0.5)
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ cam_pos[:, :, None]).squeeze(-1)
    bbox = torch.tensor([220.0, 90, 420, 470]).expand(B, 4).clone()
    K, T, bbox = K.to(device), T.to(device), bbox.to(device)
    times = {"frustum": [], "roi": [], "voxelize": [], "total": []}
    sizes = {}
    for _ in range(repeat + 1):
        _sync(device)
        t0 = time.perf_counter()
        fp = frustum_crop(points, K, T, bbox)
        _sync(device)
        t1 = time.perf_counter()
        root = torch.tensor([0.0, 0.0, 3.0], device=device)
        anchors = torch.stack([root - torch.tensor([0, 0, 0.5], device=device), root,
                               root + torch.tensor([0, 0, 0.5], device=device)])
        anchors = anchors.expand(B, 3, 3)
        mask = roi_select(fp.points_cam, fp.batch_idx, anchors, 1.25)
        p, b = fp.points_cam[mask], fp.batch_idx[mask]
        _sync(device)
        t2 = time.perf_counter()
        feats = torch.cat([p - root, torch.zeros(p.shape[0], 32, device=device)], 1)
        vg = voxelize(p, b, feats, 0.05, origin=root - 1.75, spatial_shape=(70, 70, 70),
                      batch_size=B)
        _sync(device)
        t3 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            times[k].append(1000 * v)
        sizes = {"frustum_points": int(fp.points_cam.shape[0]), "roi_points": int(p.shape[0]),
                 "voxels": int(vg.coords.shape[0])}
    med = {k: float(np.median(v[1:])) for k, v in times.items()}
    return med, sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--triangles", type=int, default=1_000_000)
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--voxel", type=float, default=SDF_VOXEL_SIZE_M, help="SDF pitch, m")
    ap.add_argument("--skip-sdf", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    info = {
        "device": args.device,
        "cpu": next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")), platform.processor()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    mesh = procedural_room(args.triangles)
    info["triangles"] = int(mesh.faces.shape[0])
    info["make_scene_s"] = round(time.perf_counter() - t0, 2)
    if not args.skip_sdf:
        import open3d

        info["open3d"] = open3d.__version__
        t0 = time.perf_counter()
        grid = build_sdf_grid(mesh, voxel_size=args.voxel, margin=0.2)
        info["sdf_build_s"] = round(time.perf_counter() - t0, 2)
        info["sdf_grid_xyz"] = list(grid.shape_xyz)
        pts = torch.rand(1_000_000, 3) * torch.tensor([8.0, 6.0, 3.0])
        values, _ = grid.to_torch(args.device)
        pts = pts.to(args.device)
        grid.sample(pts, values=values)
        _sync(args.device)
        t0 = time.perf_counter()
        grid.sample(pts, values=values)
        _sync(args.device)
        info["sdf_sample_1M_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    med, sizes = bench_frontend(mesh, args.points, args.frames, args.device)
    info["frontend_ms"] = {k: round(v, 1) for k, v in med.items()}
    info["frontend_sizes"] = sizes
    print(json.dumps(info, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
