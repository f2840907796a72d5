#!/usr/bin/env python3
"""A placed body beside the true one in the room, for one frame (docs/results.md, section (ab)).

    python3 docs/results/voter_field/failure_view.py DATA SPLIT NAME PRED.npz OUT.png

``PRED.npz``: the frame's prediction as `tools/eval_checkpoint.py save_predictions=true`
writes it (world-frame ``vertices``). Draws the frame's image (its crop when the set stores no
full frame) beside two orbit views of the room, chosen as the demo's
(`sahmr.viz.scene_views.render_scene_views`), the true body in green and the predicted one in
red.
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
    from sahmr.viz.scene_views import ViewCamera, render_scene_views

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
    # two orbit views of both bodies, turned towards the side the frame's camera saw
    camera = ViewCamera(np.asarray(sample.K, np.float64), np.asarray(sample.T_w2c, np.float64),
                        *(int(v) for v in sample.image_size))  # fmt: skip
    views = render_scene_views(scene_mesh=(mesh.vertices, mesh.faces), body_vertices=both,
                               body_faces=both_faces, body_vertex_colors=colors,
                               up_axis=mesh.up_axis, input_camera=camera,
                               show_input_camera=False, num_orbit_views=2,
                               size=tuple(a.view_size), legend=False)  # fmt: skip
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
