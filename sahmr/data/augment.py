"""Batched crop augmentation on the device: box jitter/scale, colour jitter, occluders.

The geometric part moves the person box, not the camera: the box's centre is shifted by
``shift * side`` and its extent scaled by ``k`` (``side`` = the square crop's side, see
`sahmr.geometry.crops.square_bbox`), and the crop is resampled to show the new square. Since
`square_bbox` of the moved box is exactly the moved square, the crop camera that
`sahmr.scene.frontend.crop_intrinsics` derives from the new box (and every 2-D target projected
with it, and the bbox frustum of the scene points) agrees with the new crop's pixels, while all
3-D quantities stay as they were.

In the normalised coordinates of ``grid_sample`` (``align_corners=False``: pixel i spans
``[2 i / S - 1, 2 (i + 1) / S - 1]``) a pixel of the new crop at ``x`` shows the old crop at
``k * x + 2 * shift_x`` (same for y).

Every draw comes from the torch RNG of the batch's device (checkpointed by the trainer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sahmr.geometry.crops import square_bbox
from sahmr.scene.frontend import CROP_BBOX_SCALE

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AugmentConfig:
    """Augmentation strengths (``configs/loader/memory.yaml``: ``augment``).

    Attributes:
        scale: Box scale factor drawn uniformly from ``[1 - scale, 1 + scale]`` (> 1 zooms out).
        shift: Box centre shift per axis, uniform in ``[-shift, shift]`` times the crop side.
        brightness: Multiplicative brightness in ``[1 - b, 1 + b]``.
        contrast: Contrast factor around the mean grey in ``[1 - c, 1 + c]``.
        saturation: Saturation factor around each pixel's grey in ``[1 - s, 1 + s]``.
        occluder_prob: Probability of one random solid rectangle per crop.
        occluder_size: ``(min, max)`` side of the rectangle as a fraction of the crop side.
    """

    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    occluder_prob: float = 0.3
    occluder_size: tuple[float, float] = (0.1, 0.4)

    def __post_init__(self) -> None:
        self.occluder_size = tuple(float(v) for v in self.occluder_size)  # type: ignore[assignment]
        lo, hi = self.occluder_size
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"scale must be in [0, 1), got {self.scale}")
        if not 0.0 <= self.occluder_prob <= 1.0:
            raise ValueError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"occluder_size must satisfy 0 < min <= max <= 1, got {lo, hi}")
        for name in ("shift", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _uniform(n: int, half_width: float, device: torch.device, center: float = 0.0) -> Tensor:
    return center + half_width * (2.0 * torch.rand(n, device=device) - 1.0)


def jitter_boxes(bbox: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Boxes scaled about their centres and shifted by a fraction of their square crop's side.

    Args:
        bbox: Tensor (B, 4) ``x0, y0, x1, y1`` pixels.
        scale: Tensor (B,) extent factors k.
        shift: Tensor (B, 2) centre shifts as fractions of the square crop side.

    Returns:
        Tensor (B, 4) new boxes; ``square_bbox`` of them is the old square with centre moved
        by ``shift * side`` and side times k.
    """
    cx, cy, side = square_bbox(bbox, CROP_BBOX_SCALE)
    ncx = cx + shift[:, 0] * side
    ncy = cy + shift[:, 1] * side
    hw = 0.5 * (bbox[:, 2] - bbox[:, 0]) * scale
    hh = 0.5 * (bbox[:, 3] - bbox[:, 1]) * scale
    return torch.stack([ncx - hw, ncy - hh, ncx + hw, ncy + hh], dim=-1)


def warp_crops(image: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Resample crops (B, C, S, S) to the squares of `jitter_boxes` (zeros outside)."""
    B = image.shape[0]
    theta = image.new_zeros(B, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = 2.0 * shift
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def colour_jitter(
    image: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor
) -> Tensor:
    """Brightness, contrast and saturation of RGB images in [0, 1], per image.

    Args:
        image: Tensor (B, 3, H, W) in [0, 1].
        brightness, contrast, saturation: Tensors (B,) factors (1 = unchanged).

    Returns:
        Tensor (B, 3, H, W) clamped to [0, 1].
    """
    w = image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x = image * brightness.view(-1, 1, 1, 1)
    mean = (x * w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean
    grey = (x * w).sum(1, keepdim=True)
    x = (x - grey) * saturation.view(-1, 1, 1, 1) + grey
    return x.clamp_(0.0, 1.0)


def occluder_masks(
    batch: int, size: int, prob: float, side_range: tuple[float, float], device: torch.device
) -> Tensor:
    """Random axis-aligned rectangles: bool Tensor (B, S, S), True inside (none with 1 - prob)."""
    lo, hi = side_range
    wh = (lo + (hi - lo) * torch.rand(batch, 2, device=device)) * size
    xy0 = torch.rand(batch, 2, device=device) * (size - wh)
    on = torch.rand(batch, device=device) < prob
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    inside_x = (coords[None] >= xy0[:, :1]) & (coords[None] < xy0[:, :1] + wh[:, :1])
    inside_y = (coords[None] >= xy0[:, 1:]) & (coords[None] < xy0[:, 1:] + wh[:, 1:])
    return inside_y[:, :, None] & inside_x[:, None, :] & on[:, None, None]


def augment_crops(crop: Tensor, bbox: Tensor, config: AugmentConfig) -> tuple[Tensor, Tensor]:
    """Augmented crops and the boxes they now show.

    Args:
        crop: Tensor (B, S, S, 3) uint8 RGB crops of the square boxes around ``bbox``.
        bbox: Tensor (B, 4) person boxes, full-image pixels.
        config: Strengths.

    Returns:
        ``(crop, bbox)``: Tensor (B, S, S, 3) uint8 and Tensor (B, 4) float32; the crop camera
        of the new boxes (`sahmr.scene.frontend.crop_intrinsics`) projects into the new crops.
    """
    B, S = int(crop.shape[0]), int(crop.shape[1])
    dev = crop.device
    scale = _uniform(B, config.scale, dev, 1.0)
    shift = _uniform(2 * B, config.shift, dev).view(B, 2)
    image = crop.permute(0, 3, 1, 2).float().div_(255.0)
    image = warp_crops(image, scale, shift)
    image = colour_jitter(
        image,
        _uniform(B, config.brightness, dev, 1.0),
        _uniform(B, config.contrast, dev, 1.0),
        _uniform(B, config.saturation, dev, 1.0),
    )
    if config.occluder_prob > 0:
        mask = occluder_masks(B, S, config.occluder_prob, config.occluder_size, dev)
        fill = torch.rand(B, 3, 1, 1, device=dev).expand(-1, -1, S, S)
        image = torch.where(mask[:, None], fill, image)
    out = image.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.contiguous(), jitter_boxes(bbox.float(), scale, shift)
