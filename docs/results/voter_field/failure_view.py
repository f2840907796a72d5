#!/usr/bin/env python3
"""A placed body beside the true one in the room, for one frame (docs/results.md, section (ab)).

    python3 docs/results/voter_field/failure_view.py DATA SPLIT NAME PRED.npz OUT.png

``PRED.npz``: the frame's prediction as `tools/eval_checkpoint.py save_predictions=true`
writes it (world-frame ``vertices``). Draws the frame's image (its crop when the set stores no
full frame) beside two orbit views of the room, chosen as the demo's (`sahmr.viz.scene_views`),
the true body in green and the predicted one in red.
"""

from __future__ import annotations

import argparse

import numpy as np

TRUTH_RGB = (0.2, 0.7, 0.3)
PREDICTED_RGB = (0.85, 0.2, 0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("name", help="frame name, e.g. test-000757")
    p.add_argument("pred")
    p.add_argument("out")
    p.add_argument("--view-size", type=int, nargs=2, default=(480, 360), metavar=("W", "H"))
    a = p.parse_args()
    from pathlib import Path

    from PIL import Image, ImageDraw

    from sahmr.body.model import BodyModel
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.scene.io import load_scene
    from sahmr.scene.orientation import up_vector
    from sahmr.viz.scene_views import choose_orbit_views, orbit_cameras, render_scene_view

    dataset = SyntheticDataset(a.data, a.split, load_image=True)
    sample = dataset[int(a.name.rsplit("-", 1)[1])]
    with np.load(a.pred, allow_pickle=False) as z:
        predicted = z["vertices"].astype(np.float64)
    truth = np.asarray(sample.vertices_world, np.float64)
    faces = np.asarray(BodyModel().faces, np.int64)  # the shipped body's topology
    both = np.concatenate([truth, predicted])
    both_faces = np.concatenate([faces, faces + len(truth)])
    colors = np.concatenate([np.tile(TRUTH_RGB, (len(truth), 1)),
                             np.tile(PREDICTED_RGB, (len(predicted), 1))])  # fmt: skip
    room = Path(a.data) / "rooms" / str(sample.scene_id) / "mesh.ply"
    mesh = load_scene(room)
    image = sample.image if sample.image is not None else sample.crop  # full frame if stored
    # two orbit views of both bodies, chosen as the demo chooses them (towards its camera)
    centre = 0.5 * (both.min(0) + both.max(0))
    body_radius = 0.5 * float(np.linalg.norm(both.max(0) - both.min(0)))
    T_w2c = np.asarray(sample.T_w2c, np.float64)
    candidates = orbit_cameras(centre, body_radius + 0.8, up_vector(mesh.up_axis),
                               azimuths_deg=[30.0 * k for k in range(12)] * 2,
                               elevations_deg=[35.0] * 12 + [65.0] * 12,
                               reference_world=-T_w2c[:3, :3].T @ T_w2c[:3, 3],
                               size=tuple(a.view_size), keep_radius=body_radius + 0.4)  # fmt: skip
    cams = choose_orbit_views((mesh.vertices, mesh.faces), both, candidates, 2)
    views = np.concatenate([render_scene_view(cam, scene_mesh=(mesh.vertices, mesh.faces),
                                              body_vertices=both, body_faces=both_faces,
                                              body_vertex_colors=colors)
                            for cam in cams], axis=1)  # fmt: skip
    photo = Image.fromarray(np.asarray(image, np.uint8))
    photo.thumbnail((a.view_size[0] // 2, views.shape[0] - 60))
    canvas = Image.new("RGB", (views.shape[1] + photo.width + 10, views.shape[0]), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(Image.fromarray(views), (photo.width + 10, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, photo.height + 6), a.name, fill=(0, 0, 0))
    draw.text((4, photo.height + 22), "truth", fill=tuple(int(255 * c) for c in TRUTH_RGB))
    draw.text((4, photo.height + 38), "predicted", fill=tuple(int(255 * c) for c in PREDICTED_RGB))
    canvas.save(a.out, optimize=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
