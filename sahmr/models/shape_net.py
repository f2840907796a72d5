"""A small CNN that reads the body's shape coefficients from the person crop.

Why a separate network: the mesh networks' encoders learn pose. Probed on held-out rooms, the
shipped SA-HMR's mesh tokens carry part of the stature (beta 0) and none of the girth (beta 1):
a linear read-out of them scores R^2 0.32 and 0.0, and its own head 0.41 and 0.0
(`docs/results.md`, "Where the edge-length error stands"). With the true first two
coefficients swapped in, its own poses score 4.3 % edge-length error instead of 6.5 %: the
shape, not the pose, keeps the mesh from issue 12's 5 %. Girth is plain to see in the crop (a
heavy body's silhouette is wider for its height), so a network trained on the shape alone can
read it; stature needs the crop's metric scale, which it reads as the parametric heads do
(``log(crop_side_m / CROP_SIDE_REF_M)``, `sahmr.models.param_head`).

`CropShapeNet` maps the ImageNet-normalised crop (B, 3, S, S) the mesh networks take, resized
to ``size`` pixels, and the crop's side in metres at the body's depth (B,) to ``num_betas``
coefficients (B, NB). Its output layer starts at zero: an untrained net returns the mean shape.
SA-HMR built with one (``model.shape_net``) poses its parametric body with these coefficients
instead of its head's (`sahmr.models.sahmr.SAHMR`).

`shape_displacement_l1` is the loss it trains with: the mean absolute difference of the two
shapes' rest-pose vertices, ``|shapedirs . (betas_pred - betas_true)|`` (metres), which weighs
each coefficient by how far it moves the surface.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.models.param_head import CROP_SIDE_REF_M

SHAPE_NET_SIZE = 96
"""Default side (pixels) the crop is resized to."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, the first with stride 2, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CropShapeNet(nn.Module):
    """Crop + crop scale -> shape coefficients (see the module docstring).

    Args:
        num_betas: Coefficients predicted (the body model's ``num_betas``; fewer are
            zero-padded by the body model).
        size: Side the crop is resized to, pixels; a multiple of 32.
        widths: Channels of the five stride-2 blocks.
        hidden: Width of the read-out layer.
    """

    def __init__(
        self,
        *,
        num_betas: int = 10,
        size: int = SHAPE_NET_SIZE,
        widths: tuple[int, ...] = (24, 32, 48, 64, 96),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if size % 32 != 0 or size <= 0:
            raise ValueError(f"size must be a positive multiple of 32, got {size}")
        if len(widths) != 5:
            raise ValueError(f"widths must name five blocks, got {len(widths)}")
        self.num_betas = int(num_betas)
        self.size = int(size)
        chans = (3, *(int(w) for w in widths))
        self.features = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(chans)))
        side = self.size // 32
        self.readout = nn.Sequential(
            nn.Flatten(), nn.Linear(chans[-1] * side * side, hidden), nn.ReLU(inplace=True)
        )
        self.scale = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True))
        self.out = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.num_betas)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, image: Tensor, crop_side_m: Tensor) -> Tensor:
        """Shape coefficients.

        Args:
            image: Tensor (B, 3, S, S) crops, ImageNet-normalised (any S).
            crop_side_m: Tensor (B,) metres the crop's side spans at the body's depth.

        Returns:
            Tensor (B, num_betas) float32.
        """
        x = image.float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)  # fmt: skip
        h = self.readout(self.features(x))
        log_side = torch.log(crop_side_m.float().clamp_min(1e-3) / CROP_SIDE_REF_M)[:, None]
        return self.out(h + self.scale(log_side)).float()


def shape_displacement_l1(shapedirs: Tensor, betas_pred: Tensor, betas_true: Tensor) -> Tensor:
    """Mean absolute rest-pose vertex difference between two shapes, metres (scalar).

    Args:
        shapedirs: Tensor (V, 3, NB) the body model's shape directions.
        betas_pred: Tensor (B, NP) with NP <= NB (missing coefficients are zero).
        betas_true: Tensor (B, NT) with NT <= NB.
    """
    nb = shapedirs.shape[-1]
    diff = F.pad(betas_pred.float(), (0, nb - betas_pred.shape[-1])) - F.pad(
        betas_true.float(), (0, nb - betas_true.shape[-1])
    )
    disp = torch.einsum("vcn,bn->bvc", shapedirs.float(), diff)
    return disp.abs().mean()
