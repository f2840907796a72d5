"""Adversarial body priors: HMR's factorised pose/shape discriminator, VIBE's motion discriminator.

HMR (Kanazawa et al., CVPR 2018) judges a predicted body with K + 2 small discriminators
sharing a per-joint embedding: one per joint rotation, one for the whole pose and one for the
shape. VIBE (Kocabas et al., CVPR 2020) judges pose *sequences* with a GRU whose outputs are
pooled over time by self-attention. Both are trained as least-squares GANs against "real"
samples. The published real data (CMU / AMASS mocap) is licensed; here it comes from the
dataset generator's pose library (`PoseLibrary`, `MotionLibrary`), see docs/baselines.md.

Rotations enter as rotation matrices (B, 23, 3, 3) (HMR) or 6-D (VIBE, continuous in time).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.body.pose_library import ACTIONS
from sahmr.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
)
from sahmr.optim.priors import mirror_body_pose, sample_pose_library

__all__ = [
    "FactorisedPoseDiscriminator",
    "MotionDiscriminator",
    "MotionLibrary",
    "PoseLibrary",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
]


def lsgan_generator_loss(scores: Tensor) -> Tensor:
    """Least-squares generator loss ``sum_d mean_b (D_d(fake) - 1)^2`` (HMR's encoder loss).

    Args:
        scores: Tensor (B, D) scores of D discriminators on predicted samples.

    Returns:
        Scalar tensor.
    """
    return ((scores - 1.0) ** 2).mean(0).sum()


def lsgan_discriminator_loss(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares discriminator losses on real and fake scores (B, D).

    Returns:
        ``(sum_d mean_b (D(real) - 1)^2, sum_d mean_b D(fake)^2)``.
    """
    return ((real - 1.0) ** 2).mean(0).sum(), (fake**2).mean(0).sum()


class FactorisedPoseDiscriminator(nn.Module):
    """HMR's discriminator: per-joint, whole-pose and shape scores.

    Each joint's rotation matrix (9 numbers) goes through a shared 1x1-convolution embedding
    (``joint_channels`` twice, ReLU); a separate linear unit per joint scores it; the
    concatenated embeddings feed a whole-pose MLP; the betas feed a small shape MLP.

    Args:
        num_joints: Non-root joints scored (23 for SMPL's body pose).
        num_betas: Shape coefficients.
        joint_channels: Width of the shared joint embedding (HMR: 32).
        pose_hidden: Width of the whole-pose MLP's two hidden layers (HMR: 1024).
        shape_hidden: Widths of the shape MLP's hidden layers (HMR: 10, 5).
    """

    def __init__(
        self,
        *,
        num_joints: int = 23,
        num_betas: int = 10,
        joint_channels: int = 32,
        pose_hidden: int = 1024,
        shape_hidden: tuple[int, ...] = (10, 5),
    ) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.num_betas = num_betas
        self.embed = nn.Sequential(
            nn.Conv1d(9, joint_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(joint_channels, joint_channels, 1),
            nn.ReLU(inplace=True),
        )
        # One linear unit per joint: weight (J, C), bias (J,).
        self.joint_weight = nn.Parameter(torch.empty(num_joints, joint_channels))
        self.joint_bias = nn.Parameter(torch.zeros(num_joints))
        bound = 1 / math.sqrt(joint_channels)
        nn.init.uniform_(self.joint_weight, -bound, bound)
        self.pose_mlp = nn.Sequential(
            nn.Linear(num_joints * joint_channels, pose_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(pose_hidden, pose_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(pose_hidden, 1),
        )
        layers: list[nn.Module] = []
        width = num_betas
        for h in shape_hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.shape_mlp = nn.Sequential(*layers)

    @property
    def num_outputs(self) -> int:
        """J + 2 scores per sample."""
        return self.num_joints + 2

    def forward(self, body_pose_rotmat: Tensor, betas: Tensor) -> Tensor:
        """Scores of bodies (higher = more real).

        Args:
            body_pose_rotmat: Tensor (B, J, 3, 3) joint rotations (parent frames).
            betas: Tensor (B, NB).

        Returns:
            Tensor (B, J + 2): J per-joint scores, then the whole-pose and the shape score.
        """
        B = body_pose_rotmat.shape[0]
        x = body_pose_rotmat.reshape(B, self.num_joints, 9).transpose(1, 2)  # (B, 9, J)
        emb = self.embed(x).transpose(1, 2)  # (B, J, C)
        joint_scores = (emb * self.joint_weight).sum(-1) + self.joint_bias  # (B, J)
        pose_score = self.pose_mlp(emb.reshape(B, -1))
        shape_score = self.shape_mlp(betas)
        return torch.cat([joint_scores, pose_score, shape_score], dim=1)


class MotionDiscriminator(nn.Module):
    """VIBE's motion discriminator: GRU over 6-D joint rotations, attention pooling, score.

    Args:
        num_joints: Joints per frame (23 body joints).
        hidden_dim: GRU width (VIBE: 1024).
        num_layers: GRU layers (VIBE: 2).
        attention_dim: Hidden width of the attention scorer (VIBE: 1024).
        attention_layers: Tanh layers of the attention scorer (VIBE: 3).
        dropout: Dropout in the attention scorer (VIBE: 0.2).
    """

    def __init__(
        self,
        *,
        num_joints: int = 23,
        hidden_dim: int = 1024,
        num_layers: int = 2,
        attention_dim: int = 1024,
        attention_layers: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.gru = nn.GRU(6 * num_joints, hidden_dim, num_layers=num_layers, batch_first=True)
        layers: list[nn.Module] = []
        width = hidden_dim
        for _ in range(attention_layers - 1):
            layers += [nn.Linear(width, attention_dim), nn.Tanh(), nn.Dropout(dropout)]
            width = attention_dim
        layers.append(nn.Linear(width, 1))
        self.attention = nn.Sequential(*layers)
        self.out = nn.Linear(hidden_dim, 1)

    @property
    def num_outputs(self) -> int:
        """One score per sequence."""
        return 1

    def forward(self, body_pose_rotmat: Tensor) -> Tensor:
        """Scores of pose sequences.

        Args:
            body_pose_rotmat: Tensor (B, T, J, 3, 3).

        Returns:
            Tensor (B, 1).
        """
        B, T = body_pose_rotmat.shape[:2]
        x = matrix_to_rot6d(body_pose_rotmat).reshape(B, T, -1)
        h, _ = self.gru(x)  # (B, T, H)
        weights = torch.softmax(self.attention(h), dim=1)  # (B, T, 1)
        pooled = (weights * h).sum(1)
        return self.out(pooled)


class PoseLibrary(nn.Module):
    """A bank of "real" body poses and shapes from the generator's pose library.

    Buffers are not persistent (rebuilt deterministically from the seed, not checkpointed).

    Args:
        body_pose: Tensor (N, 69) axis-angle poses.
        betas: Tensor (N, NB) shapes.
    """

    def __init__(self, *, body_pose: Tensor, betas: Tensor) -> None:
        super().__init__()
        self.register_buffer("body_pose", body_pose.float(), persistent=False)
        self.register_buffer("betas", betas.float(), persistent=False)

    @classmethod
    def from_generator(
        cls, num_samples: int = 20000, *, seed: int = 0, num_betas: int = 10
    ) -> PoseLibrary:
        """Draw the bank with `sahmr.optim.priors.sample_pose_library` (all actions, mirrored)."""
        lib = sample_pose_library(num_samples, seed=seed, num_betas=num_betas)
        return cls(body_pose=torch.from_numpy(lib.body_pose), betas=torch.from_numpy(lib.betas))

    def __len__(self) -> int:
        return int(self.body_pose.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` random entries (with replacement, torch's RNG).

        Returns:
            ``(body_pose_rotmat (n, 23, 3, 3), betas (n, NB))`` on the buffers' device.
        """
        idx = torch.randint(len(self), (n,), generator=generator).to(self.body_pose.device)
        pose = axis_angle_to_matrix(self.body_pose[idx].reshape(n, -1, 3))
        return pose, self.betas[idx]


class MotionLibrary(nn.Module):
    """"Real" pose sequences for VIBE's motion discriminator, from the generator's poses.

    Each sequence chains key poses of the pose library with geodesic (slerp) interpolation
    ``R_{k-1} exp(t log(R_{k-1}^T R_k))`` and smoothstep easing, the way the generator builds
    its motions (`sahmr.synth.sequences`): half of the sequences alternate one action's pose
    with its mirror image (gait-like cycles), the others move between random actions.

    Args:
        body_pose: Tensor (N, L, 69) axis-angle pose sequences.
    """

    def __init__(self, *, body_pose: Tensor) -> None:
        super().__init__()
        self.register_buffer("body_pose", body_pose.float(), persistent=False)

    @classmethod
    def from_generator(
        cls,
        num_sequences: int = 1000,
        length: int = 48,
        *,
        frames_per_key: tuple[int, int] = (6, 16),
        pool_size: int = 128,
        seed: int = 0,
    ) -> MotionLibrary:
        """Build ``num_sequences`` sequences of ``length`` frames.

        Args:
            num_sequences: N.
            length: Frames per sequence (clips are windows of it).
            frames_per_key: Range of frames between two key poses.
            pool_size: Key poses drawn per action (`sample_pose_library`).
            seed: Seed of the numpy generator.
        """
        rng = np.random.default_rng(seed)
        actions = list(ACTIONS)
        pool = np.concatenate(
            [
                sample_pose_library(pool_size, seed=seed + 1 + a, actions=[name], mirror=False)
                .body_pose
                for a, name in enumerate(actions)
            ]
        )  # (A * P, 69): action a's poses are rows a * P ... (a + 1) * P - 1
        pool = np.concatenate([pool, mirror_body_pose(pool)])  # mirrored copies after them
        mirrored = len(actions) * pool_size
        # Plan every sequence: key pose rows and the frames (key index, easing t) it spans.
        lo, hi = frames_per_key
        key_rows: list[int] = []
        frame_key = np.empty((num_sequences, length), np.int64)  # the key a frame moves to
        frame_t = np.empty((num_sequences, length))
        for n in range(num_sequences):
            cyclic = rng.random() < 0.5
            a = int(rng.integers(len(actions)))
            first = len(key_rows)
            key_rows.append(a * pool_size + int(rng.integers(pool_size)))
            frame_key[n, 0], frame_t[n, 0] = first, 1.0
            f, k = 1, 1
            while f < length:
                if not cyclic:
                    a = int(rng.integers(len(actions)))
                row = a * pool_size + int(rng.integers(pool_size))
                key_rows.append(row + (mirrored if cyclic and k % 2 == 1 else 0))
                steps = int(rng.integers(lo, hi + 1))
                t = np.arange(1, steps + 1) / steps
                m = min(steps, length - f)
                frame_key[n, f : f + m] = len(key_rows) - 1
                frame_t[n, f : f + m] = (t * t * (3.0 - 2.0 * t))[:m]  # smoothstep easing
                f, k = f + m, k + 1
        keys = axis_angle_to_matrix(torch.from_numpy(pool[key_rows]).reshape(len(key_rows), -1, 3))
        # Segment j runs from key j - 1 to key j (the first key of a sequence has t = 1).
        prev = torch.cat([keys[:1], keys[:-1]])
        rel = matrix_to_axis_angle(prev.transpose(-1, -2) @ keys)  # (num_keys, 23, 3)
        fk = torch.from_numpy(frame_key.reshape(-1))
        t = torch.from_numpy(frame_t.reshape(-1))[:, None, None]
        mats = prev[fk] @ axis_angle_to_matrix(t * rel[fk])
        seqs = matrix_to_axis_angle(mats).reshape(num_sequences, length, -1).float().numpy()
        return cls(body_pose=torch.from_numpy(seqs))

    @property
    def length(self) -> int:
        """Frames per stored sequence."""
        return int(self.body_pose.shape[1])

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` random windows of ``length`` frames.

        Returns:
            Tensor (n, length, 23, 3, 3) rotation matrices.
        """
        if length > self.length:
            raise ValueError(f"clips of {length} frames from sequences of {self.length}")
        N = self.body_pose.shape[0]
        seq = torch.randint(N, (n,), generator=generator)
        start = torch.randint(self.length - length + 1, (n,), generator=generator)
        t = start[:, None] + torch.arange(length)[None]
        idx_seq, idx_t = seq.to(self.body_pose.device), t.to(self.body_pose.device)
        poses = self.body_pose[idx_seq[:, None], idx_t]  # (n, length, 69)
        return axis_angle_to_matrix(poses.reshape(n, length, -1, 3))
