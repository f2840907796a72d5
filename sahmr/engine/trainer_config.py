"""Settings of the training loop (``configs/trainer/*.yaml``), checked when built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sahmr.engine.data import LoaderSettings


@dataclass(kw_only=True)
class TrainerConfig:
    """Settings of the loop (``configs/trainer/*.yaml``).

    Attributes:
        max_epochs: Epochs to run.
        max_steps: Optimiser steps to run (None: ``max_epochs`` full epochs); also the
            length of the LR schedule.
        max_minutes: Wall-clock budget of this call; on expiry the run checkpoints and stops
            cleanly (``resume=true`` continues it).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (matrices and convolution kernels only; biases and
            norm parameters get none).
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps from 0 to ``lr``.
        min_lr_ratio: Cosine floor as a fraction of ``lr``.
        grad_clip: Max global gradient norm (None: no clipping; the norm is still logged).
        disc_lr: Peak learning rate of the discriminator's Adam (methods with an adversarial
            prior; None: ``lr``); it follows the same warm-up + cosine schedule.
        disc_weight_decay: The discriminator's Adam weight decay (L2, as HMR: 1e-4).
        disc_betas: The discriminator's Adam betas.
        bf16: bfloat16 autocast on CUDA (always fp32 on CPU).
        batch_size: Training frames (clips in clip mode) per batch and rank.
        val_batch_size: Validation frames (clips in clip mode) per batch and rank.
        num_workers: DataLoader workers.
        pin_memory: Pin host memory (CUDA).
        persistent_workers: Keep workers across epochs (their RNG streams then run on
            across epochs: a dataset that augments from the worker RNG needs ``false`` for
            bit-identical resumes).
        log_every: Steps between scalar logs.
        image_every: Steps between crop-grid image summaries (None/0: never).
        ckpt_every: Steps between ``last.pt`` writes (None/0: epoch ends and stop only).
        val_every_epochs: Validate every this many epochs (0: never).
        val_every_steps: Also validate every this many optimiser steps (None/0: never), for
            runs whose epochs are not a useful unit (a training set still being written,
            whose early epochs last a few steps).
        val_at_start: Validate once before the first step of a run that starts at step 0
            (a fine-tune from ``init.weights``): its curve then starts at the weights it
            continues, and ``best.pt`` stays those weights unless a later validation beats them.
        val_max_batches: Validation batches per rank (None: the whole split), of frames
            spread evenly over the split (`sahmr.engine.data.spread_indices`).
        val_scene_metrics: Also score penetration/contact against the rooms' SDFs.
        val_with_targets: Validate with ``forward(inputs, targets)`` in eval mode instead of
            ``predict`` (SA-HMR's mesh network trained without RCNet: ground-truth root and
            contacts); see `sahmr.engine.validation.run_validation`.
        best_metric: Validation scalar tracked for ``best.pt`` (None: no best.pt).
        best_mode: ``"min"`` or ``"max"``.
        find_unused_parameters: Passed to DDP (methods with branches unused in a step);
            always on for methods with a discriminator.
        deterministic: ``torch.use_deterministic_algorithms`` (CPU runs are bit-identical
            without it; GPU runs need it for bit-identity, at a speed cost).
        progress: Show tqdm bars (rank 0).
        fused_optimizer: Fused (single-kernel) AdamW on CUDA (ignored on the CPU).
        compile_submodules: Dotted paths of static-shape submodules compiled in place with
            ``torch.compile`` on CUDA (``Module.compile``: state-dict keys unchanged); paths
            the method lacks are skipped.
        sync_free_steps: With fused AdamW on CUDA and no discriminator: no host
            synchronisation in the step; a step whose gradient norm is not finite is skipped by
            the optimizer on the device (its ``found_inf``) and counted in the next scalar log,
            instead of being checked on the host before the backward pass.
        lr_multipliers: ``{dotted submodule path: factor}``: that submodule's parameters
            train at ``factor * lr`` (same schedule), e.g. a freshly added head on a
            pretrained network; the longest matching path wins.
        grad_clip_groups: Dotted submodule paths whose gradients are clipped to
            ``grad_clip`` each on their own (the parameters under none of them form one more
            group), e.g. ``[rcnet, mesh_net]`` when both train at once: RCNet's gradient norm
            (tens) would otherwise set the clipping factor of the mesh network's step. Empty:
            one global norm. The logged ``grad_norm`` is the global norm either way.
        ema_decay: Keep an exponential moving average of the weights with this decay per
            step, in [0, 1) (`sahmr.engine.weight_average`); validation scores it and
            checkpoints store it as ``model`` (``best.pt`` and exports are the average).
            None: no average, the trained weights are validated and saved.
        frozen_batchnorm: Dotted submodule paths whose BatchNorm layers stay in eval mode
            while the rest trains: their running statistics are used and never updated,
            their affine weights still train (`sahmr.engine.optimizers.freeze_batchnorm`).
            For a fine-tune of a model whose head was fitted on running statistics: batch
            statistics make its first steps less favourable for the validation error
            (docs/results.md, 2026-12-06 (n)).
            Empty: every BatchNorm trains as usual.
        frozen_parameters: Dotted submodule paths whose parameters do not train
            (`sahmr.engine.optimizers.freeze_parameters`): e.g. a part the shipped checkpoint
            stores in int8, where a small-LR fine-tune's moves would not survive the export
            (docs/results.md, run 30). Empty: everything the method trains, trains.
    """

    max_epochs: int = 1
    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    disc_lr: float | None = None
    disc_weight_decay: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.999)
    bf16: bool = True
    batch_size: int = 8
    val_batch_size: int = 8
    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    log_every: int = 10
    image_every: int | None = None
    ckpt_every: int | None = None
    val_every_epochs: int = 1
    val_every_steps: int | None = None
    val_at_start: bool = False
    val_max_batches: int | None = None
    val_scene_metrics: bool = False
    val_with_targets: bool = False
    best_metric: str | None = None
    best_mode: str = "min"
    find_unused_parameters: bool = False
    deterministic: bool = False
    progress: bool = True
    fused_optimizer: bool = False
    compile_submodules: tuple[str, ...] = ()
    sync_free_steps: bool = False
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    grad_clip_groups: tuple[str, ...] = ()
    ema_decay: float | None = None
    frozen_batchnorm: tuple[str, ...] = ()
    frozen_parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        for name in ("max_epochs", "max_steps", "warmup_steps", "batch_size", "val_batch_size",
                     "num_workers", "log_every", "val_every_steps"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):  # fmt: skip
                raise ValueError(f"trainer.{name}={value!r}: must be an integer >= 0")
        for name, positive in (("lr", True), ("weight_decay", False), ("min_lr_ratio", False),
                               ("grad_clip", True), ("max_minutes", True)):  # fmt: skip
            value = getattr(self, name)
            if value is None and name in ("grad_clip", "max_minutes"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (positive and value == 0)
            ):
                raise ValueError(f"trainer.{name}={value!r}: must be a finite number "
                                 f"{'> 0' if positive else '>= 0'}")  # fmt: skip
        if self.ema_decay is not None and (
            isinstance(self.ema_decay, bool)
            or not isinstance(self.ema_decay, (int, float))
            or not 0.0 <= self.ema_decay < 1.0
        ):
            raise ValueError(f"trainer.ema_decay={self.ema_decay!r}: must be a number in [0, 1) "
                             "or null")  # fmt: skip
        if self.max_epochs < 1 and not self.max_steps:
            raise ValueError("need max_epochs >= 1 or max_steps")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.disc_betas = tuple(float(b) for b in self.disc_betas)  # type: ignore[assignment]
        self.compile_submodules = tuple(str(p) for p in self.compile_submodules)
        self.grad_clip_groups = tuple(str(p) for p in (self.grad_clip_groups or ()))
        self.frozen_batchnorm = tuple(str(p) for p in (self.frozen_batchnorm or ()))
        self.frozen_parameters = tuple(str(p) for p in (self.frozen_parameters or ()))
        multipliers = dict(self.lr_multipliers or {})
        for path, factor in multipliers.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                    or not math.isfinite(factor) or factor <= 0:  # fmt: skip
                raise ValueError(
                    f"trainer.lr_multipliers.{path}={factor!r}: must be a finite number > 0"
                )
        self.lr_multipliers = {str(k): float(v) for k, v in multipliers.items()}

    @classmethod
    def from_mapping(cls, cfg: Any) -> TrainerConfig:
        """Build from a DictConfig / dict, rejecting unknown keys."""
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown trainer settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def autocast_bf16(self, device: torch.device | str) -> bool:
        """Whether the model runs under bfloat16 autocast on ``device`` (``bf16`` on CUDA;
        always fp32 elsewhere): the training step, and what stands in for its parts (a stored
        RCNet's outputs, `sahmr.engine.rcnet_store`)."""
        return bool(self.bf16 and torch.device(device).type == "cuda")

    def loader(self, *, train: bool) -> LoaderSettings:
        """DataLoader settings for the training or validation loader."""
        return LoaderSettings(
            batch_size=self.batch_size if train else self.val_batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )
