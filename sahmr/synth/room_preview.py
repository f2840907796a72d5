"""Overview pictures of a room (``preview.png`` next to its files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sahmr.synth.rooms import Room


def render_preview(
    room: Room,
    width: int = 640,
    height: int = 480,
    *,
    pitch_deg: float = 35.0,
    fov_x_deg: float = 60.0,
    supersample: int = 2,
) -> np.ndarray:
    """Overview picture from above one corner, looking down at ``pitch_deg``.

    The camera sits beyond the corner farthest from the (first) door; the two walls meeting
    at that corner are cut away so that the furniture is visible. Faces keep their category
    colours.

    Args:
        room: the room to draw.
        width: image width in pixels.
        height: image height in pixels.
        pitch_deg: angle of the optical axis below the horizontal, degrees.
        fov_x_deg: horizontal field of view, degrees.
        supersample: rays per pixel along each axis.

    Returns:
        uint8 array of shape (height, width, 3).
    """
    from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render

    W, D = room.floor_size
    door_walls = {
        room.objects[o.wall_id].label.rsplit("_", 1)[-1] for o in room.openings if o.kind == "door"
    }
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    side_of = {(-1, 0): "west", (1, 0): "east", (0, -1): "south", (0, 1): "north"}
    corner = corners[0]
    for c in corners:
        if not door_walls & {side_of[(c[0], 0)], side_of[(0, c[1])]}:
            corner = c
            break
    cut = {side_of[(corner[0], 0)], side_of[(0, corner[1])]}
    keep = np.ones(len(room.objects), dtype=bool)
    for o in room.objects:
        if o.category == "wall" and o.label.rsplit("_", 1)[-1] in cut:
            keep[o.id] = False
        if o.category == "ceiling":
            keep[o.id] = False
    faces_keep = keep[room.face_object_id]
    colors = np.asarray(room.mesh.visual.face_colors[:, :3], dtype=np.float64) / 255.0
    draw = MeshToRender(
        room.mesh.vertices, room.mesh.faces[faces_keep], face_colors=colors[faces_keep]
    )

    K = intrinsics_from_fov(width, height, fov_x_deg)
    horiz = np.array([corner[0] * W, corner[1] * D], dtype=np.float64)
    horiz /= np.linalg.norm(horiz)
    pitch = np.deg2rad(pitch_deg)
    back = np.array([horiz[0] * np.cos(pitch), horiz[1] * np.cos(pitch), np.sin(pitch)])
    top = max(room.wall_height, 1.0)
    pts = np.array(
        [[x, y, z] for x in (-W / 2, W / 2) for y in (-D / 2, D / 2) for z in (0.0, top)]
    )
    target = np.array([0.0, 0.0, 0.25 * top])

    def fits(dist: float) -> bool:
        T = look_at(target + back * dist, target, np.array([0.0, 0.0, 1.0]))
        pc = pts @ T[:3, :3].T + T[:3, 3]
        if np.any(pc[:, 2] <= 0.1):
            return False
        uv = pc[:, :2] / pc[:, 2:3] * K[0, 0] + K[:2, 2]
        m = 0.04 * width
        return bool(
            np.all(
                (uv[:, 0] > m) & (uv[:, 0] < width - m) & (uv[:, 1] > m) & (uv[:, 1] < height - m)
            )
        )

    lo, hi = 0.5, 200.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    T_w2c = look_at(target + back * hi, target, np.array([0.0, 0.0, 1.0]))
    out = render(
        [draw], K, T_w2c, width, height, supersample=supersample, background=(0.97, 0.97, 0.97)
    )
    return out.rgb


def save_preview(room: Room, path: str | Path, **kwargs) -> Path:
    """Render :func:`render_preview` and write it as PNG.

    Args:
        room: the room to draw.
        path: output file.
        **kwargs: passed to :func:`render_preview`.

    Returns:
        The path written.
    """
    from PIL import Image

    path = Path(path)
    Image.fromarray(render_preview(room, **kwargs)).save(path, optimize=True)
    return path
