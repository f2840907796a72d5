import torch
from _mesh_net_cases import topology

from sahmr.models.upsampling import MeshUpsampler, SparseUpsampling


def test_equals_topology_upsample_at_init():
    top = topology()
    torch.manual_seed(0)
    coarse = torch.randn(2, top.num_vertices[-1], 3)
    levels = MeshUpsampler(topology=top)(coarse)
    assert [v.shape[1] for v in levels] == list(top.num_vertices[::-1])
    assert torch.equal(levels[0], coarse)
    for k, lv in enumerate(range(top.num_levels - 1, -1, -1)):
        ref = top.upsample(coarse, top.num_levels - 1, lv)
        torch.testing.assert_close(levels[k], ref, atol=1e-6, rtol=1e-6)


def test_from_middle_level():
    top = topology()
    mid = torch.randn(1, top.num_vertices[1], 3)
    levels = MeshUpsampler(topology=top, from_level=1, residual=False)(mid)
    assert len(levels) == 2
    torch.testing.assert_close(levels[-1], top.upsample(mid, 1, 0), atol=1e-6, rtol=1e-6)


def test_learned_step_matches_dense_reference_and_trains():
    top = topology()
    step = SparseUpsampling(up_matrix=top.up_matrix(1), residual=True)
    assert step.weight.numel() == top.up_matrix(1)._nnz()  # only the sparsity pattern
    torch.manual_seed(1)
    with torch.no_grad():
        step.weight.add_(0.1 * torch.randn_like(step.weight))
        step.offset.normal_()
    x = torch.randn(2, top.num_vertices[2], 3, requires_grad=True)
    dense = torch.zeros(step.num_fine, step.num_coarse)
    for r, c, w in zip(step.rows.tolist(), step.cols.tolist(), step.weight.tolist()):
        dense[r, c] += w  # slow obvious reference
    ref = torch.einsum("fc,bcd->bfd", dense, x) + step.offset
    out = step(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    assert step.weight.grad is not None and step.weight.grad.abs().sum() > 0
    assert step.offset.grad is not None and x.grad is not None
