"""Refit RCNet's voter for the ROIs it meets at test time (CPU-friendly).

RCNet (`sahmr.models.rcnet`) centres its ROI on a coarse, image-only root and its sparse
branch - the voter - votes the root from the scene voxels inside. Trained with ROI teacher
forcing (the ROI around the ground-truth root plus 0.1 m of noise per axis), the voter meets
other ROIs at test time: its coarse root is 0.25-0.45 m off, mostly in depth, and the
refinements (``roi_refinements``) re-centre on votes ~0.1 m off.

`refit_voter` trains the voter alone (the sparse U-Net and its three voxel heads; the image
stage and every BatchNorm's statistics stay frozen, so the model validated is the model
saved) on one of two ROI centrings (``VoterRefitSettings.centring``):

* ``mixed``: per frame, with probability ``coarse_fraction`` on the coarse root, otherwise on
  the ground-truth root moved by Gaussian noise - ``lateral_std`` per axis plus a shift along
  the viewing ray of standard deviation drawn uniformly from ``[0, depth_std_max]``
  (`training_centres`);
* ``deployed``: where the model itself puts the last ROI - the coarse root, then
  ``roi_refinements`` passes without gradients, each re-centred on the previous vote; the
  trained pass votes from the last of them.

Loss: RCNet's own sparse-branch terms (`sahmr.losses.rcnet.RCNetLoss.vote_terms`: offset,
root, contact) with the checkpoint's weights. Validation: the root error of the whole RCNet
with its ROI refinements, exactly as it predicts; the weights best there are kept (the
starting weights when no step beats them). `docs/results.md` (runs 14a-c) has what it gave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sahmr.engine.head_refit import copy_state
from sahmr.engine.optimizers import WarmupCosine
from sahmr.models.modes import eval_mode

logger = logging.getLogger(__name__)


def rcnet_loss_config(cfg: Any, default: str | Path) -> Any:
    """The RCNet loss config a voter refit trains with (instantiate it).

    A checkpoint trained with RCNet inside the loss stores ``loss.rcnet_loss``; one whose RCNet
    was frozen (``exp=sahmr_small_finetune``, e.g. the shipped run 19) stores none, and then
    ``default`` is used (a YAML file such as the repository's ``configs/loss/rcnet.yaml``) with
    its ``${body}`` read from the checkpoint's own body.

    Args:
        cfg: The checkpoint's config (`sahmr.engine.checkpoint.checkpoint_config`).
        default: The RCNet loss YAML to fall back on.
    """
    from omegaconf import OmegaConf

    own = OmegaConf.select(cfg, "loss.rcnet_loss")
    if own is not None:
        return own
    root = OmegaConf.create({"body": OmegaConf.to_container(cfg.body, resolve=True),
                             "rcnet_loss": OmegaConf.load(default)})  # fmt: skip
    return root.rcnet_loss

__all__ = ["CENTRINGS", "VOTER_MODULES", "VoterRefitSettings", "deployed_centres", "endless",
           "rcnet_loss_config", "refit_voter", "training_centres", "val_root_error_mm",
           "voter_parameters"]  # fmt: skip


@dataclass
class VoterRefitSettings:
    """Options of `refit_voter` (see the module docstring).

    Attributes:
        steps: Optimiser steps (AdamW, cosine decay to 0 after a 5 % warm-up).
        lr: Peak learning rate.
        coarse_fraction: Share of training ROIs centred on the coarse root.
        lateral_std: Noise of the other ROIs across all three axes, metres.
        depth_std_max: Their extra noise along the viewing ray: standard deviation uniform in
            ``[0, depth_std_max]`` per frame, metres.
        val_every: Validate every this many steps.
        seed: Seed of the ROI noise.
        centring: ``mixed`` or ``deployed`` (module docstring); ``deployed`` ignores the three
            noise settings.
    """

    steps: int = 600
    lr: float = 1e-4
    coarse_fraction: float = 1.0 / 3.0
    lateral_std: float = 0.1
    depth_std_max: float = 0.4
    val_every: int = 100
    seed: int = 0
    centring: str = "mixed"

    def __post_init__(self) -> None:
        if self.centring not in CENTRINGS:
            raise ValueError(f"centring must be one of {CENTRINGS}, got {self.centring!r}")


CENTRINGS = ("mixed", "deployed")


VOTER_MODULES = ("unet", "confidence_head", "offset_head", "contact_head")
"""RCNet's sub-modules that make the voter (the sparse U-Net and its voxel heads)."""


def voter_parameters(rcnet: nn.Module) -> list[nn.Parameter]:
    """The voter's parameters (`VOTER_MODULES`)."""
    return [p for name in VOTER_MODULES for p in getattr(rcnet, name).parameters()]


def training_centres(
    root_gt_cam: Tensor,
    root_coarse_cam: Tensor,
    settings: VoterRefitSettings,
    generator: torch.Generator,
) -> Tensor:
    """ROI centres for one training batch (module docstring).

    Args:
        root_gt_cam: (B, 3) ground-truth roots, camera frame.
        root_coarse_cam: (B, 3) RCNet's coarse roots.
        settings: ``coarse_fraction``, ``lateral_std``, ``depth_std_max``.
        generator: CPU random generator.

    Returns:
        Tensor (B, 3), camera frame.
    """
    B = root_gt_cam.shape[0]
    dtype = root_gt_cam.dtype

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).to(root_gt_cam.device)

    ray = root_gt_cam / root_gt_cam.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    depth_std = settings.depth_std_max * torch.rand(B, generator=generator, dtype=dtype)
    shift = settings.lateral_std * draw(B, 3) + (depth_std.to(ray) * draw(B))[:, None] * ray
    use_coarse = torch.rand(B, generator=generator) < settings.coarse_fraction
    return torch.where(use_coarse.to(ray.device)[:, None], root_coarse_cam.to(ray),
                       root_gt_cam + shift)  # fmt: skip


@torch.no_grad()
def deployed_centres(rcnet: nn.Module, inputs, fmap: Tensor, root_coarse_cam: Tensor) -> Tensor:
    """(B, 3) the centre of the ROI RCNet's last pass votes from at test time: the coarse root
    moved by ``rcnet.roi_refinements`` votes (frames whose ROI finds no scene point keep the
    previous centre)."""
    centre = root_coarse_cam
    for _ in range(rcnet.roi_refinements):
        centre = rcnet.vote_from(inputs, fmap, centre, centre).root_cam
    return centre


@torch.no_grad()
def val_root_error_mm(rcnet: nn.Module, steps: Sequence) -> float:
    """Mean root error (mm) of RCNet as it predicts (its ``roi_refinements``) over prepared
    steps (`sahmr.engine.data.Step` with targets)."""
    total, count = 0.0, 0
    with eval_mode(rcnet):
        for step in steps:
            out = rcnet(step.inputs)
            err = (out.root_cam - step.targets.root_cam.to(out.root_cam)).norm(dim=-1)
            total += float(err.sum())
            count += err.numel()
    return 1000.0 * total / max(count, 1)


def refit_voter(
    rcnet: nn.Module,
    loss_fn: nn.Module,
    train_steps: Iterator,
    val_steps: Sequence | None,
    settings: VoterRefitSettings | None = None,
    *,
    progress: bool = False,
    on_best: Callable[[dict], None] | None = None,
) -> dict:
    """Train RCNet's voter in place (module docstring); keep the weights best on val.

    Args:
        rcnet: The RCNet of a checkpoint (any ``roi_refinements``; validation uses its own).
        loss_fn: `sahmr.losses.rcnet.RCNetLoss` (its ``vote_terms`` and weights).
        train_steps: Endless iterator of prepared training steps with targets.
        val_steps: Prepared val steps (other rooms), or None (keep the last weights).
        settings: `VoterRefitSettings`.
        progress: Show a progress bar.
        on_best: Called with the validation row each time val improves, while ``rcnet``
            holds those weights (e.g. to save them: a stopped run keeps its best).

    Returns:
        ``{"history": [{"step", "loss", "offset", "root", "contact", "val_mm"}...],
        "best_step", "best_val_mm", "start_val_mm"}``.
    """
    from tqdm import tqdm

    settings = settings or VoterRefitSettings()
    params = voter_parameters(rcnet)
    trainable_before = [p for p in rcnet.parameters() if p.requires_grad]
    for p in rcnet.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    warm = max(1, settings.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(settings.steps, warm))
    gen = torch.Generator().manual_seed(settings.seed)
    start = val_root_error_mm(rcnet, val_steps) if val_steps is not None else None
    best = {"step": 0, "val_mm": start, "state": copy_state(rcnet)}
    logger.info("voter refit: val root error at the start %s mm", start)
    history: list[dict] = []
    running: dict[str, float] = {}
    seen = 0  # steps summed in running
    rcnet.eval()  # BatchNorm statistics frozen throughout
    try:
        for i in tqdm(range(settings.steps), desc="refit voter", disable=not progress):
            step = next(train_steps)
            inputs, targets = step.inputs, step.targets
            with torch.no_grad():
                fmap, *_, root_coarse = rcnet.image_stage(inputs)
                if settings.centring == "deployed":
                    centre = deployed_centres(rcnet, inputs, fmap, root_coarse)
                else:
                    centre = training_centres(targets.root_cam.to(root_coarse), root_coarse,
                                              settings, gen)  # fmt: skip
            vote = rcnet.vote_from(inputs, fmap, centre, root_coarse)
            raw = loss_fn.vote_terms(vote.voxels, vote.root_cam, vote.voted, targets)
            loss = sum(loss_fn.weights[k] * v for k, v in raw.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            for k, v in {"loss": loss, **raw}.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            seen += 1
            if (i + 1) % settings.val_every == 0 or i + 1 == settings.steps:
                row = {"step": i + 1, **{k: v / seen for k, v in running.items()}}
                running, seen = {}, 0
                if val_steps is not None:
                    row["val_mm"] = val_root_error_mm(rcnet, val_steps)
                    if row["val_mm"] < best["val_mm"]:
                        best = {"step": i + 1, "val_mm": row["val_mm"],
                                "state": copy_state(rcnet)}  # fmt: skip
                        if on_best is not None:
                            on_best(row)
                history.append(row)
                logger.info("voter refit step %d: %s", i + 1, row)
    finally:
        for p in params:
            p.requires_grad_(False)
        for p in trainable_before:
            p.requires_grad_(True)
    if val_steps is not None:
        rcnet.load_state_dict(best["state"])
    return {
        "history": history,
        "best_step": best["step"] if val_steps is not None else settings.steps,
        "best_val_mm": best["val_mm"],
        "start_val_mm": start,
    }


def endless(make_pass: Callable[[int], Iterable]) -> Iterator:
    """Chain ``make_pass(epoch)`` iterables for epoch 0, 1, 2, ... forever."""
    epoch = 0
    while True:
        yield from make_pass(epoch)
        epoch += 1
