"""Attention pictures (matrix, painted mesh) and TensorBoard summary images."""

import numpy as np
import pytest
import torch

from sahmr.body import BodyModel
from sahmr.scene.frontend import normalize_crop
from sahmr.viz.attention import (
    attention_matrix_image,
    joint_attention_on_mesh,
    joint_vertex_attention,
    upsample_vertex_values,
)
from sahmr.viz.summaries import (
    attention_summary,
    denormalize_images,
    heatmap_grid,
    joints_grid,
    mesh_overlay_grid,
)


def _attention(B=2, T=20, seed=0):
    a = torch.rand(B, T, T, generator=torch.Generator().manual_seed(seed))
    return a / a.sum(-1, keepdim=True)


def test_joint_vertex_block_is_the_right_slice():
    a = _attention()
    block = joint_vertex_attention(a, num_joints=3, num_vertices=5, batch_index=1)
    np.testing.assert_allclose(block, a[1, :3, 3:8].numpy())
    block = joint_vertex_attention(a[0].numpy(), num_joints=2, num_vertices=4, joint_offset=5,
                                   vertex_offset=10)
    np.testing.assert_allclose(block, a[0, 5:7, 10:14].numpy())
    with pytest.raises(ValueError, match="do not fit"):
        joint_vertex_attention(a, num_joints=14, num_vertices=10)
    with pytest.raises(ValueError, match=r"\(T, T\)"):
        joint_vertex_attention(np.zeros(5), num_joints=1, num_vertices=1)


def test_matrix_image_shapes_and_row_normalisation():
    m = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 10.0, 10.0, 40.0]])
    img = attention_matrix_image(m, row_height=5, width=8, cmap="gray")
    assert img.shape == (10, 8, 3) and img.dtype == np.uint8
    # Each row spans its own [min, max]: both rows start black and end white.
    assert img[0, 0].max() < 5 and img[0, -1].min() > 250
    assert img[5, 0].max() < 5 and img[5, -1].min() > 250
    labelled = attention_matrix_image(m, row_labels=["a", "b"], row_height=14, width=40,
                                      label_width=30)
    assert labelled.shape == (28, 70, 3)
    with pytest.raises(ValueError, match="row labels"):
        attention_matrix_image(m, row_labels=["a"])


def test_joint_attention_painted_on_the_mesh():
    body = BodyModel()
    topo = body.topology
    coarse = topo.num_vertices[-1]
    w = np.zeros(coarse)
    w[: coarse // 4] = 1.0
    full = upsample_vertex_values(w, topo, topo.num_levels - 1)
    assert full.shape == (topo.num_vertices[0],)
    assert full.min() >= -1e-9 and full.max() <= 1 + 1e-9 and 0 < full.mean() < 1
    np.testing.assert_allclose(
        upsample_vertex_values(np.ones(coarse), topo, topo.num_levels - 1), 1.0, atol=1e-6)
    v = body.v_template.numpy()
    img = joint_attention_on_mesh(v, body.faces, full, size=96,
                                  joint_position=v.mean(0))
    assert img.shape == (96, 96, 3)
    body_px = img[img.sum(-1) < 3 * 250]
    assert len(np.unique(body_px // 32, axis=0)) > 3  # several colours: hot and cold
    with pytest.raises(ValueError, match="weights"):
        joint_attention_on_mesh(v, body.faces, full[:10])


def test_summary_images():
    g = torch.Generator().manual_seed(0)
    crops_u8 = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    images = normalize_crop(crops_u8)
    back = denormalize_images(images)
    assert np.abs(back.astype(int) - crops_u8.numpy()).max() <= 1
    j = torch.rand(3, 5, 2, generator=g) * 32
    grid = joints_grid(images, j, j + 1, columns=2)
    assert grid.shape == (2 * 36 + 4, 2 * 36 + 4, 3)
    hm = heatmap_grid(crops_u8, torch.randn(3, 1, 8, 8, generator=g), columns=3)
    assert hm.shape == (40, 3 * 36 + 4, 3)
    verts = torch.tensor([[[-0.2, -0.2, 2.0], [0.2, -0.2, 2.0], [0.0, 0.2, 2.0]]]).repeat(3, 1, 1)
    K = torch.tensor([[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]]).repeat(3, 1, 1)
    ov = mesh_overlay_grid(crops_u8, verts, np.array([[0, 1, 2]]), K, columns=3)
    assert ov.shape == (40, 112, 3)
    att = attention_summary(_attention(T=12), num_joints=2, num_vertices=6,
                            joint_names=["a", "b"], width=60)
    assert att.shape == (28, 170, 3) and att.dtype == np.uint8
