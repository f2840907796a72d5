"""Tests for sahmr.sparse: quiet import, Native CPU convs vs dense references, CUDA parity."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sahmr import sparse


def _random_sparse(
    batch: int = 2, shape=(8, 9, 10), channels: int = 4, density: float = 0.15, seed: int = 0
) -> sparse.SparseConvTensor:
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand((batch, *shape), generator=g) < density
    coords = occupied.nonzero().to(torch.int32)  # (K, 4) [b, z, y, x]
    feats = torch.randn(coords.shape[0], channels, generator=g)
    return sparse.sparse_tensor(feats, coords, shape, batch)


def _dense(x: sparse.SparseConvTensor) -> torch.Tensor:
    out = torch.zeros(
        x.batch_size, x.features.shape[1], *x.spatial_shape, dtype=x.features.dtype
    )
    b, z, y, xx = x.indices.long().unbind(1)
    out[b, :, z, y, xx] = x.features
    return out


def _dense_weight(conv) -> torch.Tensor:
    # spconv 2.3 stores weights as KRSC: (C_out, kz, ky, kx, C_in).
    return conv.weight.permute(0, 4, 1, 2, 3).contiguous()


@pytest.mark.slow  # two fresh interpreters importing spconv: ~10-30 s on the shared CPU
def test_import_leaks_no_warnings():
    code = (
        "import warnings, logging, io\n"
        "stream = io.StringIO(); logging.basicConfig(stream=stream, level=logging.DEBUG)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import sahmr.sparse\n"
        "assert not w, [str(x.message) for x in w]\n"
        "assert 'is_fx_tracing' not in stream.getvalue()\n"
        "n = len(warnings.filters)\n"
        "import sahmr.sparse\n"
        "assert len(warnings.filters) == n\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    res = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import sahmr.sparse"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr


def test_filters_are_not_global():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("still visible", FutureWarning, stacklevel=1)
    assert len(caught) == 1


def test_default_algo():
    assert sparse.default_algo("cpu") == sparse.ConvAlgo.Native
    assert sparse.default_algo(None) == sparse.ConvAlgo.Native
    assert sparse.default_algo(torch.device("cuda", 0)) != sparse.ConvAlgo.Native
    assert sparse.subm_conv3d(2, 3).algo == sparse.ConvAlgo.Native
    conv = sparse.subm_conv3d(2, 3, algo=sparse.ConvAlgo.MaskImplicitGemm)
    assert conv.algo == sparse.ConvAlgo.MaskImplicitGemm
    seq = sparse.SparseSequential(conv, sparse.subm_conv3d(3, 3))
    assert sparse.set_algo(seq, sparse.ConvAlgo.Native) == 2
    assert conv.algo == sparse.ConvAlgo.Native


def test_subm_matches_dense_conv3d_on_active_sites():
    torch.manual_seed(0)
    x = _random_sparse()
    conv = sparse.subm_conv3d(4, 5, 3, indice_key="s0").double()
    x = x.replace_feature(x.features.double())
    y = conv(x)
    assert torch.equal(y.indices, x.indices)
    dense_in = _dense(x)  # (B, C, D, H, W)
    ref = F.conv3d(dense_in, _dense_weight(conv), conv.bias, padding=1)
    b, z, yy, xx = x.indices.long().unbind(1)
    ref_sites = ref[b, :, z, yy, xx]
    torch.testing.assert_close(y.features, ref_sites, rtol=1e-9, atol=1e-9)


def test_sparse_tensor_makes_nonzero_coords_contiguous():
    coords = torch.ones(1, 3, 3, 3).nonzero()  # column-major: spconv would misread it
    assert not coords.is_contiguous()
    x = sparse.sparse_tensor(torch.ones(27, 1), coords, (3, 3, 3), 1)
    assert x.indices.is_contiguous() and x.indices.dtype == torch.int32
    conv = sparse.subm_conv3d(1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    # Each site sums its 3x3x3 neighbourhood: the centre voxel sees all 27.
    out = conv(x).features.ravel()
    assert out[13] == 27 and out[0] == 8


def test_strided_and_inverse_shapes_and_values():
    torch.manual_seed(0)
    x = _random_sparse(shape=(8, 9, 10))
    down = sparse.sparse_conv3d(4, 6, 3, stride=2, padding=1, indice_key="d1").double()
    up = sparse.inverse_conv3d(6, 4, 3, indice_key="d1").double()
    x = x.replace_feature(x.features.double())
    y = down(x)
    assert list(y.spatial_shape) == [4, 5, 5]
    dense_ref = F.conv3d(_dense(x), _dense_weight(down), down.bias, stride=2, padding=1)
    b, z, yy, xx = y.indices.long().unbind(1)
    torch.testing.assert_close(y.features, dense_ref[b, :, z, yy, xx], rtol=1e-9, atol=1e-9)
    # Every output site is reachable from some input site, and only those are active.
    reach = F.conv3d(
        (_dense(x).abs().sum(1, keepdim=True) > 0).double(),
        torch.ones(1, 1, 3, 3, 3, dtype=torch.double),
        stride=2,
        padding=1,
    )
    assert int((reach > 0).sum()) == y.indices.shape[0]
    z_up = up(y)
    assert list(z_up.spatial_shape) == [8, 9, 10]
    assert torch.equal(z_up.indices, x.indices)
    assert z_up.features.shape == (x.indices.shape[0], 4)


def test_backward():
    torch.manual_seed(0)
    x = _random_sparse()
    feats = x.features.clone().requires_grad_(True)
    x = x.replace_feature(feats)
    net = sparse.SparseSequential(
        sparse.subm_conv3d(4, 8, indice_key="s0"),
        sparse.sparse_conv3d(8, 8, indice_key="d1"),
        sparse.inverse_conv3d(8, 4, indice_key="d1"),
    )
    out = net(x)
    out.features.square().sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.gpu
def test_cuda_default_algo_matches_native_cpu():
    torch.manual_seed(0)
    x = _random_sparse(shape=(16, 16, 16), density=0.2)

    def build(device, algo):
        torch.manual_seed(1)
        return sparse.SparseSequential(
            sparse.subm_conv3d(4, 16, indice_key="s0", device=device, algo=algo),
            sparse.sparse_conv3d(16, 16, indice_key="d1", device=device, algo=algo),
            sparse.subm_conv3d(16, 16, indice_key="s1", device=device, algo=algo),
            sparse.inverse_conv3d(16, 4, indice_key="d1", device=device, algo=algo),
        )

    cpu_net = build("cpu", None)
    out_cpu = cpu_net(x).features
    gpu_net = build("cuda", None)
    assert gpu_net[0].algo == sparse.default_algo("cuda")
    gpu_net.load_state_dict(cpu_net.state_dict())
    xg = sparse.SparseConvTensor(x.features.cuda(), x.indices.cuda(), x.spatial_shape, x.batch_size)
    out_gpu = gpu_net(xg)
    torch.testing.assert_close(out_gpu.features.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_gpu.indices.cpu(), x.indices)
    # A model built for CPU moved to the GPU and switched in place gives the same result.
    moved = build("cpu", None).cuda()
    assert sparse.set_algo(moved, sparse.default_algo("cuda")) == 4
    xg2 = sparse.SparseConvTensor(
        x.features.cuda(), x.indices.cuda(), x.spatial_shape, x.batch_size
    )
    torch.testing.assert_close(moved(xg2).features.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
    # Keeping Native on the GPU also works.
    native = build("cpu", None).cuda()
    xg3 = sparse.SparseConvTensor(
        x.features.cuda(), x.indices.cuda(), x.spatial_shape, x.batch_size
    )
    torch.testing.assert_close(native(xg3).features.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
