"""Image summaries for TensorBoard: crops with projected ground-truth and predicted points."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from sahmr.viz.grid import image_grid
from sahmr.viz.overlay import draw_points
from sahmr.viz.summaries import denormalize_images

GT_COLOR = (40 / 255, 200 / 255, 60 / 255)
PRED_COLOR = (230 / 255, 40 / 255, 40 / 255)


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
    crops = denormalize_images(image[:max_images])
    tiles = []
    for i, crop in enumerate(crops):
        tile = crop
        if gt_points2d is not None:
            tile = draw_points(tile, gt_points2d[i].detach().float().cpu().numpy(), GT_COLOR)
        if pred_points2d is not None:
            tile = draw_points(tile, pred_points2d[i].detach().float().cpu().numpy(), PRED_COLOR)
        tiles.append(tile)
    return image_grid(tiles, columns=columns)
