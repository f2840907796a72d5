"""Render a body model in its rest pose and in standard poses, to look at it.

Writes ``body_showcase.png`` (front and side views of every pose) and ``rest_pose.ply`` to
``--out``. With no ``--model`` it shows the license-free body that ships with sahmr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from sahmr.body import BodyModel
from sahmr.body.poses import STANDARD_POSE_NAMES, standard_pose
from sahmr.viz.grid import image_grid
from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render

logger = logging.getLogger(__name__)

BODY_COLOR = (0.85, 0.62, 0.48)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None,
                   help="SMPL-format .npz (.pkl needs --allow-pickle); default: license-free body")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow unpickling a .pkl model file (only for files you trust)")
    p.add_argument("--out", type=Path, default=Path("outputs/show_body"))
    p.add_argument("--size", type=int, default=320, help="tile size in pixels")
    p.add_argument("--betas", type=float, nargs="*", default=None,
                   help="shape coefficients (default zeros)")
    return p.parse_args(argv)


def render_views(vertices: np.ndarray, faces: np.ndarray, size: int) -> list[np.ndarray]:
    """Front and side renders of one body, framed on its bounding box.

    Args:
        vertices: (V, 3) body vertices in the model frame (y up, facing +z), metres.
        faces: (F, 3) triangle indices.
        size: output tile size in pixels.

    Returns:
        Two uint8 images of shape (size, size, 3): front view, then the body's left side.
    """
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    radius = 0.5 * np.linalg.norm(vertices.max(0) - vertices.min(0))
    K = intrinsics_from_fov(size, size, 40.0)
    dist = radius / np.tan(np.deg2rad(20.0)) * 1.05
    up = np.array([0.0, 1.0, 0.0])
    views = []
    for direction in (np.array([0.0, 0.15, 1.0]), np.array([1.0, 0.15, 0.0])):
        d = direction / np.linalg.norm(direction)
        T = look_at(centre + dist * d, centre, up)
        out = render([MeshToRender(vertices, faces, BODY_COLOR)], K, T, size, size, supersample=2)
        views.append(out.rgb)
    return views


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        body = BodyModel(args.model, allow_pickle=args.allow_pickle, dtype=torch.float64)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    faces = np.asarray(body.faces, dtype=np.int64)
    betas = torch.zeros(1, body.num_betas, dtype=torch.float64)
    if args.betas:
        n = min(len(args.betas), body.num_betas)
        betas[0, :n] = torch.tensor(args.betas[:n], dtype=torch.float64)

    tiles, labels, heights = [], [], {}
    for name in STANDARD_POSE_NAMES:
        go, bp = standard_pose(name)
        with torch.no_grad():
            out = body(
                betas=betas,
                global_orient=torch.from_numpy(go)[None],
                body_pose=torch.from_numpy(bp)[None],
            )
        verts = out.vertices[0].numpy()
        if name == "T":
            heights["rest_height_m"] = float(verts[:, 1].max() - verts[:, 1].min())
            rest_verts = verts
        for view, label in zip(render_views(verts, faces, args.size), ("front", "side")):
            tiles.append(view)
            labels.append(f"{name} ({label})")

    args.out.mkdir(parents=True, exist_ok=True)
    sheet = image_grid(tiles, labels, columns=4)
    png = args.out / "body_showcase.png"
    Image.fromarray(sheet).save(png)
    trimesh.Trimesh(rest_verts, faces, process=False).export(args.out / "rest_pose.ply")
    summary = {
        "model": str(args.model) if args.model else "license-free neutral body",
        "num_vertices": int(rest_verts.shape[0]),
        "num_faces": int(faces.shape[0]),
        **heights,
        "poses": list(STANDARD_POSE_NAMES),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
