"""Tiny stand-ins shared by the HMR / SPIN / VIBE tests: a small CNN and labelled frames."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from sahmr.geometry.cameras import project
from sahmr.records import FrameInputs, FrameTargets


@functools.lru_cache(maxsize=1)
def body_model():
    """The shipped license-free body (loaded once per test session)."""
    from sahmr.body import BodyModel

    return BodyModel()


class TinyBackbone(nn.Module):
    """Two strided convolutions: (B, 3, S, S) -> (B, C, S/4, S/4)."""

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.out_stride = 4
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, out_channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


def crop_camera(B: int, S: int) -> Tensor:
    """(B, 3, 3) crop intrinsics: focal 2.5 S, centred."""
    return torch.tensor([[2.5 * S, 0.0, S / 2], [0.0, 2.5 * S, S / 2], [0.0, 0.0, 1.0]]).repeat(
        B, 1, 1
    )


def make_frames(
    B: int = 2, *, seed: int = 0, S: int = 64, depth: float = 4.0
) -> tuple[FrameInputs, FrameTargets]:
    """B labelled frames: library poses, upright bodies facing the camera ~``depth`` m away.

    The image is noise (the tests check plumbing and optimisation, not vision); the targets
    are exact camera-frame ground truth, the 2-D joints their projection with ``K_crop``.
    """
    from sahmr.optim.priors import sample_pose_library

    g = torch.Generator().manual_seed(seed)
    body = body_model()
    lib = sample_pose_library(B, seed=seed, actions=["stand", "walk", "reach_wall"])
    pose = torch.tensor(lib.body_pose, dtype=torch.float32)
    betas = torch.tensor(lib.betas, dtype=torch.float32) * 0.5
    orient = torch.tensor([[math.pi, 0.0, 0.0]]) + 0.2 * torch.randn(B, 3, generator=g)
    transl = torch.tensor([[0.0, 0.3, depth]]) + 0.1 * torch.randn(B, 3, generator=g)
    with torch.no_grad():
        out = body(betas=betas, global_orient=orient, body_pose=pose, transl=transl)
    K = crop_camera(B, S)
    top = body.topology
    levels = [out.vertices] + [top.downsample(out.vertices, lv) for lv in range(1, top.num_levels)]
    inputs = FrameInputs(
        image=torch.randn(B, 3, S, S, generator=g),
        K_crop=K,
        K=K.clone(),
        bbox=torch.tensor([[0.0, 0.0, S, S]]).repeat(B, 1),
        T_w2c=torch.eye(4).repeat(B, 1, 1),
    )
    targets = FrameTargets(
        verts_cam=out.vertices,
        verts_cam_levels=levels,
        joints_cam=out.joints,
        joints14_cam=out.joints14,
        root_cam=out.joints[:, 0],
        joints2d_crop=project(K, out.joints),
        joints14_2d_crop=project(K, out.joints14),
        vertex_contact=None,
        contact_points_cam=torch.zeros(0, 3),
        contact_point_region=torch.zeros(0, dtype=torch.int64),
        contact_batch_idx=torch.zeros(0, dtype=torch.int64),
        betas=betas,
        global_orient_cam=orient,
        body_pose=pose,
        T_w2c=torch.eye(4).repeat(B, 1, 1),
    )
    return inputs, targets
