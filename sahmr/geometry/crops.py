"""Square bounding-box crops and the pinhole camera of each crop.

Pixel convention (OpenCV): pixel ``(i, j)`` has its centre at the continuous coordinate
``(u, v) = (j, i)``; an image of width W spans ``u`` in ``[-0.5, W - 0.5]``.

A square box with centre ``(cx, cy)`` and side ``s`` (original pixels) is resampled to an
``S x S`` crop (``S = out_size``). The box's edges map to the crop's edges, so with
``a = S / s`` a point at original pixel ``u`` lands at crop pixel

    u' = a * (u - cx) + S / 2 - 0.5        (same for v with cy)

:func:`crop_camera` folds that affine map into ``K`` and :func:`crop_image` samples the image
with exactly its inverse, so projecting a 3D point with the crop's ``K`` gives the crop pixel
where that point's image content ends up.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sahmr.geometry.cameras import make_K

DEFAULT_CROP_SIZE = 224
"""Side of the network input crop in pixels."""


def square_bbox(bbox_xyxy: Tensor, scale: float = 1.2) -> tuple[Tensor, Tensor, Tensor]:
    """Enclose boxes in scaled squares with the same centre.

    Args:
        bbox_xyxy: Tensor of shape (..., 4), ``[x0, y0, x1, y1]`` in pixels (continuous edges).
        scale: Factor applied to the longer side.

    Returns:
        ``(cx, cy, side)``, each a Tensor of shape (...), pixels.
    """
    x0, y0, x1, y1 = bbox_xyxy.unbind(-1)
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2
    side = torch.maximum(x1 - x0, y1 - y0) * scale
    return cx, cy, side


def _bbox_to_center_side(bbox: Tensor | tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
    """Accept either ``(cx, cy, side)`` or a Tensor of shape (..., 3) with those columns."""
    if isinstance(bbox, Tensor):
        if bbox.shape[-1] != 3:
            raise ValueError(
                f"bbox tensor must have last dimension 3 (cx, cy, side); got {tuple(bbox.shape)}"
            )
        return bbox.unbind(-1)
    cx, cy, side = bbox
    return cx, cy, side


def crop_affine(
    bbox: Tensor | tuple[Tensor, Tensor, Tensor], out_size: int = DEFAULT_CROP_SIZE
) -> Tensor:
    """The 3x3 affine map from original pixels to crop pixels.

    Args:
        bbox: ``(cx, cy, side)`` Tensors of shape (...) or one Tensor of shape (..., 3), pixels.
        out_size: Crop side S in pixels.

    Returns:
        Tensor of shape (..., 3, 3), ``[[a, 0, bx], [0, a, by], [0, 0, 1]]`` with
        ``a = S / side`` and ``b = -a * c + S / 2 - 0.5``.
    """
    cx, cy, side = _bbox_to_center_side(bbox)
    cx, cy, side = torch.broadcast_tensors(cx, cy, side)
    a = out_size / side
    bx = -a * cx + out_size / 2 - 0.5
    by = -a * cy + out_size / 2 - 0.5
    # Same layout as an intrinsic matrix: scale a on the diagonal, translation (bx, by).
    return make_K(a, a, bx, by)


def crop_camera(
    K: Tensor,
    bbox: Tensor | tuple[Tensor, Tensor, Tensor],
    out_size: int = DEFAULT_CROP_SIZE,
) -> Tensor:
    """Intrinsics of the crop: projecting with them gives crop pixels.

    Args:
        K: Tensor of shape (B, 3, 3) (any leading shape broadcastable with ``bbox``).
        bbox: ``(cx, cy, side)`` from :func:`square_bbox` (Tensors of shape (B,)) or a Tensor
            of shape (B, 3), original pixels.
        out_size: Crop side S in pixels.

    Returns:
        Tensor of shape (B, 3, 3), ``A @ K`` with ``A`` from :func:`crop_affine`.
    """
    A = crop_affine(bbox, out_size).to(K)
    return A @ K


def crop_side_m(K_crop: Tensor, depth: Tensor, out_size: int = DEFAULT_CROP_SIZE) -> Tensor:
    """Metres the crop's side spans at camera depth ``depth`` (the crop's metric scale).

    A person filling a fraction ``h`` of the crop at that depth is ``h * crop_side_m`` tall:
    with the crop's intrinsics ``fx' = fx * S / s`` the side is ``S * depth / fx'`` metres.

    Args:
        K_crop: Tensor (B, 3, 3) crop intrinsics (:func:`crop_camera`).
        depth: Tensor (B,) camera-frame z, metres (e.g. the root's).
        out_size: Crop side S in pixels.

    Returns:
        Tensor (B,), metres.
    """
    return out_size * depth / K_crop[:, 0, 0]


def crop_image(
    image: Tensor | np.ndarray,
    bbox: Tensor | tuple[Tensor, Tensor, Tensor],
    out_size: int = DEFAULT_CROP_SIZE,
    *,
    mode: str = "bilinear",
) -> Tensor | np.ndarray:
    """Resample square crops by an affine warp consistent with :func:`crop_camera`.

    Pixels outside the source image are filled with zeros. No anti-aliasing is applied when
    the crop shrinks the image (blur beforehand if that matters).

    Args:
        image: Tensor of shape (B, C, H, W) (any float dtype), or a numpy array H x W x C
            (or H x W) for a single image.
        bbox: ``(cx, cy, side)`` Tensors of shape (B,) or a Tensor of shape (B, 3), pixels;
            for a numpy image, scalars or shape (1,).
        out_size: Crop side S in pixels.
        mode: ``grid_sample`` interpolation mode (``"bilinear"`` or ``"nearest"``).

    Returns:
        Tensor of shape (B, C, S, S) for a tensor input; for a numpy input a numpy array
        S x S x C (or S x S) with the input's dtype (rounded and clipped for integer dtypes).
    """
    if isinstance(image, np.ndarray):
        return _crop_numpy(image, bbox, out_size, mode)
    if image.ndim != 4:
        raise ValueError(f"image must have shape (B, C, H, W); got {tuple(image.shape)}")
    B, _, H, W = image.shape
    work = image if image.is_floating_point() else image.float()
    cx, cy, side = (
        torch.as_tensor(v, dtype=work.dtype, device=work.device).reshape(-1).expand(B)
        for v in _bbox_to_center_side(bbox)
    )
    # Crop pixel centres j = 0..S-1 -> original continuous pixel u (inverse of crop_affine).
    j = torch.arange(out_size, dtype=work.dtype, device=work.device)
    inv_a = (side / out_size).unsqueeze(-1)  # (B, 1)
    u = (j + 0.5 - out_size / 2) * inv_a + cx.unsqueeze(-1)  # (B, S)
    v = (j + 0.5 - out_size / 2) * inv_a + cy.unsqueeze(-1)  # (B, S)
    # grid_sample with align_corners=False: normalised x = (2u + 1) / W - 1.
    gx = (2 * u + 1) / W - 1
    gy = (2 * v + 1) / H - 1
    grid = torch.stack(
        [
            gx[:, None, :].expand(B, out_size, out_size),
            gy[:, :, None].expand(B, out_size, out_size),
        ],
        dim=-1,
    )
    out = F.grid_sample(work, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out if image.is_floating_point() else out.round().to(image.dtype)


def _crop_numpy(
    image: np.ndarray,
    bbox: Tensor | tuple[Tensor, Tensor, Tensor],
    out_size: int,
    mode: str,
) -> np.ndarray:
    """Numpy H x W (x C) front end of :func:`crop_image`."""
    squeeze = image.ndim == 2
    arr = image[..., None] if squeeze else image
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None]
    if isinstance(bbox, Tensor):
        bbox = bbox.reshape(1, 3)
    else:
        bbox = tuple(torch.as_tensor(v, dtype=torch.float32).reshape(1) for v in bbox)
    out = crop_image(t, bbox, out_size, mode=mode)[0].permute(1, 2, 0).numpy()
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(image.dtype, copy=False)
    return out[..., 0] if squeeze else out
