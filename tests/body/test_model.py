"""Tests of sahmr.body.model.BodyModel on a tiny fabricated body (and the shipped one)."""

from __future__ import annotations

import numpy as np
import pytest
import smplx
import torch
from _fabricated_body import make_fake_body
from smplx.utils import Struct

from sahmr.benchmark.host_reads import count_host_reads
from sahmr.body import BodyModel, save_body_model_npz
from sahmr.body.io import validate_body_model_data
from sahmr.body.model import landmark_vertex_ids
from sahmr.body.model import license_free_model_path as asset_path


@pytest.fixture(scope="module")
def fake_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("body") / "fake.npz"
    save_body_model_npz(make_fake_body(), path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model(fake_path, cache_dir):
    return BodyModel(fake_path, topology_cache_dir=cache_dir)


@pytest.fixture(scope="module")
def model64(fake_path, cache_dir):
    return BodyModel(fake_path, dtype=torch.float64, topology_cache_dir=cache_dir)


def _inputs(batch: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {
        "betas": torch.randn(batch, 10, generator=g, dtype=dtype),
        "global_orient": 0.5 * torch.randn(batch, 3, generator=g, dtype=dtype),
        "body_pose": 0.3 * torch.randn(batch, 69, generator=g, dtype=dtype),
        "transl": torch.randn(batch, 3, generator=g, dtype=dtype),
    }


def test_output_shapes_and_attributes(model):
    out = model(**_inputs(2, dtype=torch.float32))
    v = model.num_vertices
    assert out.vertices.shape == (2, v, 3)
    assert out.joints.shape == (2, 24, 3)
    assert out.joints_h36m.shape == (2, 17, 3)
    assert out.joints14.shape == (2, 14, 3)
    assert out.landmarks.shape == (2, 21, 3)
    assert model.faces.dtype == np.int64 and model.faces.shape[1] == 3
    assert model.parents[0] == -1 and len(model.parents) == 24
    assert len(model.content_hash) == 64


def test_defaults_zero_and_batch_from_given(model):
    out = model(transl=torch.zeros(3, 3))
    assert out.vertices.shape[0] == 3
    torch.testing.assert_close(out.vertices[0], model.v_template)
    with pytest.raises(ValueError, match="batch"):
        model(betas=torch.zeros(2, 10), transl=torch.zeros(3, 3))


def test_float32_matches_float64(model, model64):
    x64 = _inputs(3)
    x32 = {k: v.float() for k, v in x64.items()}
    a, b = model(**x32), model64(**x64)
    for name in ("vertices", "joints", "joints_h36m", "landmarks"):
        torch.testing.assert_close(getattr(a, name).double(), getattr(b, name), atol=1e-5, rtol=0)


def test_matches_plain_smplx(fake_path, model64):
    data = validate_body_model_data(dict(np.load(fake_path)))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ref = smplx.SMPL(
            model_path=str(fake_path), data_struct=Struct(**data), dtype=torch.float64,
            vertex_ids=landmark_vertex_ids(data),
        )  # fmt: skip
    x = {k: v.requires_grad_(True) for k, v in _inputs(2).items()}
    out = model64(**x, return_full_pose=True)
    expected = ref(**x, return_full_pose=True)
    torch.testing.assert_close(out.vertices, expected.vertices)
    torch.testing.assert_close(out.joints, expected.joints[:, :24])
    torch.testing.assert_close(out.landmarks, expected.joints[:, 24:])
    torch.testing.assert_close(out.full_pose, expected.full_pose)
    # the same gradients too (the kinematic chain is walked differently: by tree level)
    w = torch.randn(out.vertices.shape, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)  # fmt: skip
    pairs = ((out.vertices, out.joints), (expected.vertices, expected.joints))
    losses = [(verts * w).sum() + joints[:, :24].square().sum() for verts, joints in pairs]
    grads = [torch.autograd.grad(loss, list(x.values())) for loss in losses]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_a_forward_and_backward_read_nothing_back_to_the_host(model):
    """smplx walks its kinematic chain with ``parents[i]``, one host read per joint (on a
    GPU, 23 waits for the device per body forward); the body model reads none, forward or
    backward, with axis-angle and rotation-matrix inputs."""
    x = {k: v.float().requires_grad_(True) for k, v in _inputs(2).items()}
    rot = smplx.lbs.batch_rodrigues(x["body_pose"].detach().reshape(-1, 3)).reshape(2, 23, 3, 3)
    with count_host_reads() as reads:
        for pose in (x["body_pose"], rot.requires_grad_(True)):
            out = model(betas=x["betas"], global_orient=x["global_orient"], body_pose=pose,
                        transl=x["transl"])  # fmt: skip
            (out.vertices.sum() + out.joints_h36m.sum()).backward()
    assert sum(reads.values()) == 0, reads
    with count_host_reads() as reads:  # the check sees smplx's reads
        smplx.lbs.batch_rigid_transform(rot, torch.zeros(2, 23, 3), model.parents[:23])
    assert sum(reads.values()) >= 22


def test_rotation_matrix_input_equals_axis_angle(model64):
    x = _inputs(2)
    go = smplx.lbs.batch_rodrigues(x["global_orient"])
    bp = smplx.lbs.batch_rodrigues(x["body_pose"].reshape(-1, 3)).reshape(2, 23, 3, 3)
    a = model64(**x)
    for g in (go, go[:, None]):
        b = model64(betas=x["betas"], global_orient=g, body_pose=bp, transl=x["transl"])
        torch.testing.assert_close(a.vertices, b.vertices)
        torch.testing.assert_close(a.joints_h36m, b.joints_h36m)
    # mixed: matrices for the body, axis-angle root
    c = model64(betas=x["betas"], global_orient=x["global_orient"], body_pose=bp,
                transl=x["transl"])  # fmt: skip
    torch.testing.assert_close(a.vertices, c.vertices)


def test_translation_shifts_everything(model64):
    x = _inputs(2)
    shift = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    a = model64(**x)
    b = model64(**{**x, "transl": x["transl"] + shift})
    for name in ("vertices", "joints", "joints_h36m", "joints14", "landmarks"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name) + shift[:, None])


def test_batch_independence_and_no_input_mutation(model64):
    x = _inputs(3)
    copies = {k: v.clone() for k, v in x.items()}
    full = model64(**x)
    for k in x:
        assert torch.equal(x[k], copies[k])
    single = model64(**{k: v[1:2] for k, v in x.items()})
    torch.testing.assert_close(full.vertices[1:2], single.vertices)
    torch.testing.assert_close(full.joints_h36m[1:2], single.joints_h36m)


def test_gradcheck_all_inputs(model64):
    x = {k: v.clone().requires_grad_(True) for k, v in _inputs(1, seed=3).items()}
    idx = torch.arange(0, model64.num_vertices, max(1, model64.num_vertices // 5))

    def f(betas, global_orient, body_pose, transl):
        out = model64(betas=betas, global_orient=global_orient, body_pose=body_pose,
                      transl=transl)  # fmt: skip
        return out.vertices[:, idx], out.joints_h36m

    assert torch.autograd.gradcheck(f, tuple(x.values()), eps=1e-6, atol=1e-5, fast_mode=True)


def test_buffers_follow_to(fake_path, cache_dir):
    m = BodyModel(fake_path, topology_cache_dir=cache_dir)
    m(betas=torch.zeros(1, 10))  # registers the lazily built H36M buffer
    m = m.to(torch.float64)
    out = m(betas=torch.zeros(1, 10, dtype=torch.float64))
    assert out.vertices.dtype == torch.float64 and out.joints_h36m.dtype == torch.float64


@pytest.mark.gpu
def test_cuda_matches_cpu(model64):
    x = _inputs(2)
    a = model64(**x)
    m = model64.to("cuda")
    b = m(**{k: v.cuda() for k, v in x.items()})
    torch.testing.assert_close(b.vertices.cpu(), a.vertices)
    model64.to("cpu")


def test_derived_landmarks_in_range(model):
    ids = model.vertex_joint_selector.extra_joints_idxs
    assert len(ids) == 21 and int(ids.max()) < model.num_vertices and int(ids.min()) >= 0


def test_num_betas_beyond_ten(tmp_path, cache_dir):
    path = tmp_path / "b16.npz"
    save_body_model_npz(make_fake_body(num_betas=16), path)
    m = BodyModel(path, num_betas=16, topology_cache_dir=cache_dir)
    assert m.num_betas == 16 and m.shapedirs.shape[-1] == 16


def _asset_or_skip():
    try:
        return asset_path()
    except FileNotFoundError:
        pytest.skip("license-free asset not built yet")


def test_license_free_asset_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("SAHMR_CACHE_DIR", str(tmp_path))  # keep the user's cache untouched
    path = _asset_or_skip()
    assert path.is_absolute() and path.parent.name == "assets"
    m = BodyModel()
    out = m(body_pose=torch.zeros(2, 69))
    assert out.vertices.shape == (2, m.num_vertices, 3)
    assert int(m.vertex_joint_selector.extra_joints_idxs.max()) < m.num_vertices


def test_hydra_configs_instantiate(fake_path, cache_dir):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config_dir = Path(__file__).resolve().parents[2] / "configs" / "body"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        smpl = compose("smpl")
        assert OmegaConf.is_missing(smpl, "model_path")
        cfg = compose("smpl", overrides=[f"model_path={fake_path}",
                                         f"topology_cache_dir={cache_dir}"])  # fmt: skip
        lf = compose("license_free")
    m = instantiate(cfg)
    assert isinstance(m, BodyModel) and m.model_path == fake_path
    assert lf.model_path is None and lf._target_ == "sahmr.body.BodyModel"
