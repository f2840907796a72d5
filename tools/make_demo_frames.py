#!/usr/bin/env python
"""Make the bundled demo frames: rendered 640x480 images of bodies placed in bundled rooms.

For each frame: the data generator places a body in contact with the room
(`sahmr.synth.placement.Placer`), draws a camera looking at it (`sample_camera`) and renders
the full frame (`render_sample`, the same renderer as the training data). Written to
``scenes/<room>/demo/``::

    <name>.jpg            the image (JPEG, 640x480)
    <name>.camera.json    its camera (sahmr camera file, docs/demo.md)
    <name>.bbox.json      {"bbox": [x0, y0, x1, y1]}: the tight box of the projected body
    <name>.gt.npz         ground truth, world frame: betas, global_orient, body_pose, transl,
                          contact (V,) bool, vertex_contact (V,) int8, contact_points_world,
                          contact_point_region, scene, action

Deterministic for a given generator version: ``python tools/make_demo_frames.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from sahmr.body import BodyModel
from sahmr.inference.camera_io import CameraSpec, save_camera
from sahmr.synth.appearance import body_face_regions, sample_appearance
from sahmr.synth.bundled import bundled_scene_dir, load_bundled_room
from sahmr.synth.cameras import CameraRanges, sample_camera
from sahmr.synth.placement import Placer
from sahmr.synth.render_sample import BodyRaycaster, RoomRaycaster, render_sample

logger = logging.getLogger("make_demo_frames")

FRAMES: tuple[tuple[str, str, str, int], ...] = (
    # (room, frame name, action, seed)
    ("living_room", "sit_sofa", "sit_sofa", 11),
    ("living_room", "stand", "stand", 12),
    ("office", "sit_chair", "sit_chair", 13),
)
"""The bundled demo frames."""

IMAGE_SIZE = (640, 480)
MAX_BYTES = 150_000
JPEG_QUALITY = 88


def make_frame(
    room_name: str,
    name: str,
    action: str,
    seed: int,
    out: Path,
    body: BodyModel,
    placers: dict[str, Placer],
    max_tries: int = 40,
) -> Path:
    """Place, photograph and write one demo frame; returns the image path.

    ``placers`` caches one placer (and its SDF) per room across calls.
    """
    if room_name not in placers:
        placers[room_name] = Placer(load_bundled_room(room_name), body)
    placer = placers[room_name]
    room = placer.room
    rng = np.random.default_rng(seed)
    caster = RoomRaycaster(room.mesh.vertices, room.mesh.faces)
    regions = body_face_regions(body.lbs_weights.numpy(), body.faces)
    ranges = CameraRanges(
        image_sizes=(IMAGE_SIZE,),
        distance=(2.0, 4.5),
        height=(1.0, 2.0),
        min_bbox_height=0.35,
        max_occlusion=0.15,
    )
    for _ in range(max_tries):
        placed = placer.sample(rng, action=action)
        if placed is None:
            continue
        verts = np.asarray(placed.vertices_world, np.float64)
        body_caster = BodyRaycaster(verts, body.faces)
        camera = sample_camera(rng, room, np.asarray(placed.joints_world[0]), ranges)
        if camera is None:
            continue
        look = sample_appearance(rng, room, regions)
        rendered, reason = render_sample(
            caster, body_caster, verts, look, camera, ranges, full_frame_scale=1.0
        )
        if rendered is None:
            logger.info("%s: rejected view (%s)", name, reason)
            continue
        out.mkdir(parents=True, exist_ok=True)
        image_path = out / f"{name}.jpg"
        Image.fromarray(rendered.image).save(image_path, quality=JPEG_QUALITY, optimize=True)
        save_camera(
            out / f"{name}.camera.json",
            CameraSpec(K=camera.K, T_w2c=camera.T_w2c, image_size=(camera.width, camera.height)),
        )
        bbox = np.round(rendered.bbox, 1).tolist()
        (out / f"{name}.bbox.json").write_text(json.dumps({"bbox": bbox}) + "\n", encoding="utf-8")
        contact = np.asarray(placed.vertex_contact)
        np.savez_compressed(
            out / f"{name}.gt.npz",
            betas=placed.betas.astype(np.float32),
            global_orient=placed.global_orient.astype(np.float32),
            body_pose=placed.body_pose.astype(np.float32),
            transl=placed.transl.astype(np.float32),
            contact=contact > 0,
            vertex_contact=contact.astype(np.int8),
            contact_points_world=placed.contact_points_world.astype(np.float32),
            contact_point_region=placed.contact_point_region.astype(np.int8),
            scene=np.array(room_name),
            action=np.array(placed.action),
        )
        size = sum(p.stat().st_size for p in out.glob(f"{name}.*"))
        if size > MAX_BYTES:
            raise RuntimeError(f"{name}: {size} bytes > {MAX_BYTES}")
        logger.info(
            "%s/%s: %s, bbox %s, occlusion %.2f, %d bytes",
            room_name,
            name,
            placed.action,
            bbox,
            rendered.occlusion,
            size,
        )
        return image_path
    raise RuntimeError(f"{room_name}/{name}: no accepted frame in {max_tries} tries")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="one room")
    p.add_argument(
        "--out-root",
        type=Path,
        default=None,
        help="write <room>/demo/ here instead of the bundled scenes folder",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    body = BodyModel()
    placers: dict[str, Placer] = {}
    for room, name, action, seed in FRAMES:
        if args.only and room != args.only:
            continue
        root = args.out_root / room if args.out_root else bundled_scene_dir(room)
        make_frame(room, name, action, seed, root / "demo", body, placers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
