"""Image summaries for TensorBoard: crops with projected ground-truth and predicted points."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from sahmr.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from sahmr.viz.grid import image_grid

GT_COLOR = (40, 200, 60)
PRED_COLOR = (230, 40, 40)


def denormalize_crops(image: Tensor) -> np.ndarray:
    """ImageNet-normalised crops (B, 3, S, S) -> uint8 RGB (B, S, S, 3)."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
    x = (image.detach().float() * std + mean).clamp(0.0, 1.0) * 255.0
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def draw_points(
    crop: np.ndarray, points: np.ndarray | None, color: tuple[int, int, int], radius: int = 2
) -> np.ndarray:
    """A copy of ``crop`` (S, S, 3) uint8 with dots at ``points`` (N, 2) crop pixels."""
    img = Image.fromarray(np.ascontiguousarray(crop))
    if points is not None:
        draw = ImageDraw.Draw(img)
        for u, v in np.asarray(points, dtype=np.float64).reshape(-1, 2):
            if np.isfinite(u) and np.isfinite(v):
                draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=color)
    return np.asarray(img)


def crop_grid(
    image: Tensor,
    gt_points2d: Tensor | None = None,
    pred_points2d: Tensor | None = None,
    *,
    max_images: int = 8,
    columns: int = 4,
) -> np.ndarray:
    """A grid of crops with ground-truth (green) and predicted (red) points.

    Args:
        image: Tensor (B, 3, S, S) normalised crops.
        gt_points2d: Tensor (B, J, 2) crop pixels, or None.
        pred_points2d: Tensor (B, J', 2) crop pixels, or None.
        max_images: Frames shown.
        columns: Frames per row.

    Returns:
        uint8 array (H, W, 3).
    """
    crops = denormalize_crops(image[:max_images])
    tiles = []
    for i, crop in enumerate(crops):
        tile = crop
        if gt_points2d is not None:
            tile = draw_points(tile, gt_points2d[i].detach().float().cpu().numpy(), GT_COLOR)
        if pred_points2d is not None:
            tile = draw_points(tile, pred_points2d[i].detach().float().cpu().numpy(), PRED_COLOR)
        tiles.append(tile)
    return image_grid(tiles, columns=columns)
