"""Body priors for fitting and adversarial training: pose GMM, shape prior, bent-joint penalty.

The published SMPLify / SPIN / PROX pose prior is a Gaussian mixture fitted to CMU mocap
poses (licensed data we do not have). Here the mixture is fitted by EM to poses drawn from the
dataset generator's pose library (`sahmr.body.pose_library`: every action's template plus clamped
Gaussian joint noise, optionally left-right mirrored), the same distribution the synthetic
bodies come from. ``tools/fit_pose_prior.py`` writes it to ``sahmr/optim/assets/pose_gmm.npz``
(found relative to the package by `pose_prior_asset_path`).

Poses are SMPL ``body_pose`` axis-angle vectors (B, 69), radians, the 23 non-root joints in
SMPL order, each in its parent's frame (SMPL's body frame: x = the person's left, y up,
z forward).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.body.pose_library import (
    ACTIONS,
    BODY_JOINT_NAMES,
    BODY_MIRROR_INDEX,
    JOINT_LIMITS,
    MIRROR_ANGLE_SIGN,
    body_euler_deg_to_axis_angle,
    euler_deg_to_axis_angle,
    sample_betas,
    sample_pose_euler,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BENT_JOINTS",
    "POSE_GMM_ASSET",
    "GaussianMixturePrior",
    "PoseLibrarySamples",
    "bent_joint_axes",
    "bent_joint_penalty",
    "fit_gmm_em",
    "load_pose_gmm_arrays",
    "mean_rotation_pose",
    "mirror_body_pose",
    "pose_prior_asset_path",
    "sample_pose_library",
    "save_pose_gmm",
    "shape_prior",
]

POSE_GMM_ASSET = "pose_gmm.npz"
"""File name of the shipped pose mixture inside ``sahmr/optim/assets``."""

NUM_BODY_JOINTS = len(BODY_JOINT_NAMES)
POSE_DIM = 3 * NUM_BODY_JOINTS
"""Size of ``body_pose`` (23 joints x 3 axis-angle components)."""

BENT_JOINTS: tuple[str, ...] = ("left_elbow", "right_elbow", "left_knee", "right_knee")
"""Hinge-like joints the bent-joint penalty keeps from bending backwards (SMPLify's angle
prior acts on the same four joints)."""


def pose_prior_asset_path() -> Path:
    """Path of the shipped pose mixture, independent of the working directory."""
    return Path(__file__).resolve().parent / "assets" / POSE_GMM_ASSET


# ---------------------------------------------------------------------------- pose library


@dataclass
class PoseLibrarySamples:
    """Poses drawn from the generator's pose library, float64 numpy arrays.

    Attributes:
        global_orient_body: (N, 3) axis-angle root rotation in the BODY frame (y up).
        body_pose: (N, 69) axis-angle joint rotations, radians.
        betas: (N, NB) shape coefficients.
        actions: N action names (`sahmr.body.pose_library.ACTIONS` keys).
    """

    global_orient_body: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    actions: list[str]


def mirror_body_pose(body_pose: np.ndarray) -> np.ndarray:
    """Left-right mirror of body poses: swap left/right joints and negate y and z components.

    Mirroring across the body's sagittal plane (x -> -x) maps a rotation with axis-angle
    ``(rx, ry, rz)`` to ``(rx, -ry, -rz)``; each joint takes its mirror partner's rotation.

    Args:
        body_pose: Array of shape (..., 69), axis-angle radians.

    Returns:
        Float64 array of shape (..., 69).
    """
    p = np.asarray(body_pose, dtype=np.float64)
    joints = p.reshape(*p.shape[:-1], NUM_BODY_JOINTS, 3)
    return (joints[..., BODY_MIRROR_INDEX, :] * MIRROR_ANGLE_SIGN).reshape(p.shape)


def sample_pose_library(
    num_samples: int,
    *,
    seed: int = 0,
    actions: list[str] | tuple[str, ...] | None = None,
    mirror: bool = True,
    num_betas: int = 10,
) -> PoseLibrarySamples:
    """Draw poses from the generator's pose library, actions chosen uniformly.

    Args:
        num_samples: N.
        seed: Seed of the numpy generator (the only randomness).
        actions: Action names to draw from (default: every `ACTIONS` entry).
        mirror: Mirror each pose left-right with probability 1/2 (the library's one-sided
            actions, e.g. touching with the right hand, then cover both sides).
        num_betas: Shape coefficients per sample (`sahmr.body.pose_library.sample_betas`).

    Returns:
        `PoseLibrarySamples`.
    """
    names = list(actions) if actions is not None else list(ACTIONS)
    unknown = sorted(set(names) - set(ACTIONS))
    if unknown:
        raise KeyError(f"unknown actions {unknown}; choose from {sorted(ACTIONS)}")
    rng = np.random.default_rng(seed)
    root_deg = np.empty((num_samples, 3))
    body_deg = np.empty((num_samples, NUM_BODY_JOINTS, 3))
    flip = np.zeros(num_samples, dtype=bool)
    betas = np.empty((num_samples, num_betas))
    drawn: list[str] = []
    for i in range(num_samples):
        action = names[int(rng.integers(len(names)))]
        # the draws of sahmr.body.pose_library.sample_pose; Euler -> axis-angle in one batch below
        root_deg[i], body_deg[i] = sample_pose_euler(action, rng)
        flip[i] = mirror and rng.random() < 0.5
        betas[i] = sample_betas(rng, num_betas)
        drawn.append(action)
    orient = euler_deg_to_axis_angle(root_deg)
    pose = body_euler_deg_to_axis_angle(body_deg).reshape(num_samples, POSE_DIM)
    pose[flip] = mirror_body_pose(pose[flip])
    orient[flip] = orient[flip] * MIRROR_ANGLE_SIGN
    return PoseLibrarySamples(orient, pose, betas, drawn)


def mean_rotation_pose(body_pose: np.ndarray) -> np.ndarray:
    """Per-joint chordal mean rotation of many poses (the projected mean rotation matrix).

    Args:
        body_pose: Array (N, 69), axis-angle radians.

    Returns:
        Float64 array (69,), axis-angle of each joint's mean rotation.
    """
    from scipy.spatial.transform import Rotation

    p = np.asarray(body_pose, dtype=np.float64).reshape(len(body_pose), NUM_BODY_JOINTS, 3)
    out = np.empty((NUM_BODY_JOINTS, 3))
    for j in range(NUM_BODY_JOINTS):
        out[j] = Rotation.from_rotvec(p[:, j]).mean().as_rotvec()
    return out.reshape(-1)


# ---------------------------------------------------------------------------- EM fitting


def _log_gaussians(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(N, K) log N(x_n | mu_k, Sigma_k), by Cholesky factors, float64."""
    n, d = x.shape
    out = np.empty((n, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covs)):
        L = np.linalg.cholesky(cov)
        z = np.linalg.solve(L, (x - mu).T)  # (D, N); triangular but small
        maha = (z * z).sum(0)
        log_det = 2.0 * np.log(np.diag(L)).sum()
        out[:, k] = -0.5 * (maha + log_det + d * np.log(2.0 * np.pi))
    return out


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """k-means++ seeding and a few Lloyd iterations; returns (k, D) centres."""
    centres = [x[int(rng.integers(len(x)))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        prob = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[int(rng.choice(len(x), p=prob))])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def fit_gmm_em(
    x: np.ndarray,
    num_components: int,
    *,
    iterations: int = 100,
    tol: float = 1e-6,
    reg_covar: float = 1e-4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fit a full-covariance Gaussian mixture by expectation-maximisation (deterministic).

    Initialised by k-means++ (seeded) and hard assignments; each M-step adds ``reg_covar`` to
    every covariance diagonal (keeps near-constant dimensions, e.g. joints the library barely
    moves, invertible and the prior from becoming needle-sharp).

    Args:
        x: Array (N, D) samples.
        num_components: K.
        iterations: Maximum EM iterations.
        tol: Stop when the mean log-likelihood improves by less than this.
        reg_covar: Added to covariance diagonals (units of x squared).
        seed: Seed of the initialisation.

    Returns:
        ``(weights (K,), means (K, D), covariances (K, D, D), mean_log_likelihood)``, float64.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    means = _kmeans_pp(x, num_components, rng)
    assign = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    resp = np.eye(num_components)[assign]
    prev = -np.inf
    ll = prev
    weights = covs = None
    for it in range(iterations):
        # M-step
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        covs = np.empty((num_components, d, d))
        for k in range(num_components):
            diff = x - means[k]
            covs[k] = (resp[:, k, None] * diff).T @ diff / nk[k] + reg_covar * np.eye(d)
        # E-step
        log_p = _log_gaussians(x, means, covs) + np.log(weights)
        top = log_p.max(1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(log_p - top).sum(1))
        resp = np.exp(log_p - log_norm[:, None])
        ll = float(log_norm.mean())
        logger.debug("EM iteration %d: mean log-likelihood %.4f", it, ll)
        if ll - prev < tol:
            break
        prev = ll
    return weights, means, covs, ll


# ---------------------------------------------------------------------------- asset I/O


def save_pose_gmm(
    path: str | Path,
    *,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    mean_body_pose: np.ndarray,
    meta: dict,
) -> Path:
    """Write a pose mixture as a byte-reproducible ``.npz`` (fixed zip timestamps, float32).

    Args:
        path: Output file.
        weights: (K,) mixture weights.
        means: (K, 69) component means, axis-angle radians.
        covariances: (K, 69, 69) component covariances.
        mean_body_pose: (69,) chordal mean pose of the library (HMR's mean-parameter start).
        meta: JSON-serialisable description (sampler, seed, EM settings).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "weights": np.asarray(weights, np.float32),
        "means": np.asarray(means, np.float32),
        "covariances": np.asarray(covariances, np.float32),
        "mean_body_pose": np.asarray(mean_body_pose, np.float32),
        "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    return path


def load_pose_gmm_arrays(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Arrays of a pose-mixture file (default: the shipped asset), ``allow_pickle=False``.

    Raises:
        FileNotFoundError: If the file is missing (build it with ``tools/fit_pose_prior.py``).
    """
    path = Path(path) if path is not None else pose_prior_asset_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"pose prior {path} missing; build it with tools/fit_pose_prior.py"
        )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------- priors


class GaussianMixturePrior(nn.Module):
    """Gaussian mixture over ``body_pose`` (B, 69), as SMPLify's pose prior.

    Args:
        weights: Tensor (K,) mixture weights (summing to 1).
        means: Tensor (K, D) component means.
        covariances: Tensor (K, D, D) component covariances (symmetric positive definite).
        mean_body_pose: Optional Tensor (D,) library mean pose (kept as a buffer for
            `sahmr.models.hmr.MeanParams`).
    """

    def __init__(
        self,
        *,
        weights: Tensor,
        means: Tensor,
        covariances: Tensor,
        mean_body_pose: Tensor | None = None,
    ) -> None:
        super().__init__()
        covs = covariances.double()
        chol = torch.linalg.cholesky(covs)
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        # Sigma = L L^T  =>  Sigma^-1 = L^-T L^-1 and d^2 = |L^-1 (x - mu)|^2 = |(x - mu) A|^2
        # with A = L^-T: a matrix product instead of a triangular solve per evaluation.
        eye = torch.eye(covs.shape[-1], dtype=covs.dtype).expand_as(covs)
        inv_chol_t = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        w = weights.double() / weights.double().sum()
        self.register_buffer("means", means.float())
        self.register_buffer("whiten", inv_chol_t.float())
        # Per-component constant of the negative log density (without D/2 log 2 pi).
        self.register_buffer("nll_const", (0.5 * log_det - torch.log(w)).float())
        self.register_buffer("log_weights", torch.log(w).float())
        self.register_buffer("log_det", log_det.float())
        self.register_buffer(
            "mean_body_pose",
            mean_body_pose.float() if mean_body_pose is not None else means[w.argmax()].float(),
        )

    @classmethod
    def from_asset(cls, path: str | Path | None = None) -> GaussianMixturePrior:
        """The mixture stored in ``path`` (default: the shipped ``pose_gmm.npz``)."""
        a = load_pose_gmm_arrays(path)
        return cls(
            weights=torch.from_numpy(a["weights"]),
            means=torch.from_numpy(a["means"]),
            covariances=torch.from_numpy(a["covariances"]),
            mean_body_pose=torch.from_numpy(a["mean_body_pose"]),
        )

    @property
    def num_components(self) -> int:
        """K."""
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """D (69 for SMPL's body pose)."""
        return int(self.means.shape[1])

    def mahalanobis(self, body_pose: Tensor) -> Tensor:
        """Squared Mahalanobis distance to every component, Tensor (B, K)."""
        diff = body_pose.reshape(-1, 1, self.dim) - self.means.to(body_pose.dtype)  # (B, K, D)
        z = torch.einsum("bkd,kde->bke", diff, self.whiten.to(body_pose.dtype))
        return (z * z).sum(-1)

    def log_likelihood(self, body_pose: Tensor) -> Tensor:
        """Exact mixture log density ``log sum_k w_k N(x | mu_k, Sigma_k)``.

        Args:
            body_pose: Tensor (B, 69), axis-angle radians.

        Returns:
            Tensor (B,).
        """
        maha = self.mahalanobis(body_pose)
        log_comp = -0.5 * (maha + self.log_det + self.dim * np.log(2.0 * np.pi))
        return torch.logsumexp(log_comp + self.log_weights, dim=-1)

    def forward(self, body_pose: Tensor) -> Tensor:
        """SMPLify's max-mixture energy: the best component's negative log density, >= 0.

        ``E(x) = min_k [0.5 d_k(x)^2 + 0.5 log|Sigma_k| - log w_k] - min_k [0.5 log|Sigma_k|
        - log w_k]`` with ``d_k`` the Mahalanobis distance (zero at the most likely mean).

        Args:
            body_pose: Tensor (B, 69), axis-angle radians.

        Returns:
            Tensor (B,) energy.
        """
        nll = 0.5 * self.mahalanobis(body_pose) + self.nll_const.to(body_pose.dtype)
        return nll.min(dim=-1).values - self.nll_const.min().to(body_pose.dtype)


def shape_prior(betas: Tensor) -> Tensor:
    """Shape prior energy ``|betas|^2`` (betas are unit-variance coefficients), Tensor (B,)."""
    return (betas * betas).sum(-1)


def bent_joint_axes() -> tuple[list[int], list[int], list[float]]:
    """Joint index, axis and sign of the backward-bending direction of each `BENT_JOINTS`.

    Derived from the generator's joint limits (`sahmr.body.pose_library.JOINT_LIMITS`): a hinge's
    axis is the one with the widest range and its forbidden side is the side whose limit is
    nearer zero (knees flex about +x, so bending backwards is -x; the left elbow flexes about
    -y, so +y is backwards).

    Returns:
        ``(joints, axes, signs)``: body-joint indices (0..22), axis 0..2, and +1/-1 so that
        ``sign * angle > 0`` bends the joint backwards.
    """
    joints, axes, signs = [], [], []
    for name in BENT_JOINTS:
        j = BODY_JOINT_NAMES.index(name)
        lim = JOINT_LIMITS[j]  # (3, 2) radians
        axis = int(np.argmax(lim[:, 1] - lim[:, 0]))
        lo, hi = lim[axis]
        joints.append(j)
        axes.append(axis)
        signs.append(1.0 if abs(hi) < abs(lo) else -1.0)
    return joints, axes, signs


def bent_joint_penalty(body_pose: Tensor) -> Tensor:
    """SMPLify's angle prior: ``sum_j exp(s_j * theta_j)^2`` over elbows and knees.

    ``theta_j`` is the hinge component of the joint's axis-angle and ``s_j`` the sign of
    backward bending (`bent_joint_axes`): near zero for natural bending, growing
    exponentially when a joint bends backwards.

    Args:
        body_pose: Tensor (B, 69), axis-angle radians.

    Returns:
        Tensor (B,).
    """
    joints, axes, signs = bent_joint_axes()
    flat = [3 * j + a for j, a in zip(joints, axes)]
    theta = body_pose.reshape(-1, POSE_DIM)[:, flat]
    s = torch.tensor(signs, dtype=body_pose.dtype, device=body_pose.device)
    return torch.exp(theta * s).pow(2).sum(-1)
