"""SPIN: the fits dictionary, in-the-loop fitting, choosing the better fit, SPIN's loss."""

from __future__ import annotations

import types

import pytest
import torch
from _baseline_cases import TinyBackbone, body_model, make_frames

from sahmr.losses.hmr import SPINLoss
from sahmr.models.hmr import HMR, IEFRegressor, MeanParams, Rot6D
from sahmr.models.spin import SPIN, FitsDict, params_from_output, sample_keys_from_batch
from sahmr.optim.priors import GaussianMixturePrior
from sahmr.optim.smplify import FitStage, SMPLify, SMPLParams, default_smplify_stages


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops run faster (and far steadier on a shared 2-core machine) on 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(B: int, value: float) -> SMPLParams:
    return SMPLParams(
        global_orient=torch.full((B, 3), value),
        body_pose=torch.full((B, 69), value),
        betas=torch.full((B, 10), value),
        transl=torch.full((B, 3), value),
    )


def test_fits_dict_update_lookup_and_persistence(tmp_path):
    fits = FitsDict()
    params, found, loss = fits.lookup(["a", "b"])
    assert not found.any() and torch.isinf(loss).all() and params.body_pose.shape == (2, 69)
    written = fits.update(["a", "b", "c"], _params(3, 1.0), torch.tensor([1.0, 2.0, 3.0]),
                          torch.tensor([True, False, True]))  # fmt: skip
    assert written == 2 and len(fits) == 2 and "b" not in fits
    fits.update(["c"], _params(1, 5.0), torch.tensor([0.5]), torch.tensor([True]))
    params, found, loss = fits.lookup(["c", "b", "a"])
    assert found.tolist() == [True, False, True]
    torch.testing.assert_close(loss, torch.tensor([0.5, float("inf"), 1.0]))
    assert params.transl[0, 0] == 5.0 and params.transl[2, 0] == 1.0
    # tensor keys (dataset indices) are the same as their decimal strings
    fits.update(torch.tensor([7]), _params(1, 2.0), torch.tensor([0.1]), torch.tensor([True]))
    assert "7" in fits
    # state_dict round trip (weights_only load) and npz round trip
    path = tmp_path / "fits.pt"
    torch.save(fits.state_dict(), path)
    other = FitsDict()
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.keys() == fits.keys() == ["a", "c", "7"]
    fits.save_npz(tmp_path / "fits.npz")
    again = FitsDict()
    again.load_npz(tmp_path / "fits.npz")
    p1, _, l1 = again.lookup(["a", "c", "7"])
    p2, _, l2 = fits.lookup(["a", "c", "7"])
    torch.testing.assert_close(p1.body_pose, p2.body_pose)
    torch.testing.assert_close(l1, l2)


def test_sample_keys_from_batch():
    batch = types.SimpleNamespace(
        source=["synth", "synth"], sequence_id=["s1", "s2"], frame_index=torch.tensor([0, 3])
    )
    assert sample_keys_from_batch(batch) == ["synth/s1/0", "synth/s2/3"]


def _spin(iterations: int = 10) -> SPIN:
    torch.manual_seed(0)
    hmr = HMR(
        backbone=TinyBackbone(16),
        body_model=body_model(),
        regressor=IEFRegressor(feature_dim=16, rotation=Rot6D(), hidden_dim=32, dropout=0.0),
        mean_params=MeanParams.from_pose_prior(),
    )
    fitter = SMPLify(
        body_model=body_model(),
        pose_prior=GaussianMixturePrior.from_asset(),
        stages=default_smplify_stages(iterations, 0.03),
    )
    return SPIN(hmr=hmr, smplify=fitter, fit_valid_threshold_px=8.0)


def test_spin_fits_in_the_loop_and_keeps_the_better_fit():
    inputs, targets = make_frames(2, seed=1)
    keys = ["synth/a/0", "synth/a/1"]
    spin = _spin()
    spin.train()
    out = spin(inputs, targets, sample_keys=keys)
    assert out.fit_rotmats.shape == (2, 24, 3, 3) and out.fit_betas.shape == (2, 10)
    assert out.fit_updated.all() and len(spin.fits) == 2  # empty dictionary: always update
    stored, found, stored_loss = spin.fits.lookup(keys)
    assert found.all()
    # the fit beats the regressor's estimate it started from
    init = params_from_output(out, inputs.K_crop)
    start = spin.smplify.fitting_loss(init, targets.joints2d_crop, inputs.K_crop)
    assert (stored_loss < start).all()
    # a worse new fit (no iterations: the raw estimate) leaves the stored fit in charge
    spin.smplify.stages = [FitStage(0)]
    again = spin(inputs, targets, sample_keys=keys)
    assert not again.fit_updated.any()
    torch.testing.assert_close(again.fit_betas, stored.betas)
    _, _, loss_after = spin.fits.lookup(keys)
    torch.testing.assert_close(loss_after, stored_loss)
    err = spin.smplify.reprojection_error(stored, targets.joints2d_crop, inputs.K_crop)
    torch.testing.assert_close(again.fit_reprojection_error_px, err)
    # eval mode: no fitting; predict is the regressor's
    spin.eval()
    assert spin(inputs, targets).fit_rotmats is None
    assert spin.predict(inputs).verts_cam.shape[0] == 2


def test_spin_loss_uses_valid_fits_and_trains():
    inputs, targets = make_frames(2, seed=2)
    spin = _spin(8)
    spin.train()
    loss = SPINLoss(pose=0.0, betas=0.0)
    opt = torch.optim.Adam(spin.parameters(), lr=2e-3)
    values = []
    for _ in range(4):
        out = spin(inputs, targets, sample_keys=torch.tensor([10, 11]))
        res = loss(out, targets)
        assert {"fit_pose", "fit_betas"} <= set(res.terms) and "pose" not in res.terms
        opt.zero_grad()
        res.total.backward()
        opt.step()
        values.append(float(res.total.detach()))
    assert values[-1] < values[0]
    assert spin.fits.keys() == ["10", "11"]
    # invalid fits contribute nothing
    out.fit_valid = torch.zeros(2, dtype=torch.bool)
    res = loss(out, targets)
    assert float(res.terms["fit_pose"].detach()) == 0.0 == float(res.terms["fit_betas"].detach())
