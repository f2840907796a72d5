"""A tiny synthetic dataset written in code (the shard format, no generator): two box rooms,
the shipped body's template posed by a translation and a yaw, cameras looking at it.

Used by the in-memory data tests here and in tests/engine (imported by path there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sahmr.body.model import license_free_model_path
from sahmr.data.shards import encode_image, pack_rows, shard_name, write_shard_atomic

CROP = 224


def _room_points(rng: np.random.Generator, n: int = 6000) -> np.ndarray:
    """Points on the floor and four walls of a 6 x 6 x 3 m box centred on the origin."""
    pts = rng.uniform([-3, -3, 0], [3, 3, 3], size=(n, 3))
    face = rng.integers(0, 5, size=n)
    pts[face == 0, 2] = 0.0
    pts[face == 1, 0] = -3.0
    pts[face == 2, 0] = 3.0
    pts[face == 3, 1] = -3.0
    pts[face == 4, 1] = 3.0
    return pts.astype(np.float32)


def _camera(rng: np.random.Generator, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, T_w2c)`` of a camera about 3 m from ``target`` looking at it (world z up)."""
    yaw = rng.uniform(0, 2 * np.pi)
    eye = target + np.array([3.0 * np.cos(yaw), 3.0 * np.sin(yaw), rng.uniform(0.2, 0.8)])
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])  # rows: camera axes in the world
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    K = np.array([[500.0, 0, 320.0], [0, 500.0, 240.0], [0, 0, 1.0]])
    return K.astype(np.float32), T.astype(np.float32)


def write_tiny_dataset(out: str | Path, *, per_shard: int = 2, seed: int = 0) -> Path:
    """Write 3 train shards (rooms a, b, a) and 1 val shard (room c) of ``per_shard`` rows.

    Returns:
        The dataset folder.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    with np.load(license_free_model_path(), allow_pickle=False) as z:
        template = z["v_template"].astype(np.float64)
        jreg = z["J_regressor"].astype(np.float64)
    up = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # template y-up -> world z-up
    plan = [("train", "room_a"), ("train", "room_b"), ("train", "room_a"), ("val", "room_c")]
    scenes = {}
    for sid in sorted({s for _, s in plan}):
        folder = out / "rooms" / sid
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "scene_points.npz", points=_room_points(rng))
        scenes[sid] = {"kind": "box", "seed": 0, "split": dict((s, p) for p, s in plan)[sid]}
    shards = []
    for k, (split, sid) in enumerate(plan):
        rows = []
        for r in range(per_shard):
            yaw = rng.uniform(-np.pi, np.pi)
            c, s = np.cos(yaw), np.sin(yaw)
            Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
            transl = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.0])
            verts = template @ (Rz @ up).T
            verts[:, 2] -= verts[:, 2].min()
            verts += transl
            joints = jreg @ verts
            K, T = _camera(rng, joints[0])
            cam = verts @ T[:3, :3].T + T[:3, 3]
            uv = cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
            bbox = np.concatenate([uv.min(0), uv.max(0)]).astype(np.float32)
            n_c = int(rng.integers(0, 9))
            rows.append(
                {
                    "bbox": bbox, "K": K, "K_crop": K, "T_w2c": T,
                    "image_size": np.array([640, 480]),
                    "betas": rng.normal(size=10) * 0.5,
                    "global_orient": np.array([0.0, 0.0, yaw]),
                    "body_pose": rng.normal(size=69) * 0.1, "transl": transl,
                    "vertices_world": verts, "joints_world": joints,
                    "vertex_contact": rng.integers(0, 8, size=len(verts)),
                    "occlusion": rng.uniform(0, 0.5), "frame_index": r, "object_id": -1,
                    "image_scale": 0.0,
                    "contact_points_world": rng.uniform(-2, 2, size=(n_c, 3)),
                    "contact_point_region": rng.integers(1, 8, size=n_c),
                    "crop": encode_image(rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8)),
                    "mask": b"", "depth": b"", "image": b"",
                    "scene_id": sid, "sequence_id": f"seq_{k}", "action": "stand",
                }
            )  # fmt: skip
        name = f"shards/{shard_name(k)}"
        write_shard_atomic(out / name, pack_rows(rows, {"shard": k, "split": split}))
        shards.append({"index": k, "split": split, "num_samples": per_shard, "file": name})
    meta = {"format": "sahmr.synth_dataset", "version": 1, "shards": shards, "scenes": scenes}
    (out / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return out
