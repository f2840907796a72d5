"""Pictures of transformer attention: the joints x vertices matrix, one joint's attention
painted on the mesh, and the summary figure of a cross-attention report
(`cross_attention_figure`: entropy histograms per block, one query's attention over projected
scene points).

Attention comes from the mesh transformers as head-averaged (B, T, T) weights per block
(rows = queries, columns = keys, rows sum to 1). The token layout is the model's: pass where
the joint and vertex tokens start (METRO: 14 joint tokens first, then the coarse vertices).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from sahmr.viz.colors import colormap, face_colors_from_vertices, to_uint8
from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render

logger = logging.getLogger(__name__)

__all__ = [
    "attention_matrix_image",
    "cross_attention_figure",
    "joint_attention_on_mesh",
    "joint_vertex_attention",
    "upsample_vertex_values",
]


def joint_vertex_attention(
    attention: np.ndarray | torch.Tensor,
    *,
    num_joints: int,
    num_vertices: int,
    joint_offset: int = 0,
    vertex_offset: int | None = None,
    batch_index: int = 0,
) -> np.ndarray:
    """The block of attention from joint queries to vertex keys.

    Args:
        attention: (T, T) or (B, T, T) weights, rows = queries.
        num_joints: J joint tokens.
        num_vertices: V vertex tokens.
        joint_offset: Index of the first joint token.
        vertex_offset: Index of the first vertex token (default: right after the joints).
        batch_index: Frame to take from a batched input.

    Returns:
        (J, V) float64 attention weights.

    Raises:
        ValueError: The token ranges do not fit in T.
    """
    a = attention.detach().float().cpu().numpy() if isinstance(attention, torch.Tensor) else (
        np.asarray(attention))
    if a.ndim == 3:
        a = a[batch_index]
    if a.ndim != 2:
        raise ValueError(f"attention must be (T, T) or (B, T, T), got {a.shape}")
    v0 = joint_offset + num_joints if vertex_offset is None else vertex_offset
    if joint_offset + num_joints > a.shape[0] or v0 + num_vertices > a.shape[1]:
        raise ValueError(
            f"tokens [{joint_offset}, {joint_offset + num_joints}) x [{v0}, {v0 + num_vertices})"
            f" do not fit attention of shape {a.shape}"
        )
    return a[joint_offset : joint_offset + num_joints, v0 : v0 + num_vertices].astype(np.float64)


def attention_matrix_image(
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str] | None = None,
    row_height: int = 14,
    width: int = 640,
    cmap: str = "magma",
    normalize_rows: bool = True,
    label_width: int = 110,
) -> np.ndarray:
    """A (rows x columns) attention matrix as a colour image, one band per row.

    Args:
        matrix: (J, V) weights (e.g. `joint_vertex_attention`).
        row_labels: Optional J names drawn left of the rows.
        row_height: Pixel height of each row.
        width: Pixel width of the matrix part (columns are resampled, nearest).
        cmap: Matplotlib colour map.
        normalize_rows: Scale each row to its own [min, max] (else the whole matrix's).
        label_width: Width of the label column when labels are given.

    Returns:
        (J * row_height, width [+ label_width], 3) uint8.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"matrix must be a non-empty (J, V) array, got {m.shape}")
    if normalize_rows:
        lo = m.min(axis=1, keepdims=True)
        span = m.max(axis=1, keepdims=True) - lo
        m = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), 0.0)
    cols = np.minimum((np.arange(width) * m.shape[1]) // width, m.shape[1] - 1)
    rgb = to_uint8(colormap(m[:, cols], cmap, 0.0 if normalize_rows else None,
                            1.0 if normalize_rows else None))
    img = np.repeat(rgb, row_height, axis=0)
    if row_labels is None:
        return img
    if len(row_labels) != m.shape[0]:
        raise ValueError(f"{len(row_labels)} row labels for {m.shape[0]} rows")
    pad = Image.new("RGB", (label_width, img.shape[0]), (255, 255, 255))
    draw = ImageDraw.Draw(pad)
    for r, name in enumerate(row_labels):
        draw.text((3, r * row_height + max(row_height // 2 - 6, 0)), str(name)[:18],
                  fill=(20, 20, 20))
    return np.concatenate([np.asarray(pad), img], axis=1)


def upsample_vertex_values(values: np.ndarray, topology, from_level: int) -> np.ndarray:
    """Per-vertex values of a coarse mesh level carried to full resolution.

    Args:
        values: (V_from,) values on level ``from_level``.
        topology: `sahmr.body.topology.BodyTopology` of the body model.
        from_level: Level of ``values``.

    Returns:
        (V_0,) float64 values (the topology's barycentric up-sampling).
    """
    t = torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(-1, 1))
    return topology.upsample(t, from_level, 0).reshape(-1).numpy()


def joint_attention_on_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray,
    *,
    up_world: np.ndarray = (0.0, 1.0, 0.0),
    view_dir: np.ndarray | None = None,
    size: int = 320,
    cmap: str = "inferno",
    joint_position: np.ndarray | None = None,
) -> np.ndarray:
    """One joint's attention painted on the body, seen from the front (or ``view_dir``).

    Args:
        vertices: (V, 3) body vertices (any frame; ``up_world`` is up in it).
        faces: (F, 3).
        weights: (V,) attention of the joint to each vertex (any scale; normalised here).
        up_world: (3,) up direction of the frame (SMPL rest frame: +y).
        view_dir: (3,) direction from the body towards the viewer; default +z of the frame
            rotated to be orthogonal to ``up_world`` (SMPL rest frame: the front).
        size: Output side, pixels.
        cmap: Matplotlib colour map.
        joint_position: Optional (3,) position of the joint, marked with a cross.

    Returns:
        (size, size, 3) uint8.
    """
    v = np.asarray(vertices, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(v):
        raise ValueError(f"{len(w)} weights for {len(v)} vertices")
    up = np.asarray(up_world, dtype=np.float64)
    up /= np.linalg.norm(up)
    d = np.array([0.0, 0.0, 1.0]) if view_dir is None else np.asarray(view_dir, np.float64)
    d = d - up * (d @ up)
    if np.linalg.norm(d) < 1e-6:
        d = np.cross(up, [1.0, 0.0, 0.0])
    d /= np.linalg.norm(d)
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = 0.5 * float(np.linalg.norm(v.max(0) - v.min(0)))
    K = intrinsics_from_fov(size, size, 40.0)
    T = look_at(centre + d * radius / np.tan(np.deg2rad(20.0)) * 1.05, centre, up)
    colors = colormap(w, cmap)
    out = render([MeshToRender(v, np.asarray(faces), face_colors=face_colors_from_vertices(
        colors, faces))], K, T, size, size, ambient=0.55).rgb
    if joint_position is None:
        return out
    p = T[:3, :3] @ np.asarray(joint_position, np.float64) + T[:3, 3]
    u, vv = (K @ (p / p[2]))[:2]
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    draw.line([u - 6, vv, u + 6, vv], fill=(0, 200, 255), width=2)
    draw.line([u, vv - 6, u, vv + 6], fill=(0, 200, 255), width=2)
    return np.asarray(pil)


def cross_attention_figure(
    entropies: Sequence[np.ndarray],
    *,
    crop: np.ndarray,
    points_uv: np.ndarray,
    point_weights: Sequence[np.ndarray],
    few_entropies: Sequence[np.ndarray] | None = None,
    query_uv: np.ndarray | None = None,
    query_name: str = "query",
    example_name: str = "",
    few_label: str = "few-key frames",
    dpi: int = 90,
) -> np.ndarray:
    """Two rows, one column per block: histograms of the rows' normalised entropies, and one
    query's attention over the keys of one frame, drawn at the keys' crop pixels.

    Points are coloured by ``weight * number of points`` (1 = a uniform share), each panel on
    its own colour range (shown by its colour bar).

    Args:
        entropies: Per block (N,) normalised entropies of all rows (NaN dropped).
        crop: (S, S, 3) uint8 crop of the example frame.
        points_uv: (P, 2) crop pixels of its keys (points off the crop are drawn clipped).
        point_weights: Per block (P,) the query's weights over those keys.
        few_entropies: Per block the entropies of rows of few-key frames, drawn over the
            others as a second (density) histogram; None or empty arrays to leave out.
        query_uv: (2,) crop pixel of the query (a cross), or None.
        query_name: Name of the query, for the titles.
        example_name: Name of the example frame, for the titles.
        few_label: Legend of ``few_entropies``.
        dpi: Resolution.

    Returns:
        (H, W, 3) uint8 image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nb = len(entropies)
    if nb == 0 or len(point_weights) != nb:
        raise ValueError(
            f"{nb} entropy sets and {len(point_weights)} weight sets: need one of each per block"
        )
    uv = np.asarray(points_uv, dtype=np.float64).reshape(-1, 2)
    size = crop.shape[0]
    fig, axes = plt.subplots(2, nb, figsize=(3.6 * nb, 7.0), dpi=dpi, squeeze=False)
    finite = [np.asarray(e, np.float64)[np.isfinite(e)] for e in entropies]
    pooled = np.concatenate(finite) if any(len(e) for e in finite) else np.ones(1)
    lo = min(0.9, float(np.floor(np.percentile(pooled, 0.5) * 20) / 20))
    bins = np.linspace(lo, 1.0, 41)
    for k in range(nb):
        ax = axes[0, k]
        e = finite[k]
        if len(e):
            ax.hist(
                np.clip(e, lo, 1.0),
                bins=bins,
                density=True,
                color="tab:blue",
                alpha=0.8,
                label=f"all rows (mean {e.mean():.3f})",
            )
        few = None if few_entropies is None else np.asarray(few_entropies[k], np.float64)
        few = None if few is None else few[np.isfinite(few)]
        if few is not None and len(few):
            label = f"{few_label} (mean {few.mean():.3f})"
            ax.hist(
                np.clip(few, lo, 1.0),
                bins=bins,
                density=True,
                histtype="step",
                color="tab:red",
                lw=1.5,
                label=label,
            )
        ax.set_title(f"block {k}: normalised entropy")
        ax.set_xlabel("entropy / log(valid keys)   (1 = uniform)")
        ax.set_ylabel("density of rows")
        if len(e) or (few is not None and len(few)):
            ax.legend(fontsize=7, loc="upper left")

        ax = axes[1, k]
        ax.imshow(crop)
        w = np.asarray(point_weights[k], np.float64).reshape(-1)
        if len(w) != len(uv):
            raise ValueError(f"block {k}: {len(w)} weights for {len(uv)} points")
        if len(w):
            rel = w * len(w)
            order = np.argsort(rel)
            sc = ax.scatter(
                np.clip(uv[order, 0], 0, size - 1),
                np.clip(uv[order, 1], 0, size - 1),
                c=rel[order],
                s=9,
                cmap="viridis",
                edgecolors="none",
            )
            bar = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
            bar.set_label("weight x points (1 = uniform)", fontsize=7)
            bar.ax.tick_params(labelsize=7)
            ax.set_title(
                f"{query_name} -> {len(w)} contacts\nmax {rel.max():.2f}x uniform", fontsize=9
            )
        else:
            ax.set_title(f"{query_name}: no contact points", fontsize=9)
        if query_uv is not None:
            qu, qv = np.asarray(query_uv, np.float64)
            ax.plot([qu], [qv], marker="x", color="red", ms=10, mew=2.5)
        ax.set_xlim(0, size - 1)
        ax.set_ylim(size - 1, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0 and example_name:
            ax.set_ylabel(example_name, fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb
