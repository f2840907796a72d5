"""What the 2026-12-06 (n) gradient probes share (docs/results.md): the checkpoint on the CPU
with RCNet frozen and without its depth search, the mesh network's trainable parameters, and
prepared steps of frames spread evenly over a split."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import checkpoint_steps

CPU = torch.device("cpu")


@dataclass
class Probe:
    """``python3 PROBE.py CHECKPOINT DATA [FRAMES]`` loaded."""

    model: nn.Module
    cfg: Any
    data: str
    frames: int
    params: dict[str, nn.Parameter]

    def steps(self, split: str) -> list:
        """Prepared steps (batches of 16, targets included) of ``frames`` frames spread over
        ``split``."""
        ds = SyntheticDataset(self.data, split)
        idx = np.linspace(0, len(ds) - 1, self.frames).round().astype(int).tolist()
        topology = instantiate(self.cfg.body).topology
        return list(checkpoint_steps(ds, idx, self.cfg, topology, CPU, batch_size=16,
                                     desc=split, progress=False))  # fmt: skip

    def grad_vector(self) -> torch.Tensor:
        """The mesh network's gradients, flattened in ``params`` order (zeros where none)."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                          for p in self.params.values()])  # fmt: skip

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None


def load_probe() -> Probe:
    """The probe of the command line's checkpoint and data (64 frames unless given)."""
    ckpt, data = sys.argv[1], sys.argv[2]
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    torch.manual_seed(0)
    model, cfg = load_method(ckpt, CPU)
    model.rcnet.depth_hypotheses = ()
    for p in model.rcnet.parameters():
        p.requires_grad_(False)
    params = {n: p for n, p in model.mesh_net.named_parameters() if p.requires_grad}
    return Probe(model, cfg, data, frames, params)


def placed_distance_mm(out: Any, step: Any) -> torch.Tensor:
    """Mean distance (mm) of the placed parametric body's vertices to the truth: the G-MPVE
    the ledger ranks checkpoints by, up to a rigid transform."""
    body = out.body.verts_rel + out.root_cam[:, None]
    return (body - step.frame_targets.verts_cam.to(body)).norm(dim=-1).mean() * 1000.0
