"""Contact sheets of generated samples: crops with their labels drawn on, for a person to check.

Each tile is a sample's 224x224 crop with the body's contact vertices projected through the
crop camera and coloured by region, the contact scene points as crosses, and a caption with
the action and occlusion ratio. Misplaced labels, wrong cameras or empty crops show at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sahmr.data.synthetic import SyntheticDataset
from sahmr.viz.grid import image_grid

# RGB per contact region 1..7 (left/right foot, left/right hand, back, gluteus, thighs).
REGION_COLORS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [245, 130, 48],
        [60, 180, 75],
        [0, 130, 200],
        [145, 30, 180],
        [240, 50, 230],
        [255, 225, 25],
    ],
    dtype=np.uint8,
)


def _project(K: np.ndarray, T_w2c: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    cam = points_world @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    uvw = cam @ K.T
    return uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-6)


def annotate_crop(sample) -> np.ndarray:
    """Draw a sample's contact labels over its crop.

    Args:
        sample: a `sahmr.data.sample.Sample` whose ``extra`` holds ``K_crop`` (3, 3).

    Returns:
        uint8 array of shape (224, 224, 3).
    """
    img = Image.fromarray(sample.crop.copy())
    draw = ImageDraw.Draw(img)
    K_crop = np.asarray(sample.extra["K_crop"], dtype=np.float64)
    T = np.asarray(sample.T_w2c, dtype=np.float64)
    labels = np.asarray(sample.vertex_contact)
    touching = labels > 0
    if touching.any():
        uv = _project(K_crop, T, np.asarray(sample.vertices_world, np.float64)[touching])
        for (u, v), region in zip(uv, labels[touching]):
            draw.point((float(u), float(v)), fill=tuple(int(c) for c in REGION_COLORS[region]))
    if len(sample.contact_points_world):
        uv = _project(K_crop, T, np.asarray(sample.contact_points_world, np.float64))
        for (u, v), region in zip(uv[::4], np.asarray(sample.contact_point_region)[::4]):
            c = tuple(int(x) for x in REGION_COLORS[region])
            draw.line((u - 2, v, u + 2, v), fill=c)
            draw.line((u, v - 2, u, v + 2), fill=c)
    draw.rectangle((0, 0, img.width, 12), fill=(255, 255, 255))
    draw.text((2, 1), f"{sample.action}  occ {sample.occlusion:.2f}", fill=(0, 0, 0))
    return np.asarray(img)


def dataset_contact_sheet(
    root: str | Path, split: str = "train", num: int = 24, seed: int = 0, columns: int = 6
) -> np.ndarray:
    """A grid of annotated crops drawn at random (seeded) from one split.

    Args:
        root: dataset folder written by ``tools/make_dataset.py``.
        split: split name.
        num: number of tiles.
        seed: which samples to draw.
        columns: tiles per row.

    Returns:
        uint8 image of shape (rows * 228 + 4, columns * 228 + 4, 3).
    """
    dataset = SyntheticDataset(root, split)
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of {root} holds no samples")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(num, len(dataset)), replace=False)
    tiles = [annotate_crop(dataset[int(i)]) for i in sorted(picks)]
    return image_grid(tiles, columns=columns)
