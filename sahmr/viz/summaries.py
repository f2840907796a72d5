"""Training summaries as pictures: functions returning (H, W, 3) uint8 arrays for TensorBoard
(``writer.add_image(tag, img, step, dataformats="HWC")``).

Inputs are the tensors the models see and return (`sahmr.records.FrameInputs` crops,
crop-pixel joints, camera-frame vertices with ``K_crop``); nothing here needs a GPU or open3d.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sahmr.viz.attention import attention_matrix_image, joint_vertex_attention
from sahmr.viz.colors import colormap, to_uint8
from sahmr.viz.grid import image_grid
from sahmr.viz.overlay import draw_points, render_overlay

__all__ = [
    "attention_summary",
    "denormalize_images",
    "heatmap_grid",
    "joints_grid",
    "mesh_overlay_grid",
]

_GT_COLOR = (0.1, 0.85, 0.1)
_PRED_COLOR = (0.95, 0.15, 0.15)


def denormalize_images(
    images: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Normalised (B, 3, S, S) crops -> (B, S, S, 3) uint8 RGB.

    Args:
        images: Float tensor normalised with ``mean``/``std``.
        mean: Per-channel mean (default ImageNet's, as `sahmr.scene.frontend`).
        std: Per-channel std (default ImageNet's).
    """
    from sahmr.scene.frontend import IMAGENET_MEAN, IMAGENET_STD

    x = images.detach().float().cpu()
    m = torch.tensor(mean or IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(std or IMAGENET_STD).view(1, 3, 1, 1)
    x = (x * s + m).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return to_uint8(x)


def _as_uint8_images(images: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, Tensor):
        if images.dtype == torch.uint8:
            return images.detach().cpu().numpy()
        return denormalize_images(images)
    return np.asarray(images, dtype=np.uint8)


def joints_grid(
    images: Tensor | np.ndarray,
    joints_gt: Tensor | np.ndarray | None = None,
    joints_pred: Tensor | np.ndarray | None = None,
    *,
    max_items: int = 8,
    columns: int = 4,
    radius: float = 2.0,
) -> np.ndarray:
    """Crops with ground-truth (green) and predicted (red) 2-D joints.

    Args:
        images: (B, 3, S, S) normalised float crops or (B, S, S, 3) uint8.
        joints_gt: Optional (B, J, 2) crop pixels.
        joints_pred: Optional (B, J', 2) crop pixels.
        max_items: Frames drawn.
        columns: Grid columns.
        radius: Point radius, pixels.

    Returns:
        (H, W, 3) uint8 grid.
    """
    imgs = _as_uint8_images(images)[:max_items]
    out = []
    for b, im in enumerate(imgs):
        for pts, color in ((joints_gt, _GT_COLOR), (joints_pred, _PRED_COLOR)):
            if pts is not None:
                p = pts[b].detach().cpu().numpy() if isinstance(pts, Tensor) else np.asarray(
                    pts[b])
                im = draw_points(im, p, color, radius)
        out.append(im)
    return image_grid(out, columns=columns)


def mesh_overlay_grid(
    images: Tensor | np.ndarray,
    verts_cam: Tensor | np.ndarray,
    faces: np.ndarray,
    K_crop: Tensor | np.ndarray,
    *,
    max_items: int = 4,
    columns: int = 4,
    alpha: float = 0.7,
) -> np.ndarray:
    """Crops with the predicted mesh drawn over them (camera frame, crop camera).

    Args:
        images: (B, 3, S, S) normalised float crops or (B, S, S, 3) uint8.
        verts_cam: (B, V, 3) absolute camera-frame vertices, metres.
        faces: (F, 3).
        K_crop: (B, 3, 3) crop intrinsics.
        max_items: Frames drawn.
        columns: Grid columns.
        alpha: Mesh opacity.

    Returns:
        (H, W, 3) uint8 grid.
    """
    imgs = _as_uint8_images(images)[:max_items]
    v = verts_cam.detach().float().cpu().numpy() if isinstance(verts_cam, Tensor) else np.asarray(
        verts_cam)
    K = K_crop.detach().double().cpu().numpy() if isinstance(K_crop, Tensor) else np.asarray(
        K_crop)
    out = [render_overlay(im, v[b], faces, K[b], alpha=alpha) for b, im in enumerate(imgs)]
    return image_grid(out, columns=columns)


def heatmap_grid(
    images: Tensor | np.ndarray,
    heatmaps: Tensor | np.ndarray,
    *,
    max_items: int = 8,
    columns: int = 4,
    alpha: float = 0.55,
    cmap: str = "jet",
    softmax: bool = True,
) -> np.ndarray:
    """Crops with a heat map (e.g. RCNet's root heat map) blended over them.

    Args:
        images: (B, 3, S, S) normalised float crops or (B, S, S, 3) uint8.
        heatmaps: (B, h, w) or (B, 1, h, w) logits or probabilities (any resolution).
        max_items: Frames drawn.
        columns: Grid columns.
        alpha: Heat-map opacity.
        cmap: Matplotlib colour map.
        softmax: Turn logits into a spatial softmax first.

    Returns:
        (H, W, 3) uint8 grid.
    """
    imgs = _as_uint8_images(images)[:max_items]
    h = torch.as_tensor(heatmaps).detach().float().cpu()
    if h.ndim == 4:
        h = h[:, 0]
    h = h[: len(imgs)]
    if softmax:
        h = torch.softmax(h.flatten(1), dim=1).view_as(h)
    S = imgs.shape[1]
    up = torch.nn.functional.interpolate(h[:, None], size=(S, S), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
    out = []
    for im, hm in zip(imgs, up):
        col = colormap(hm, cmap)
        weight = alpha * (hm - hm.min()) / max(float(hm.max() - hm.min()), 1e-12)
        blended = im / 255.0 * (1.0 - weight[..., None]) + col * weight[..., None]
        out.append(to_uint8(blended))
    return image_grid(out, columns=columns)


def attention_summary(
    attention: Tensor | np.ndarray,
    *,
    num_joints: int,
    num_vertices: int,
    joint_offset: int = 0,
    vertex_offset: int | None = None,
    joint_names: Sequence[str] | None = None,
    batch_index: int = 0,
    width: int = 640,
) -> np.ndarray:
    """The joints x vertices attention block of one frame as an image.

    Args:
        attention: (B, T, T) or (T, T) head-averaged weights.
        num_joints: J joint tokens.
        num_vertices: V vertex tokens.
        joint_offset: First joint token.
        vertex_offset: First vertex token (default right after the joints).
        joint_names: Optional J row labels.
        batch_index: Frame drawn.
        width: Pixel width of the matrix.

    Returns:
        (H, W, 3) uint8.
    """
    block = joint_vertex_attention(
        attention, num_joints=num_joints, num_vertices=num_vertices, joint_offset=joint_offset,
        vertex_offset=vertex_offset, batch_index=batch_index,
    )
    return attention_matrix_image(block, row_labels=joint_names, width=width)
