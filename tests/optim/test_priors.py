"""Body priors: the EM fit, the shipped pose mixture, shape prior, bent-joint penalty."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from sahmr.body.pose_library import BODY_JOINT_NAMES
from sahmr.optim.priors import (
    BENT_JOINTS,
    GaussianMixturePrior,
    bent_joint_axes,
    bent_joint_penalty,
    fit_gmm_em,
    mirror_body_pose,
    pose_prior_asset_path,
    sample_pose_library,
    shape_prior,
)

ROOT = Path(__file__).resolve().parents[2]


def test_em_recovers_a_two_component_mixture():
    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 0.0], 0.3, size=(400, 2))
    b = rng.normal([3.0, 1.0], [0.5, 0.2], size=(200, 2))
    w, mu, cov, ll = fit_gmm_em(np.concatenate([a, b]), 2, reg_covar=1e-6, seed=1)
    order = np.argsort(mu[:, 0])
    np.testing.assert_allclose(mu[order], [[0.0, 0.0], [3.0, 1.0]], atol=0.08)
    np.testing.assert_allclose(w[order], [2 / 3, 1 / 3], atol=0.02)
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov[order[1]])), [0.5, 0.2], atol=0.05)
    assert np.isfinite(ll)


def test_mixture_log_likelihood_matches_scipy():
    rng = np.random.default_rng(1)
    K, D = 3, 5
    means = rng.normal(size=(K, D))
    A = rng.normal(size=(K, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    w = np.array([0.2, 0.5, 0.3])
    prior = GaussianMixturePrior(
        weights=torch.tensor(w), means=torch.tensor(means), covariances=torch.tensor(covs)
    )
    x = rng.normal(size=(6, D))
    ref = np.log(
        sum(w[k] * multivariate_normal(means[k], covs[k]).pdf(x) for k in range(K))
    )
    got = prior.log_likelihood(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    # Max-mixture energy: best component's -log(w N) up to a constant, zero at the best mean.
    comp = np.stack(
        [-np.log(w[k]) - multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(K)], 1
    )
    const = min(-np.log(w[k]) + 0.5 * np.linalg.slogdet(covs[k])[1] for k in range(K))
    ref_e = comp.min(1) - 0.5 * D * np.log(2 * np.pi) - const
    np.testing.assert_allclose(prior(torch.tensor(x, dtype=torch.float32)).numpy(), ref_e,
                               rtol=1e-4, atol=1e-3)  # fmt: skip


def test_shipped_prior_prefers_library_poses():
    path = pose_prior_asset_path()
    assert path.is_file() and path.stat().st_size < 200 * 1024
    prior = GaussianMixturePrior.from_asset()
    assert prior.dim == 69 and prior.num_components >= 2
    lib = torch.tensor(sample_pose_library(64, seed=123).body_pose, dtype=torch.float32)
    rand = torch.randn(64, 69, generator=torch.Generator().manual_seed(0)) * 0.6
    ll_lib, ll_rand = prior.log_likelihood(lib), prior.log_likelihood(rand)
    assert ll_lib.min() > ll_rand.max()
    e_lib, e_rand = prior(lib), prior(rand)
    assert (e_lib >= 0).all() and e_lib.max() < e_rand.min()
    # the stored mean pose (a mean of several modes) is still far likelier than random poses
    assert prior.log_likelihood(prior.mean_body_pose[None]) > ll_rand.max()


def _load_tool():
    path = ROOT / "tools" / "fit_pose_prior.py"
    spec = importlib.util.spec_from_file_location("fit_pose_prior", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_pose_prior_tool_is_deterministic(tmp_path):
    tool = _load_tool()
    args = ["--samples", "300", "--components", "2", "--iterations", "20"]
    assert tool.main([*args, "--out", str(tmp_path / "a.npz")]) == 0
    assert tool.main([*args, "--out", str(tmp_path / "b.npz")]) == 0
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    small = GaussianMixturePrior.from_asset(tmp_path / "a.npz")
    assert small.num_components == 2
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert set(z.files) == {"weights", "means", "covariances", "mean_body_pose", "meta"}


def test_bent_joint_penalty_against_reference():
    joints, axes, signs = bent_joint_axes()
    names = [BODY_JOINT_NAMES[j] for j in joints]
    assert names == list(BENT_JOINTS)
    # knees flex about +x (backwards: -x), the left elbow about -y, the right about +y
    assert dict(zip(names, zip(axes, signs))) == {
        "left_elbow": (1, 1.0), "right_elbow": (1, -1.0),
        "left_knee": (0, -1.0), "right_knee": (0, -1.0),
    }  # fmt: skip
    pose = torch.randn(3, 69, generator=torch.Generator().manual_seed(2)) * 0.5
    ref = torch.zeros(3)
    for j, a, s in zip(joints, axes, signs):
        ref += torch.exp(s * pose[:, 3 * j + a]) ** 2
    torch.testing.assert_close(bent_joint_penalty(pose), ref)
    knee = BODY_JOINT_NAMES.index("left_knee")
    bent, back = torch.zeros(2, 69), torch.zeros(2, 69)
    bent[:, 3 * knee] = 1.0
    back[:, 3 * knee] = -1.0
    assert (bent_joint_penalty(bent) < bent_joint_penalty(back)).all()


def test_mirror_and_shape_prior():
    lib = sample_pose_library(4, seed=3, mirror=False)
    p = lib.body_pose
    np.testing.assert_allclose(mirror_body_pose(mirror_body_pose(p)), p)
    m = mirror_body_pose(p).reshape(4, 23, 3)
    left, right = BODY_JOINT_NAMES.index("left_knee"), BODY_JOINT_NAMES.index("right_knee")
    np.testing.assert_allclose(m[:, left], p.reshape(4, 23, 3)[:, right] * [1, -1, -1])
    betas = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    torch.testing.assert_close(shape_prior(betas), torch.tensor([5.0, 0.25]))
    with pytest.raises(KeyError):
        sample_pose_library(1, actions=["fly"])
