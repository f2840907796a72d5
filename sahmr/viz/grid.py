"""Tile images into a labelled contact sheet."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def image_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    columns: int = 4,
    pad: int = 4,
    background: int = 255,
) -> np.ndarray:
    """Arrange equally sized images in a grid, each with an optional caption.

    Args:
        images: uint8 arrays of shape (H, W, 3), all the same size.
        labels: optional caption per image, drawn in its top-left corner.
        columns: images per row.
        pad: pixels between tiles.
        background: grey level of the padding.

    Returns:
        uint8 array of shape (rows*(H+pad)+pad, cols*(W+pad)+pad, 3).
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    H, W = images[0].shape[:2]
    if any(im.shape[:2] != (H, W) for im in images):
        raise ValueError("image_grid: all images must have the same size")
    cols = min(columns, len(images))
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (W + pad) + pad, rows * (H + pad) + pad), (background,) * 3)
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (W + pad), pad + r * (H + pad)
        sheet.paste(Image.fromarray(np.ascontiguousarray(im[..., :3])), (x0, y0))
        if labels is not None:
            draw.text((x0 + 4, y0 + 3), labels[i], fill=(20, 20, 20))
    return np.asarray(sheet)
