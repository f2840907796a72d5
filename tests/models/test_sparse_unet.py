"""Tests for sahmr.models.sparse_unet: shapes, skips, backward, blocks vs dense conv3d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sahmr import sparse
from sahmr.models.sparse_unet import (
    SparseResidualBlock,
    SparseUNet,
    VoxelBatchNorm,
    subm_block,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny sparse convs run fastest single-threaded (no OpenMP contention on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_sparse(batch=2, shape=(13, 14, 15), channels=4, density=0.12, seed=0):
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand((batch, *shape), generator=g) < density
    coords = occupied.nonzero()
    feats = torch.randn(coords.shape[0], channels, generator=g)
    return sparse.sparse_tensor(feats, coords, shape, batch)


def _dense(x: sparse.SparseConvTensor) -> torch.Tensor:
    out = torch.zeros(x.batch_size, x.features.shape[1], *x.spatial_shape, dtype=x.features.dtype)
    b, z, y, xx = x.indices.long().unbind(1)
    out[b, :, z, y, xx] = x.features
    return out


def _active_mask(x: sparse.SparseConvTensor) -> torch.Tensor:
    mask = torch.zeros(x.batch_size, 1, *x.spatial_shape, dtype=x.features.dtype)
    b, z, y, xx = x.indices.long().unbind(1)
    mask[b, :, z, y, xx] = 1
    return mask


def _dense_weight(conv) -> torch.Tensor:
    return conv.weight.permute(0, 4, 1, 2, 3).contiguous()  # KRSC -> (C_out, C_in, kz, ky, kx)


def _bn_dense(bn, x):
    shape = (1, -1, 1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * (
        bn.weight.view(shape)
    ) + bn.bias.view(shape)


def _randomise_bn(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, VoxelBatchNorm):
            dtype = m.running_mean.dtype
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=dtype) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def test_shapes_and_stage_grids():
    torch.manual_seed(0)
    x = _random_sparse()
    net = SparseUNet(in_channels=4, channels=(6, 8, 10), blocks_per_level=1)
    out = net(x)
    assert net.out_channels == 6 and net.num_levels == 3
    assert out.features.features.shape == (x.indices.shape[0], 6)
    assert torch.equal(out.features.indices, x.indices)
    assert [list(e.spatial_shape) for e in out.encoder] == [[13, 14, 15], [7, 7, 8], [4, 4, 4]]
    assert [e.features.shape[1] for e in out.encoder] == [6, 8, 10]


def test_backward_cpu():
    torch.manual_seed(0)
    x = _random_sparse()
    feats = x.features.clone().requires_grad_(True)
    net = SparseUNet(in_channels=4, channels=(6, 8, 10), blocks_per_level=2)
    out = net(x.replace_feature(feats))
    out.features.features.square().sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_skip_connection_wiring():
    """With the up-sampling path silenced, the output is the fused level-0 skip alone."""
    torch.manual_seed(0)
    x = _random_sparse()
    net = SparseUNet(in_channels=4, channels=(6, 8), blocks_per_level=1).eval()
    _randomise_bn(net)
    with torch.no_grad():
        full = net(x).features.features
        net.ups[0][0].weight.zero_()
        net.ups[0][1].bias.zero_()
        net.ups[0][1].running_mean.zero_()
        silenced = net(x).features.features
        skip = net.encoders[0](net.stem(x))
        fused_in = skip.replace_feature(
            torch.cat([torch.zeros_like(skip.features), skip.features], 1)
        )
        manual = net.fuses[0](fused_in).features
        torch.testing.assert_close(silenced, manual)
        assert not torch.allclose(full, silenced)  # the deep path did contribute before
        # The deep path no longer matters: perturbing it leaves the output unchanged.
        net.encoders[1][0].conv1.weight.add_(1.0)
        torch.testing.assert_close(net(x).features.features, silenced)


def test_subm_block_matches_dense_reference():
    torch.manual_seed(0)
    x = _random_sparse(shape=(7, 8, 9), density=0.25)
    x = x.replace_feature(x.features.double())
    block = subm_block(4, 5, indice_key="s0").double().eval()
    _randomise_bn(block)
    y = block(x)
    conv, bn = block[0], block[1]
    ref = F.conv3d(_dense(x), _dense_weight(conv), None, padding=1)
    ref = torch.relu(_bn_dense(bn, ref))
    b, z, yy, xx = x.indices.long().unbind(1)
    torch.testing.assert_close(y.features, ref[b, :, z, yy, xx], rtol=1e-9, atol=1e-9)


def test_residual_block_matches_dense_reference():
    torch.manual_seed(0)
    x = _random_sparse(shape=(7, 8, 9), density=0.25, channels=5)
    x = x.replace_feature(x.features.double())
    block = SparseResidualBlock(5, indice_key="s0").double().eval()
    _randomise_bn(block)
    y = block(x)
    mask = _active_mask(x).double()  # submanifold: nothing lives outside the active sites
    dense = _dense(x)
    h = F.conv3d(dense, _dense_weight(block.conv1), None, padding=1)
    h = torch.relu(_bn_dense(block.bn1, h)) * mask
    h = F.conv3d(h, _dense_weight(block.conv2), None, padding=1)
    ref = torch.relu(_bn_dense(block.bn2, h) + dense)
    b, z, yy, xx = x.indices.long().unbind(1)
    torch.testing.assert_close(y.features, ref[b, :, z, yy, xx], rtol=1e-9, atol=1e-9)


def test_voxel_batchnorm_tolerates_one_voxel():
    bn = VoxelBatchNorm(3).train()
    x = torch.randn(1, 3)
    y = bn(x)
    torch.testing.assert_close(y, x / torch.sqrt(torch.tensor(1.0 + bn.eps)))
    assert torch.equal(bn.running_mean, torch.zeros(3))
    assert bn(torch.zeros(0, 3)).shape == (0, 3)
    z = bn(torch.randn(4, 3))  # normal batch statistics otherwise
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_algorithm_follows_the_input_device():
    """algo=None: every conv switches to the input device's algorithm (here back to Native
    after a GPU-style setting, which cannot run on CPU); a fixed algo is left alone."""
    torch.manual_seed(0)
    x = _random_sparse(shape=(10, 11, 12), density=0.1)
    net = SparseUNet(in_channels=4, channels=(8, 16), blocks_per_level=1).eval()
    with torch.no_grad():
        ref = net(x).features.features
        convs = sparse.set_algo(net, sparse.ConvAlgo.MaskImplicitGemm)  # as after a GPU run
        out = net(x).features.features
    algos = {m.algo for m in net.modules() if hasattr(m, "algo")}
    assert convs > 0 and algos == {sparse.ConvAlgo.Native}
    torch.testing.assert_close(out, ref, rtol=0, atol=0)

    fixed = SparseUNet(in_channels=4, channels=(8, 16), algo=sparse.ConvAlgo.Native)
    sparse.set_algo(fixed, sparse.ConvAlgo.MaskImplicitGemm)
    assert not fixed.follow_device
    assert {m.algo for m in fixed.modules() if hasattr(m, "algo")} == {
        sparse.ConvAlgo.MaskImplicitGemm
    }


@pytest.mark.gpu
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    x = _random_sparse(shape=(20, 21, 22), density=0.1)
    net = SparseUNet(in_channels=4, channels=(8, 16, 24), blocks_per_level=1).eval()
    _randomise_bn(net)
    with torch.no_grad():
        ref = net(x).features.features
        gpu = net.cuda()  # built on CPU: the first CUDA call switches to the GPU algorithm
        xg = sparse.sparse_tensor(x.features.cuda(), x.indices.cuda(), x.spatial_shape, 2)
        out = gpu(xg)
        algos = {m.algo for m in gpu.modules() if hasattr(m, "algo")}
        assert algos == {sparse.default_algo("cuda")}
    assert torch.equal(out.features.indices.cpu(), x.indices)
    torch.testing.assert_close(out.features.features.cpu(), ref, rtol=1e-3, atol=1e-3)
