"""Test-time perturbation of RCNet's contacts: how much SA-HMR leans on its scene tokens.

`PerturbedContacts` wraps the RCNet inside an `sahmr.models.sahmr.SAHMR` and changes only the
contact points it hands to the mesh network (the root is untouched):

* ``drop``: each contact point removed with this probability (1.0: no contacts at all - the
  mesh network then attends to its null token only);
* ``shuffle``: every frame gets the contact points of another frame of the batch (a cyclic
  shift by one; camera-frame coordinates kept), i.e. plausible contacts of the wrong scene;
* ``jitter_m``: isotropic Gaussian noise of this standard deviation (metres) on every point.

Used by ``tools/eval_checkpoint.py contact_perturbation.*=...`` for the robustness rows in
docs/results.md. Deterministic for a given ``seed`` and batch sequence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class ContactPerturbation:
    """What to do to the contacts (see the module docstring)."""

    drop: float = 0.0
    shuffle: bool = False
    jitter_m: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError(f"contact drop must be in [0, 1], got {self.drop}")
        if not self.jitter_m >= 0.0:
            raise ValueError(f"contact jitter must be >= 0 m, got {self.jitter_m}")

    @property
    def active(self) -> bool:
        """Whether anything is changed."""
        return self.drop > 0 or self.shuffle or self.jitter_m > 0


def perturb_contacts(
    points: Tensor,
    region: Tensor,
    batch_idx: Tensor,
    num_frames: int,
    how: ContactPerturbation,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Perturbed packed contacts.

    Args:
        points: Tensor (P, 3) contact points, camera frame, metres.
        region: Tensor (P,) int64 region of each.
        batch_idx: Tensor (P,) int64 frame of each.
        num_frames: B.
        how: The perturbation.
        generator: CPU random generator (draws are made on the CPU, then moved).

    Returns:
        ``(points (P', 3), region (P',), batch_idx (P',))``.
    """
    keep = torch.rand(points.shape[0], generator=generator) >= how.drop
    keep = keep.to(points.device)
    points, region, batch_idx = points[keep], region[keep], batch_idx[keep]
    if how.shuffle and num_frames > 1:
        batch_idx = (batch_idx + 1) % num_frames
    if how.jitter_m > 0:
        noise = torch.randn(points.shape, generator=generator) * how.jitter_m
        points = points + noise.to(points)
    return points, region, batch_idx


class PerturbedContacts(nn.Module):
    """An RCNet whose contact outputs pass through `perturb_contacts`.

    Args:
        rcnet: The wrapped module; its output must be a dataclass with ``root_cam`` (B, 3),
            ``contact_points_cam``, ``contact_point_region`` and ``contact_batch_idx``.
        how: The perturbation.
    """

    def __init__(self, rcnet: nn.Module, how: ContactPerturbation) -> None:
        super().__init__()
        self.rcnet = rcnet
        self.how = how
        self._generator = torch.Generator().manual_seed(int(how.seed))

    def forward(self, inputs: Any, targets: Any = None) -> Any:
        """The wrapped output with perturbed contacts (the input batch is not modified)."""
        out = self.rcnet(inputs) if targets is None else self.rcnet(inputs, targets)
        points, region, bidx = perturb_contacts(
            out.contact_points_cam,
            out.contact_point_region,
            out.contact_batch_idx.long(),
            int(out.root_cam.shape[0]),
            self.how,
            self._generator,
        )
        return dataclasses.replace(
            out, contact_points_cam=points, contact_point_region=region, contact_batch_idx=bidx
        )
