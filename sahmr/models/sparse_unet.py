"""A sparse 3-D U-Net on spconv, built from small reusable blocks (OpenPCDet style).

Every resolution level ``l`` has its own ``indice_key``: ``"subm{l}"`` for the submanifold
convs working at that level (they share neighbour index pairs) and ``"down{l}"`` for the
strided conv entering level ``l`` from level ``l - 1``; the inverse conv leaving level ``l``
reuses ``"down{l}"`` so it up-samples onto exactly the active sites the strided conv read.

Spatial shape per stage, for an input grid ``[D, H, W]`` (kernel 3, stride 2, padding 1 gives
``ceil(S / 2)`` per axis)::

    level 0: [D, H, W]                        channels[0]   (stem + residual blocks)
    level 1: [ceil(D/2), ceil(H/2), ceil(W/2)]  channels[1]
    level l: ceil(S / 2**l) per axis            channels[l]
    decoder: back up level by level; at level l the up-sampled features are concatenated
             with the encoder's level-l output (skip connection), fused by a submanifold conv
             and refined by residual blocks; the output lives on the input's active sites.

All spconv layers come from the factories in `sahmr.sparse` (algorithm choice per device).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.sparse import (
    ConvAlgo,
    SparseConvTensor,
    SparseModule,
    SparseSequential,
    default_algo,
    inverse_conv3d,
    set_algo,
    sparse_conv3d,
    subm_conv3d,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SparseResidualBlock",
    "SparseUNet",
    "SparseUNetOutput",
    "VoxelBatchNorm",
    "down_block",
    "subm_block",
    "up_block",
]

BN_EPS = 1e-3
"""Batch-norm epsilon of the sparse blocks (OpenPCDet's choice for voxel features)."""
BN_MOMENTUM = 0.01
"""Batch-norm running-statistics momentum of the sparse blocks."""


class VoxelBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over voxel features (K, C) that tolerates fewer than two voxels.

    In training mode a batch of 0 or 1 voxels has no batch variance; such calls normalise with
    the running statistics (and leave them unchanged) instead of raising.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise features.

        Args:
            x: Tensor of shape (K, C).

        Returns:
            Tensor of shape (K, C).
        """
        if self.training and x.shape[0] < 2:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                self.eps,
            )
        return super().forward(x)


def subm_block(
    in_channels: int,
    out_channels: int,
    *,
    indice_key: str,
    kernel_size: int = 3,
    algo: ConvAlgo | None = None,
) -> SparseSequential:
    """Submanifold conv + batch norm + ReLU (active sites unchanged).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        indice_key: Key of the resolution level (shared by its submanifold convs).
        kernel_size: Odd kernel size.
        algo: spconv algorithm (default: `sahmr.sparse.default_algo` for CPU).

    Returns:
        A SparseSequential mapping (K, C_in) features to (K, C_out) on the same sites.
    """
    return SparseSequential(
        subm_conv3d(
            in_channels, out_channels, kernel_size, indice_key=indice_key, bias=False, algo=algo
        ),
        VoxelBatchNorm(out_channels),
        nn.ReLU(inplace=True),
    )


def down_block(
    in_channels: int, out_channels: int, *, indice_key: str, algo: ConvAlgo | None = None
) -> SparseSequential:
    """Strided sparse conv (kernel 3, stride 2, padding 1) + batch norm + ReLU.

    Halves the grid (``ceil(S / 2)`` per axis); every output site is reachable from an input.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        indice_key: Key the matching `up_block` must reuse.
        algo: spconv algorithm.

    Returns:
        A SparseSequential.
    """
    return SparseSequential(
        sparse_conv3d(
            in_channels, out_channels, 3, stride=2, padding=1, indice_key=indice_key,
            bias=False, algo=algo,
        ),
        VoxelBatchNorm(out_channels),
        nn.ReLU(inplace=True),
    )


def up_block(
    in_channels: int, out_channels: int, *, indice_key: str, algo: ConvAlgo | None = None
) -> SparseSequential:
    """Inverse sparse conv (undoing the `down_block` of ``indice_key``) + batch norm + ReLU.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        indice_key: Key of the strided conv being inverted.
        algo: spconv algorithm.

    Returns:
        A SparseSequential whose output sites are the input sites of that strided conv.
    """
    return SparseSequential(
        inverse_conv3d(in_channels, out_channels, 3, indice_key=indice_key, bias=False, algo=algo),
        VoxelBatchNorm(out_channels),
        nn.ReLU(inplace=True),
    )


class SparseResidualBlock(SparseModule):
    """Two submanifold 3x3x3 convs with batch norm and an identity shortcut.

    ``y = relu(x + bn(conv(relu(bn(conv(x))))))`` on the same active sites.

    Args:
        channels: C (input and output).
        indice_key: Key of the resolution level.
        algo: spconv algorithm.
    """

    def __init__(self, channels: int, *, indice_key: str, algo: ConvAlgo | None = None) -> None:
        super().__init__()
        self.conv1 = subm_conv3d(channels, channels, 3, indice_key=indice_key, bias=False,
                                 algo=algo)
        self.bn1 = VoxelBatchNorm(channels)
        self.conv2 = subm_conv3d(channels, channels, 3, indice_key=indice_key, bias=False,
                                 algo=algo)
        self.bn2 = VoxelBatchNorm(channels)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        """Apply the block.

        Args:
            x: SparseConvTensor with (K, C) features.

        Returns:
            SparseConvTensor with (K, C) features on the same sites.
        """
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(F.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(F.relu(self.bn2(out.features) + identity))


@dataclass
class SparseUNetOutput:
    """Result of `SparseUNet`.

    Attributes:
        features: SparseConvTensor on the input's active sites with (K, out_channels)
            features (rows in the input's order).
        encoder: Per level l, the encoder's SparseConvTensor at grid ``ceil(S / 2**l)``
            (level 0 = the input sites), (K_l, channels[l]) features.
    """

    features: SparseConvTensor
    encoder: list[SparseConvTensor]


class SparseUNet(nn.Module):
    """Sparse 3-D U-Net: submanifold stem, strided down, inverse up, concatenated skips.

    Args:
        in_channels: Input feature width C_in.
        channels: Width of each level, finest first; ``len(channels)`` levels
            (``len - 1`` down-samplings).
        blocks_per_level: Residual blocks after each encoder and decoder stage.
        algo: spconv algorithm of every conv, fixed; None (default) follows the input's
            device at every call: `sahmr.sparse.default_algo` of it (``Native`` on CPU,
            ``MaskImplicitGemm`` on CUDA), switched with `sahmr.sparse.set_algo` when the
            device changes, so a model built on CPU and moved to a GPU uses the GPU kernels.

    Attributes:
        in_channels: C_in.
        out_channels: Output width (``channels[0]``).
        num_levels: Number of resolution levels.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 96, 128),
        blocks_per_level: int = 1,
        algo: ConvAlgo | None = None,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("channels must name at least one level")
        self.in_channels = int(in_channels)
        self.out_channels = channels[0]
        self.num_levels = len(channels)
        self.follow_device = algo is None

        def blocks(width: int, level: int) -> list[nn.Module]:
            return [
                SparseResidualBlock(width, indice_key=f"subm{level}", algo=algo)
                for _ in range(blocks_per_level)
            ]

        self.stem = subm_block(in_channels, channels[0], indice_key="subm0", algo=algo)
        self.encoders = nn.ModuleList([SparseSequential(*blocks(channels[0], 0))])
        self.downs = nn.ModuleList()
        for level in range(1, self.num_levels):
            self.downs.append(
                down_block(channels[level - 1], channels[level], indice_key=f"down{level}",
                           algo=algo)
            )
            self.encoders.append(SparseSequential(*blocks(channels[level], level)))
        # Decoder stage l-1 (built for l = 1..L-1): up from level l, fuse with the skip.
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        for level in range(1, self.num_levels):
            width = channels[level - 1]
            self.ups.append(
                up_block(channels[level], width, indice_key=f"down{level}", algo=algo)
            )
            self.fuses.append(
                SparseSequential(
                    subm_block(2 * width, width, indice_key=f"subm{level - 1}", algo=algo),
                    *blocks(width, level - 1),
                )
            )

    def forward(self, x: SparseConvTensor) -> SparseUNetOutput:
        """Run the U-Net.

        Args:
            x: SparseConvTensor with (K, in_channels) features, grid [D, H, W], coordinates
                ``[b, z, y, x]`` (build it with `sahmr.sparse.sparse_tensor`); K >= 1.

        Returns:
            `SparseUNetOutput`; ``features`` has (K, out_channels) rows on x's sites.
        """
        if x.features.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels, got {x.features.shape[1]}"
            )
        if self.follow_device:
            wanted = default_algo(x.features.device)
            if self.stem[0].algo != wanted:  # built (or last run) on another device
                set_algo(self, wanted)
        h = self.encoders[0](self.stem(x))  # level 0: [D, H, W]
        skips = [h]
        for level in range(1, self.num_levels):
            h = self.encoders[level](self.downs[level - 1](h))  # ceil(S / 2**level) per axis
            skips.append(h)
        for level in range(self.num_levels - 1, 0, -1):
            up = self.ups[level - 1](h)  # back onto the level-(l-1) sites, same row order
            skip = skips[level - 1]
            h = skip.replace_feature(torch.cat([up.features, skip.features], dim=1))
            h = self.fuses[level - 1](h)
        return SparseUNetOutput(features=h, encoder=skips)
