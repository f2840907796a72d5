"""Appearance variety for synthetic renders: clothing-like body colours, room colours, light.

Body colours are per face and follow clothing regions derived from the loaded body model's
skinning weights (each vertex belongs to the SMPL joint with the largest weight), so they work
for any SMPL-format model. Room colours jitter each object's base colour and sometimes
repaint floor and walls. Lighting varies the key-light direction (world frame, from above)
and the ambient share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sahmr.body.constants import SMPL_JOINT_INDEX
from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

# Clothing regions, by the SMPL joint that dominates a vertex's skinning.
REGION_SKIN, REGION_TOP, REGION_SLEEVE, REGION_BOTTOM, REGION_LEG, REGION_SHOE, REGION_HAIR = range(
    7
)
NUM_REGIONS = 7

_JOINT_REGION = {
    "pelvis": REGION_BOTTOM,
    "left_hip": REGION_BOTTOM,
    "right_hip": REGION_BOTTOM,
    "left_knee": REGION_LEG,
    "right_knee": REGION_LEG,
    "left_ankle": REGION_SHOE,
    "right_ankle": REGION_SHOE,
    "left_foot": REGION_SHOE,
    "right_foot": REGION_SHOE,
    "spine1": REGION_TOP,
    "spine2": REGION_TOP,
    "spine3": REGION_TOP,
    "left_collar": REGION_TOP,
    "right_collar": REGION_TOP,
    "left_shoulder": REGION_TOP,
    "right_shoulder": REGION_TOP,
    "left_elbow": REGION_SLEEVE,
    "right_elbow": REGION_SLEEVE,
    "neck": REGION_SKIN,
    "head": REGION_HAIR,
    "left_wrist": REGION_SKIN,
    "right_wrist": REGION_SKIN,
    "left_hand": REGION_SKIN,
    "right_hand": REGION_SKIN,
}

_SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.90, 0.72, 0.58],
        [0.78, 0.57, 0.44],
        [0.62, 0.43, 0.31],
        [0.45, 0.30, 0.21],
        [0.33, 0.22, 0.15],
    ]
)
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.55, 0.40, 0.22], [0.6, 0.6, 0.6]])
_WALL_PAINTS = np.array(
    [
        [0.93, 0.92, 0.88],
        [0.85, 0.88, 0.90],
        [0.90, 0.85, 0.75],
        [0.78, 0.84, 0.76],
        [0.70, 0.72, 0.78],
        [0.95, 0.90, 0.85],
    ]
)
_FLOORS = np.array(
    [
        [0.55, 0.38, 0.22],
        [0.70, 0.55, 0.38],
        [0.45, 0.45, 0.47],
        [0.75, 0.74, 0.70],
        [0.30, 0.25, 0.22],
        [0.60, 0.20, 0.18],
    ]
)


def body_vertex_regions(lbs_weights: np.ndarray) -> np.ndarray:
    """Clothing region of every body vertex from its dominant skinning joint.

    Args:
        lbs_weights: (V, 24) skinning weights of an SMPL-format model.

    Returns:
        (V,) int64 region ids (``REGION_*``).
    """
    lut = np.zeros(len(SMPL_JOINT_INDEX), dtype=np.int64)
    for name, region in _JOINT_REGION.items():
        lut[SMPL_JOINT_INDEX[name]] = region
    return lut[np.argmax(np.asarray(lbs_weights), axis=1)]


def body_face_regions(lbs_weights: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Clothing region of every body face (majority of its three vertices, ties -> first).

    Args:
        lbs_weights: (V, 24) skinning weights.
        faces: (F, 3) int vertex indices.

    Returns:
        (F,) int64 region ids.
    """
    vr = body_vertex_regions(lbs_weights)[np.asarray(faces)]
    same12 = vr[:, 1] == vr[:, 2]
    return np.where(same12, vr[:, 1], vr[:, 0])


@dataclass
class Appearance:
    """Colours and light for one render.

    Attributes:
        body_face_colors: (F_body, 3) RGB in [0, 1].
        room_face_colors: (F_room, 3) RGB in [0, 1].
        background: (3,) RGB in [0, 1] where no ray hits (sky / outside).
        ambient: Share of light reaching every surface, in [0, 1].
        light_dir_world: (3,) unit direction the key light comes from, world frame.
    """

    body_face_colors: np.ndarray
    room_face_colors: np.ndarray
    background: np.ndarray
    ambient: float
    light_dir_world: np.ndarray


def sample_color(rng: np.random.Generator) -> np.ndarray:
    """A random clothing / object colour: (3,) RGB in [0, 1], any hue, saturation 0.1-0.8,
    brightness 0.15-0.95."""
    hue_rgb = rng.uniform(0.0, 1.0, size=3)
    sat = rng.uniform(0.1, 0.8)
    val = rng.uniform(0.15, 0.95)
    gray = hue_rgb.mean()
    return np.clip(val * (gray + sat * (hue_rgb - gray)) / max(gray, 1e-3), 0.0, 1.0)


def sample_body_colors(rng: np.random.Generator, face_regions: np.ndarray) -> np.ndarray:
    """Per-face body colours: skin tone, hair, top, sleeves, bottom, legs, shoes.

    Long or short sleeves and trousers or shorts are chosen at random (short: skin colour).

    Args:
        rng: Random generator.
        face_regions: (F,) region ids from `body_face_regions`.

    Returns:
        (F, 3) RGB in [0, 1].
    """
    skin = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * rng.uniform(0.92, 1.05)
    top, bottom = sample_color(rng), sample_color(rng)
    palette = np.zeros((NUM_REGIONS, 3))
    palette[REGION_SKIN] = skin
    palette[REGION_HAIR] = _HAIR[int(rng.integers(len(_HAIR)))] if rng.random() < 0.8 else skin
    palette[REGION_TOP] = top
    palette[REGION_SLEEVE] = top if rng.random() < 0.6 else skin
    palette[REGION_BOTTOM] = bottom
    palette[REGION_LEG] = bottom if rng.random() < 0.75 else skin
    palette[REGION_SHOE] = rng.uniform(0.05, 0.9) * np.ones(3) * rng.uniform(0.8, 1.0, size=3)
    return np.clip(palette[face_regions], 0.0, 1.0)


def sample_room_colors(rng: np.random.Generator, room: Room) -> np.ndarray:
    """Per-face room colours: each object's colour jittered; floor/walls sometimes repainted.

    Args:
        rng: Random generator.
        room: The room (its mesh carries per-face base colours).

    Returns:
        (F_room, 3) RGB in [0, 1].
    """
    base = np.asarray(room.mesh.visual.face_colors, dtype=np.float64)[:, :3] / 255.0
    n_obj = len(room.objects)
    gain = rng.uniform(0.8, 1.2, size=(n_obj, 1)) * rng.uniform(0.92, 1.08, size=(n_obj, 3))
    colors = base * gain[room.face_object_id]
    wall_paint = _WALL_PAINTS[int(rng.integers(len(_WALL_PAINTS)))] * rng.uniform(0.85, 1.05)
    floor_paint = _FLOORS[int(rng.integers(len(_FLOORS)))] * rng.uniform(0.85, 1.1)
    repaint_walls, repaint_floor = rng.random() < 0.5, rng.random() < 0.5
    for obj in room.objects:
        if obj.category == "wall" and repaint_walls:
            colors[room.face_object_id == obj.id] = wall_paint
        elif obj.category == "floor" and repaint_floor:
            colors[room.face_object_id == obj.id] = floor_paint
    return np.clip(colors, 0.0, 1.0)


def sample_light(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Key-light direction from the upper hemisphere and an ambient share.

    Args:
        rng: Random generator.

    Returns:
        ``(light_dir_world (3,) unit, ambient in [0.15, 0.5])``.
    """
    elev = rng.uniform(np.deg2rad(25.0), np.deg2rad(85.0))
    azim = rng.uniform(0.0, 2.0 * np.pi)
    d = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    return d, float(rng.uniform(0.15, 0.5))


def sample_appearance(
    rng: np.random.Generator, room: Room, body_face_regions_: np.ndarray
) -> Appearance:
    """Draws a full `Appearance` for one sample.

    Args:
        rng: Random generator.
        room: The room.
        body_face_regions_: (F_body,) region ids from `body_face_regions`.

    Returns:
        The Appearance.
    """
    light, ambient = sample_light(rng)
    sky = np.array([0.62, 0.75, 0.92]) * rng.uniform(0.85, 1.1)
    return Appearance(
        body_face_colors=sample_body_colors(rng, body_face_regions_),
        room_face_colors=sample_room_colors(rng, room),
        background=np.clip(sky, 0.0, 1.0),
        ambient=ambient,
        light_dir_world=light,
    )
