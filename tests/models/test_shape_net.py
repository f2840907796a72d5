"""The crop shape network (sahmr.models.shape_net), its training (sahmr.engine.shape_training)
and SA-HMR posing its body with it."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from _mesh_net_cases import FakeRCNet, body, make_batch, tiny_mesh_net, tiny_mlp_head

from sahmr.engine.shape_training import (
    ShapeAugment,
    ShapeFrames,
    predict_betas,
    shape_scores,
    train_shape_net,
)
from sahmr.models.sahmr import SAHMR
from sahmr.models.shape_net import CropShapeNet, shape_displacement_l1
from sahmr.scene.frontend import normalize_crop

TINY = {"size": 32, "widths": (4, 8, 8, 8, 8), "hidden": 16}


def test_untrained_net_gives_the_mean_shape_for_any_crop_size():
    net = CropShapeNet(num_betas=10, **TINY).eval()
    for side in (32, 224):
        out = net(torch.randn(3, 3, side, side), torch.tensor([1.5, 2.0, 3.0]))
        assert out.shape == (3, 10) and out.dtype == torch.float32
        assert torch.equal(out, torch.zeros(3, 10))
    with pytest.raises(ValueError, match="multiple of 32"):
        CropShapeNet(size=100)
    with pytest.raises(ValueError, match="five blocks"):
        CropShapeNet(widths=(8, 8))


def test_the_crop_side_reaches_the_output():
    torch.manual_seed(0)
    net = CropShapeNet(num_betas=4, **TINY).eval()
    torch.nn.init.normal_(net.out[-1].weight)
    x = torch.randn(1, 3, 32, 32).repeat(2, 1, 1, 1)
    out = net(x, torch.tensor([1.0, 3.0]))
    assert not torch.allclose(out[0], out[1])


def test_shape_loss_is_the_rest_pose_vertex_difference():
    bm = body()
    g = torch.Generator().manual_seed(1)
    b_pred, b_true = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    # slow reference: both shapes posed at rest by the body model itself
    v_pred = bm(betas=b_pred).vertices.double()
    v_true = bm(betas=b_true).vertices.double()
    ref = (v_pred - v_true).abs().mean()
    got = shape_displacement_l1(bm.shapedirs, b_pred, b_true)
    assert float(got) == pytest.approx(float(ref), rel=1e-4)
    # fewer coefficients are zero-padded
    short = shape_displacement_l1(bm.shapedirs, b_pred[:, :2], b_true)
    padded = torch.cat([b_pred[:, :2], torch.zeros(3, 8)], 1)
    assert float(short) == pytest.approx(float(shape_displacement_l1(bm.shapedirs, padded, b_true)))
    assert float(shape_displacement_l1(bm.shapedirs, b_true, b_true)) == 0.0


def _square_frames(widths_px, side_m: float = 2.0, size: int = 32) -> ShapeFrames:
    """White boxes of the given widths (px) centred on a black crop; betas[:, 1] = width."""
    n = len(widths_px)
    crops = torch.zeros(n, size, size, 3, dtype=torch.uint8)
    for i, w in enumerate(widths_px):
        lo = (size - w) // 2
        crops[i, 8:24, lo : lo + w] = 255
    betas = torch.zeros(n, 10)
    betas[:, 1] = (torch.tensor(widths_px, dtype=torch.float32) - 12) / 4
    return ShapeFrames(crops, betas, torch.full((n,), side_m))


def test_augmentation_zoom_moves_the_crop_side_with_the_image():
    frames = _square_frames([12] * 64)
    aug = ShapeAugment(zoom=1.5, shift=0.0, colour=0.0, side_noise=0.0)
    image, side = aug(frames, torch.Generator().manual_seed(0))
    assert image.shape == (64, 3, 32, 32) and side.shape == (64,)
    # the box's metric width is unchanged: its width in pixels times metres per pixel
    white = image[:, 0].gt(0.5).float()  # normalised: black < 0 < white
    width_px = white[:, 16].sum(dim=1)
    metric = width_px * side / 32
    assert metric.std() / metric.mean() < 0.12  # pixel rounding of a 12-18 px box
    assert side.min() < 2.0 / 1.2 and side.max() > 2.0 * 1.2  # zoomed both ways


def test_augmentation_flips_about_half_the_crops_and_nothing_else_at_zero_jitter():
    frames = _square_frames([12] * 200)
    frames.crops[:, 8:24, :4] = 128  # a grey bar on the left: a mirror moves it right
    aug = ShapeAugment(zoom=1.0, shift=0.0, colour=0.0, side_noise=0.0)
    image, side = aug(frames, torch.Generator().manual_seed(0))
    plain = normalize_crop(frames.crops.float())
    same = (image - plain).abs().amax(dim=(1, 2, 3)) < 1e-4
    mirrored = (image - plain.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-4
    assert bool((same ^ mirrored).all())
    assert 70 < int(mirrored.sum()) < 130
    torch.testing.assert_close(side, frames.crop_side_m)


def test_side_noise_is_log_normal_with_the_asked_std():
    frames = _square_frames([12] * 4000)
    aug = ShapeAugment(zoom=1.0, shift=0.0, colour=0.0, side_noise=0.05)
    _, side = aug(frames, torch.Generator().manual_seed(0))
    assert float(torch.log(side / 2.0).std()) == pytest.approx(0.05, rel=0.1)


def test_training_learns_a_visible_width_and_keeps_the_best_weights():
    g = torch.Generator().manual_seed(0)
    train = _square_frames(torch.randint(6, 19, (256,), generator=g).tolist())
    val = _square_frames(list(range(6, 19)) * 4)
    torch.manual_seed(0)
    net = CropShapeNet(num_betas=10, **TINY)
    bm = body()
    aug = ShapeAugment(zoom=1.05, shift=0.02, colour=0.1, side_noise=0.0)
    net, hist = train_shape_net(net, train, val, bm.shapedirs, steps=150, batch_size=32,
                                lr=3e-3, val_every=50, augment=aug, progress=False)  # fmt: skip
    assert [h["step"] for h in hist] == [0, 50, 100, 150]
    assert hist[0]["shape_mm"] == pytest.approx(hist[0]["mean_shape_mm"])
    best = min(h["shape_mm"] for h in hist)
    assert best < 0.5 * hist[0]["mean_shape_mm"]
    assert hist[-1]["r2_b1"] > 0.5
    # the net returned holds the best weights
    assert shape_scores(net, val, bm.shapedirs)["shape_mm"] == pytest.approx(best, rel=1e-5)
    assert not net.training


def test_sahmr_poses_its_body_with_the_shape_nets_betas():
    inputs, targets = make_batch(contacts=(4, 2), seed=0)
    rc = FakeRCNet(targets.root_cam + 0.05, targets.contact_points_cam,
                   targets.contact_point_region, targets.contact_batch_idx)  # fmt: skip
    head = functools.partial(tiny_mlp_head, root_offset=True, crop_scale=True)
    torch.manual_seed(0)
    shape_net = CropShapeNet(num_betas=10, **TINY)
    torch.nn.init.normal_(shape_net.out[-1].weight, std=0.5)
    plain = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=3, param_head=head), teacher_forcing=False)
    with_shape = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(seed=3, param_head=head),
                       teacher_forcing=False, shape_net=shape_net)  # fmt: skip
    assert not any(p.requires_grad for p in shape_net.parameters())
    with_shape.train()
    assert not shape_net.training
    a, b = plain.predict(inputs), with_shape.predict(inputs)
    side = inputs.crop_size * rc.root[:, 2] / inputs.K_crop[:, 0, 0]
    want = shape_net(inputs.image, side)
    torch.testing.assert_close(b.params["betas"], want)
    assert not torch.allclose(a.params["betas"], b.params["betas"])
    # the same rotations and root: the pose is the head's, the shape the net's
    for key in ("global_orient", "body_pose"):
        torch.testing.assert_close(a.params[key], b.params[key])
    torch.testing.assert_close(a.root_cam, b.root_cam)
    # the body is the body model with those parameters (slow reference)
    bm = body()
    ref = bm(betas=want, global_orient=b.params["global_orient"],
             body_pose=b.params["body_pose"], transl=b.params["transl"]).vertices  # fmt: skip
    assert float((ref - b.verts_cam).abs().max()) < 1e-4


def test_a_shape_net_needs_a_parametric_head():
    with pytest.raises(ValueError, match="parametric head"):
        SAHMR(rcnet=None, mesh_net=tiny_mesh_net(seed=3), shape_net=CropShapeNet(**TINY))


def test_predict_betas_batches_like_one_pass():
    torch.manual_seed(2)
    net = CropShapeNet(num_betas=10, **TINY)
    torch.nn.init.normal_(net.out[-1].weight)
    frames = _square_frames(list(range(6, 19)))
    full = predict_betas(net, frames, batch_size=100)
    parts = predict_betas(net, frames, batch_size=4)
    torch.testing.assert_close(full, parts)
    assert math.isfinite(float(full.sum()))
