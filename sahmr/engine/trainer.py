"""One training loop for every method: AdamW, warm-up + cosine, bf16 on CUDA, DDP, resumable.

`Trainer` runs epochs of ``method(inputs, targets) -> output``, ``loss(output, targets)``,
clipped AdamW steps over the method's generator parameters; methods with an adversarial prior
(`sahmr.engine.methods.AdversarialMethod`: HMR, VIBE) then get a second step, an Adam step of
``method.discriminator_step(output)`` over ``method.discriminator_parameters()``; methods whose
forward takes ``sample_keys`` (SPIN) get one key per frame. Logs scalars and crop grids to
TensorBoard; validates at epoch end through
the shared evaluator (`sahmr.engine.validation`); writes ``checkpoints/last.pt`` atomically
every ``ckpt_every`` steps, at every epoch end and when it stops (step limit, time budget), and
``best.pt`` when the tracked validation metric improves.

Resuming is bit-identical on CPU: the checkpoint holds model (with any state a method keeps in
its state dict, e.g. SPIN's fits dictionary), both optimizers and schedulers, every RNG
state and the position (epoch, batches consumed); the data order is a function of
``(seed, epoch)`` only and the consumed batches are skipped (`sahmr.engine.data`). Validation
and image summaries fork the RNG states, so they never change the training trajectory.

`train_from_config` assembles everything from the hydra config of ``tools/train.py``; its
``clip_length`` selects the data mode (frames, or clips of T frames for temporal methods; see
`sahmr.engine.data`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sahmr.data.smplx_targets import BodyMismatchError, check_body_hash
from sahmr.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_initial_weights,
    restore_rng_state,
    save_checkpoint,
)
from sahmr.engine.data import (
    LoaderSettings,
    ResumableSampler,
    Step,
    StepPreparer,
    build_dataset,
    build_loader,
    build_scene_bank,
    clip_dataset,
    start_epoch,
)
from sahmr.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    any_rank,
    barrier,
    cleanup,
    init_distributed,
    wrap_ddp,
)
from sahmr.engine.methods import (
    can_predict,
    discriminator_parameters,
    eval_mode,
    generator_parameters,
    has_discriminator,
    unwrap,
    wants_sample_keys,
)
from sahmr.engine.validation import ValidationResult, prediction_from_output, run_validation
from sahmr.geometry.cameras import project
from sahmr.records import LossOutput

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


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
        val_max_batches: Validation batches per rank (None: the whole split).
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

    def __post_init__(self) -> None:
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        for name in ("max_epochs", "max_steps", "warmup_steps", "batch_size", "val_batch_size",
                     "num_workers", "log_every"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):  # fmt: skip
                raise ValueError(f"trainer.{name}={value!r}: must be an integer >= 0")
        for name, positive in (("lr", True), ("weight_decay", False), ("min_lr_ratio", False),
                               ("grad_clip", True), ("max_minutes", True)):  # fmt: skip
            value = getattr(self, name)
            if value is None and name in ("grad_clip", "max_minutes"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"trainer.{name}={value!r}: must be a finite number "
                                 f"{'> 0' if positive else '>= 0'}")  # fmt: skip
        if self.max_epochs < 1 and not self.max_steps:
            raise ValueError("need max_epochs >= 1 or max_steps")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.disc_betas = tuple(float(b) for b in self.disc_betas)  # type: ignore[assignment]
        self.compile_submodules = tuple(str(p) for p in self.compile_submodules)
        multipliers = dict(self.lr_multipliers or {})
        for path, factor in multipliers.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                    or not math.isfinite(factor) or factor <= 0:  # fmt: skip
                raise ValueError(f"trainer.lr_multipliers.{path}={factor!r}: must be a finite "
                                 "number > 0")
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

    def loader(self, *, train: bool) -> LoaderSettings:
        """DataLoader settings for the training or validation loader."""
        return LoaderSettings(
            batch_size=self.batch_size if train else self.val_batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``.

    An object (not a lambda) so `LambdaLR.state_dict` stores its plain numbers.
    """

    def __init__(self, total_steps: int, warmup: int = 0, floor: float = 0.0) -> None:
        self.total_steps = int(max(1, total_steps))
        self.warmup = int(max(0, warmup))
        self.floor = float(floor)

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total_steps - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor(name: str, multipliers: dict[str, float]) -> float:
    """The LR factor of parameter ``name``: the longest submodule path of ``multipliers``
    that contains it (1.0 when none does)."""
    best, best_len = 1.0, -1
    for path, factor in multipliers.items():
        if (name == path or name.startswith(path + ".")) and len(path) > best_len:
            best, best_len = factor, len(path)
    return best


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    params: list[nn.Parameter] | None = None,
    *,
    lr: float | None = None,
    lr_multipliers: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: decay on >= 2-D weights, none on biases and norm parameters, each split
    further by LR factor when ``lr_multipliers`` is given.

    Args:
        model: The module (parameters are ordered by name).
        weight_decay: Decay of the decayed groups.
        params: Only these parameters of ``model`` (None: every trainable one).
        lr: Base learning rate (needed with ``lr_multipliers``; groups then carry ``lr``).
        lr_multipliers: ``{submodule path: factor}`` (`lr_factor`).

    Raises:
        ValueError: If a multiplier's path matches no trainable parameter.
    """
    multipliers = dict(lr_multipliers or {})
    if multipliers and lr is None:
        raise ValueError("lr_multipliers need the base lr")
    keep = None if params is None else {id(p) for p in params}
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    used: set[str] = set()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad or (keep is not None and id(p) not in keep):
            continue
        factor = lr_factor(name, multipliers)
        used.update(k for k in multipliers if name == k or name.startswith(k + "."))
        buckets.setdefault((factor, p.ndim >= 2), []).append(p)
    unused = sorted(set(multipliers) - used)
    if unused:
        raise ValueError(f"trainer.lr_multipliers: no trainable parameters under {unused}")
    groups = []
    for factor in sorted({f for f, _ in buckets}):
        for decayed in (True, False):
            ps = buckets.get((factor, decayed))
            if not ps and not (decayed and factor == 1.0):
                continue
            group: dict[str, Any] = {"params": ps or [], "weight_decay": weight_decay
                                     if decayed else 0.0}  # fmt: skip
            if multipliers:
                group["lr"] = float(lr) * factor
            groups.append(group)
    if not groups:
        groups = [{"params": [], "weight_decay": weight_decay}]
    return groups


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


@dataclass
class StepResult:
    """What one training step produced.

    Attributes:
        output: The method's forward output.
        loss: The main `LossOutput`.
        grad_norm: Global gradient norm of the main step before clipping (NaN if skipped).
        disc_loss: The discriminator's `LossOutput` (methods with an adversarial prior and
            a finite main loss), else None.
    """

    output: Any
    loss: LossOutput
    grad_norm: Tensor
    disc_loss: LossOutput | None = None

    def scalars(self) -> dict[str, Tensor]:
        """Loss terms to log: ``loss`` and the main terms, then ``disc_loss`` and the
        discriminator's terms (prefixed ``disc_`` where a name would clash)."""
        out = {"loss": self.loss.total, **self.loss.terms}
        if self.disc_loss is not None:
            out["disc_loss"] = self.disc_loss.total
            for k, v in self.disc_loss.terms.items():
                out[k if k not in out else f"disc_{k}"] = v
        return out


@dataclass
class FitResult:
    """How a `Trainer.fit` call ended.

    Attributes:
        step: Optimiser steps done in total.
        epoch: Epoch in progress (or the next one after an epoch end).
        stopped: ``"done"`` (limits reached), ``"time"`` (budget), ``"interrupted"``
            (``until_step``).
        best: Best tracked validation value so far (None if not tracked).
        last_validation: Scalars of the last validation.
        checkpoint: Path of ``last.pt`` (rank 0), or None.
    """

    step: int
    epoch: int
    stopped: str
    best: float | None = None
    last_validation: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


class Trainer:
    """Trains one method with its loss.

    Args:
        method: The method (unwrapped; wrapped in DDP here under a process group), on the
            device of ``prepare``.
        loss: Loss module.
        config: Loop settings.
        train_loader: Loader from `build_loader(train=True)` (a `ResumableSampler`).
        prepare: Batch -> `Step` (inputs/targets) for training.
        output_dir: Run folder (``checkpoints/``, ``tb/``, ``metrics.jsonl``).
        dist: This process's place in the job.
        config_yaml: Resolved run config stored in checkpoints.
        seed: Base seed of the data order.
        val_loader: Validation loader, or None.
        val_prepare: Batch -> inputs/targets for validation (its own scene bank).
        evaluator: Body evaluator for validation (None: only the method's metrics).
        val_split: Split name used for validation frame names.
        body_hash: Content hash of the training body, stored in checkpoints.
    """

    def __init__(
        self,
        *,
        method: nn.Module,
        loss: nn.Module,
        config: TrainerConfig,
        train_loader: DataLoader,
        prepare: StepPreparer,
        output_dir: str | Path,
        dist: DistInfo | None = None,
        config_yaml: str = "",
        seed: int = 0,
        val_loader: DataLoader | None = None,
        val_prepare: StepPreparer | None = None,
        evaluator: Any | None = None,
        val_split: str = "val",
        body_hash: str | None = None,
    ) -> None:
        if not isinstance(train_loader.sampler, ResumableSampler):
            raise TypeError("train_loader needs a ResumableSampler (see build_loader)")
        self.cfg = config
        self.dist = dist or DistInfo(device=prepare.device)
        self.device = prepare.device
        self.method = method
        # A discriminator never takes part in the main graph: DDP must expect unused parameters.
        for path in config.compile_submodules if self.device.type == "cuda" else ():
            try:
                method.get_submodule(path).compile()
            except AttributeError:  # this method has no such submodule
                continue
        find_unused = config.find_unused_parameters or has_discriminator(method)
        self.model = wrap_ddp(method, self.dist, find_unused_parameters=find_unused)
        self.loss = loss
        self.train_loader = train_loader
        self.prepare = prepare
        self.val_loader = val_loader
        self.val_prepare = val_prepare or prepare
        self.evaluator = evaluator
        self.val_split = val_split
        self.body_hash = body_hash
        self.seed = int(seed)
        self.config_yaml = config_yaml
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.bf16 = bool(config.bf16 and self.device.type == "cuda")
        self.main_params = generator_parameters(method)
        params = parameter_groups(
            method,
            config.weight_decay,
            self.main_params,
            lr=config.lr,
            lr_multipliers=config.lr_multipliers,
        )
        if not any(g["params"] for g in params):
            raise ValueError("the method has no trainable parameters")
        fused = True if (config.fused_optimizer and self.device.type == "cuda") else None
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, fused=fused)
        self._skipped: Tensor | None = None  # non-finite steps the device skipped (sync-free)
        self.sample_keys = wants_sample_keys(method)
        self.disc_optimizer: torch.optim.Optimizer | None = None
        self.disc_scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        if has_discriminator(method):
            disc_params = discriminator_parameters(method)
            if not disc_params:
                raise ValueError("the method's discriminator has no trainable parameters")
            self.disc_optimizer = torch.optim.Adam(
                disc_params,
                lr=config.disc_lr if config.disc_lr is not None else config.lr,
                betas=config.disc_betas,
                weight_decay=config.disc_weight_decay,
            )
        sampler = train_loader.sampler
        self.steps_per_epoch = sampler.num_samples // int(train_loader.batch_size or 1)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training split holds {sampler.num_samples} samples per rank, fewer than "
                f"one batch of {train_loader.batch_size}"
            )
        self.total_steps = int(config.max_steps or config.max_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule())
        if self.disc_optimizer is not None:
            self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.disc_optimizer, self._schedule()
            )
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.last_validation: dict[str, float] = {}
        self._writer: Any = None
        self._no_writer = False
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    # ------------------------------------------------------------------ state

    def _schedule(self) -> WarmupCosine:
        """The configured LR factor (shared by both optimisers)."""
        return WarmupCosine(self.total_steps, self.cfg.warmup_steps, self.cfg.min_lr_ratio)

    def _metrics_state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_name": self.cfg.best_metric or "",
            "last": {k: float(v) for k, v in self.last_validation.items()},
        }

    def save(self, name: str = LAST) -> Path | None:
        """Write a checkpoint (rank 0; every rank must call it: RNG states are gathered)."""
        rngs = all_gather_objects(capture_rng_state())
        path = None
        if self.dist.is_main:
            path = save_checkpoint(
                self.ckpt_dir / name,
                model=self.method,
                config=self.config_yaml,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                discriminator_optimizer=self.disc_optimizer,
                discriminator_scheduler=self.disc_scheduler,
                rng=rngs,
                epoch=self.epoch,
                step=self.step,
                batch_in_epoch=self.batch_in_epoch,
                metrics=self._metrics_state(),
                body_hash=self.body_hash,
            )
            logger.info("checkpoint %s (epoch %d, step %d)", path, self.epoch, self.step)
        barrier()
        return path

    def resume(self, path: str | Path) -> None:
        """Load model, optimizers, schedulers, RNG and position from a checkpoint."""
        ckpt = load_checkpoint(path, map_location="cpu")
        self.method.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self._load_scheduler(self.scheduler, ckpt["scheduler"])
        if self.disc_optimizer is not None:
            if "discriminator_optimizer" in ckpt:
                self.disc_optimizer.load_state_dict(ckpt["discriminator_optimizer"])
            else:
                logger.warning("%s holds no discriminator optimizer: it starts afresh", path)
            if "discriminator_scheduler" in ckpt and self.disc_scheduler is not None:
                self._load_scheduler(self.disc_scheduler, ckpt["discriminator_scheduler"])
        self.epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        metrics = ckpt.get("metrics") or {}
        self.best = metrics.get("best")
        self.last_validation = dict(metrics.get("last") or {})
        rngs = ckpt.get("rng") or []
        if rngs:
            if len(rngs) != self.dist.world_size:
                logger.warning(
                    "checkpoint from %d ranks resumed on %d: RNG streams differ from an "
                    "uninterrupted run",
                    len(rngs),
                    self.dist.world_size,
                )
            restore_rng_state(rngs[self.dist.rank % len(rngs)])
        logger.info(
            "resumed %s: epoch %d, step %d, %d batches into the epoch",
            path,
            self.epoch,
            self.step,
            self.batch_in_epoch,
        )

    def _load_scheduler(
        self, scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]
    ) -> None:
        """Restore a scheduler; the configured schedule wins over the stored one (e.g. a
        longer ``max_steps``)."""
        scheduler.load_state_dict(state)
        current = self._schedule()
        stored = scheduler.lr_lambdas[0]
        if vars(stored) != vars(current):
            logger.warning("LR schedule changed on resume: %s -> %s", vars(stored), vars(current))
            scheduler.lr_lambdas[0] = current

    # ------------------------------------------------------------------ logging

    @property
    def writer(self) -> Any:
        """TensorBoard SummaryWriter on rank 0 (None elsewhere, or without the tensorboard
        package: then only metrics.jsonl is written), created on first use."""
        if self._writer is None and self.dist.is_main and not self._no_writer:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                logger.warning("no TensorBoard logs (%s); metrics.jsonl only", exc)
                self._no_writer = True
                return None
            self._writer = SummaryWriter(str(self.output_dir / "tb"))
        return self._writer

    def _log_jsonl(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        clean = {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in record.items()
        }
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean) + "\n")

    def _log_scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        w = self.writer
        if w is None:
            return
        for k, v in values.items():
            if math.isfinite(v):
                w.add_scalar(f"{prefix}/{k}", v, step)

    @torch.no_grad()
    def _log_images(self, step: Step, output: Any) -> None:
        """Crop grid (frames) with projected GT joints and predicted joints (or root)."""
        if self.writer is None:
            return
        from sahmr.engine.summaries import crop_grid

        pred2d = None
        model = unwrap(self.model)
        frames = step.frame_inputs
        rng = capture_rng_state()
        try:
            if self.cfg.val_with_targets:
                pred2d = project(frames.K_crop, prediction_from_output(output).joints_cam)
            elif can_predict(model):
                with eval_mode(model), self._autocast():
                    pred = model.predict(step.inputs)
                pred2d = project(frames.K_crop, pred.joints_cam.float())
            elif isinstance(getattr(output, "root_cam", None), Tensor):
                pred2d = project(frames.K_crop, output.root_cam.detach().float()[:, None])
        finally:
            restore_rng_state(rng)
        gt2d = step.frame_targets.joints2d_crop if step.frame_targets is not None else None
        grid = crop_grid(frames.image, gt2d, pred2d)
        self.writer.add_image("train/crops", grid, self.step, dataformats="HWC")

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ loop

    def train_step(self, step: Step) -> StepResult:
        """One optimiser step of the method, then one of its discriminator (if any)."""
        self.optimizer.zero_grad(set_to_none=True)
        kwargs = {"sample_keys": step.sample_keys} if self.sample_keys else {}
        with self._autocast():
            output = self.model(step.inputs, step.targets, **kwargs)
            loss_out = self.loss(output, step.targets)
        total = loss_out.total.float()
        if self._sync_free:
            return self._sync_free_step(output, loss_out, total)
        finite = bool(torch.isfinite(total).item())
        if any_rank(not finite, self.device):
            logger.warning("step %d: non-finite loss; step skipped", self.step)
            if self.dist.distributed and total.requires_grad:
                (total * 0.0).backward()  # DDP expects one backward per forward
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.disc_scheduler is not None:  # the schedules stay aligned
                self.disc_scheduler.step()
            return StepResult(output, loss_out, torch.tensor(float("nan")))
        total.backward()
        grad_norm = self._clip([p for p in self.main_params if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        disc_loss = self.discriminator_step(output) if self.disc_optimizer is not None else None
        return StepResult(output, loss_out, grad_norm.detach(), disc_loss)

    @property
    def _sync_free(self) -> bool:
        """Whether steps run without host synchronisation (`TrainerConfig.sync_free_steps`)."""
        fused = any(g.get("fused") for g in self.optimizer.param_groups)
        return self.cfg.sync_free_steps and fused and self.disc_optimizer is None

    def _sync_free_step(self, output: Any, loss_out: LossOutput, total: Tensor) -> StepResult:
        """Backward, clipping and a fused AdamW step the device skips when the gradient norm
        (equal on every rank after DDP's all-reduce) is not finite; no host synchronisation."""
        total.backward()
        grad_norm = self._clip([p for p in self.main_params if p.grad is not None])
        bad = ~torch.isfinite(grad_norm)
        self.optimizer.found_inf = bad.float()  # read by the fused kernel: skip on the device
        self.optimizer.step()
        self.scheduler.step()
        self._skipped = bad.long() if self._skipped is None else self._skipped + bad.long()
        return StepResult(output, loss_out, grad_norm.detach())

    def _clip(self, params: list[nn.Parameter]) -> Tensor:
        """Clip to ``grad_clip`` (if set); the norm before clipping."""
        if not params:
            return torch.zeros((), device=self.device)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip else float("inf")
        return nn.utils.clip_grad_norm_(params, max_norm)

    def discriminator_step(self, output: Any) -> LossOutput | None:
        """The adversarial prior's step: ``method.discriminator_step(output)`` (predictions
        detached inside), its gradients (averaged over ranks), one Adam step.

        The gradients come from ``torch.autograd.grad`` rather than ``backward``: the
        discriminator runs outside the DDP wrapper's forward, and accumulating into ``.grad``
        would fire DDP's hooks for parameters it recorded as unused; they are all-reduced
        here instead, and cleared after the step. Returns None (step skipped, schedule
        advanced) for a non-finite loss.
        """
        assert self.disc_optimizer is not None and self.disc_scheduler is not None
        params = [p for g in self.disc_optimizer.param_groups for p in g["params"]]
        with self._autocast():
            disc = unwrap(self.model).discriminator_step(output)
        total = disc.total.float()
        if any_rank(not bool(torch.isfinite(total).item()), self.device):
            logger.warning("step %d: non-finite discriminator loss; its step skipped", self.step)
            self.disc_scheduler.step()
            return None
        grads = torch.autograd.grad(total, params, allow_unused=True)
        for p, g in zip(params, grads):
            if self.dist.distributed:  # every rank joins every all-reduce
                g = all_reduce_sum(torch.zeros_like(p) if g is None else g) / self.dist.world_size
            p.grad = g
        self.disc_optimizer.step()
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.disc_scheduler.step()
        return LossOutput(
            total=disc.total.detach(), terms={k: v.detach() for k, v in disc.terms.items()}
        )

    def validate(self) -> ValidationResult | None:
        """Validate on the val split (RNG states untouched); logs and tracks the best."""
        if self.val_loader is None:
            return None
        rng = capture_rng_state()
        try:
            result = run_validation(
                self.model,
                self.val_loader,
                self.val_prepare,
                split=self.val_split,
                evaluator=self.evaluator,
                max_batches=self.cfg.val_max_batches,
                bf16=self.bf16,
                progress=self.cfg.progress and self.dist.is_main,
                with_targets=self.cfg.val_with_targets,
            )
        finally:
            restore_rng_state(rng)
        scalars = result.scalars()
        self.last_validation = scalars
        self._log_scalars("val", scalars, self.step)
        self._log_jsonl({"split": "val", "epoch": self.epoch, "step": self.step, **scalars})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(scalars.items())[:8])
        logger.info("validation at step %d: %s", self.step, shown)
        name = self.cfg.best_metric
        if name:
            value = scalars.get(name)
            if value is None or not math.isfinite(value):
                logger.warning("best metric %r not in the validation scores", name)
            else:
                better = self.best is None or (
                    value < self.best if self.cfg.best_mode == "min" else value > self.best
                )
                if better:
                    self.best = float(value)
                    self.save(BEST)
        return result

    def _window_log(
        self, sums: dict[str, Tensor], count: int, samples: int, dt: float, grad_norm: Tensor
    ) -> None:
        if self._skipped is not None:
            skipped = int(self._skipped.item())
            self._skipped = None
            if skipped:
                logger.warning("%d step(s) before step %d skipped: non-finite", skipped, self.step)
        names = sorted(sums)
        vec = torch.stack(
            [sums[k].detach().float().to(self.device) for k in names]
            + [torch.tensor(float(count), device=self.device)]
        )
        vec = all_reduce_sum(vec)
        n = float(vec[-1].item())
        scalars = {k: float(vec[i].item()) / max(n, 1.0) for i, k in enumerate(names)}
        scalars["lr"] = float(self.scheduler.get_last_lr()[0])
        scalars["grad_norm"] = float(grad_norm.float().item())
        scalars["samples_per_s"] = samples * self.dist.world_size / max(dt, 1e-9)
        self._log_scalars("train", scalars, self.step)
        self._log_jsonl({"split": "train", "epoch": self.epoch, "step": self.step, **scalars})
        logger.info(
            "step %d/%d loss %.4g lr %.3g %.1f samples/s",
            self.step,
            self.total_steps,
            scalars.get("loss", float("nan")),
            scalars["lr"],
            scalars["samples_per_s"],
        )

    def fit(self, *, until_step: int | None = None) -> FitResult:
        """Train until ``max_steps`` / ``max_epochs``, the time budget, or ``until_step``.

        Args:
            until_step: Stop (and checkpoint) after this many steps in total, as if
                interrupted; the LR schedule still runs over the full configured length.

        Returns:
            How it ended (`FitResult`).
        """
        cfg = self.cfg
        t_start = time.monotonic()
        budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None
        stopped = "done"
        validated_at = -1
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (cfg.progress and self.dist.is_main),
        )
        sums: dict[str, Tensor] = {}
        count = samples = 0
        t_window = time.monotonic()
        while self.epoch < cfg.max_epochs and self.step < self.total_steps:
            self.model.train()
            start_epoch(self.train_loader, self.seed, self.epoch, self.batch_in_epoch)
            stop = False
            for batch in self.train_loader:
                step = self.prepare.step(batch, targets=True)
                res = self.train_step(step)
                self.step += 1
                self.batch_in_epoch += 1
                bar.update(1)
                for k, v in res.scalars().items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
                count += 1
                samples += step.num_frames
                if cfg.log_every and self.step % cfg.log_every == 0:
                    self._window_log(
                        sums, count, samples, time.monotonic() - t_window, res.grad_norm
                    )
                    sums, count, samples, t_window = {}, 0, 0, time.monotonic()
                if cfg.image_every and self.step % cfg.image_every == 0:
                    self._log_images(step, res.output)
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
                if self.step >= self.total_steps:
                    stop = True
                elif until_step is not None and self.step >= until_step:
                    stopped, stop = "interrupted", True
                elif budget_s is not None and any_rank(
                    time.monotonic() - t_start > budget_s, self.device
                ):
                    stopped, stop = "time", True
                if stop:
                    break
            if self.batch_in_epoch >= self.steps_per_epoch:  # the epoch is complete
                self.epoch += 1
                self.batch_in_epoch = 0
                if cfg.val_every_epochs and self.epoch % cfg.val_every_epochs == 0:
                    self.validate()
                    validated_at = self.step
                self.save()
            elif stop:
                self.save()
            if stop:
                break
        # A run ended by its step count or its time budget is scored where it stopped (its
        # last, lowest-LR weights can be the best); an interrupted one resumes instead.
        if stopped in ("done", "time") and validated_at != self.step and cfg.val_every_epochs:
            self.validate()
            self.save()
        bar.close()
        if self._writer is not None:
            self._writer.flush()
        path = self.ckpt_dir / LAST if self.dist.is_main else None
        return FitResult(
            step=self.step,
            epoch=self.epoch,
            stopped=stopped,
            best=self.best,
            last_validation=dict(self.last_validation),
            checkpoint=path,
        )

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ---------------------------------------------------------------------------- assembly


def _instantiate(node: Any, **kwargs: Any) -> Any:
    from hydra.utils import instantiate

    return instantiate(node, **kwargs)


def _scene_points(dataset: Any, needed: bool) -> Any:
    if not needed:
        return None
    scenes = getattr(dataset, "scene_points", None)
    if scenes is None:
        raise ValueError(f"{type(dataset).__name__} has no scene_points; set needs_scene=false")
    return scenes


def build_evaluator(
    body: Any,
    dataset: Any,
    *,
    scene_metrics: bool,
    sdf_cache_dir: str | None = None,
    sdf_voxel_size: float = 0.02,
    joint_set: str = "smpl24",
    protocol: str = "default",
) -> Any:
    """The shared body evaluator; scene SDFs from the dataset's ``scene_mesh_dir`` (RICH,
    PROX) or ``rooms/`` (generated data) when asked; ``protocol`` ``"sahmr"`` gives the
    official SA-HMR definitions (`sahmr.evaluation.evaluator.PROTOCOLS`)."""
    from sahmr.evaluation.evaluator import Evaluator, SceneSDFs

    scenes = None
    if scene_metrics:
        root = getattr(dataset, "root", None)
        scene_dir = getattr(dataset, "scene_mesh_dir", None)
        if scene_dir is None and root is None:
            raise ValueError("scene metrics need a dataset with a root folder holding rooms/")
        scenes = SceneSDFs(
            scene_dir=Path(scene_dir if scene_dir is not None else Path(root) / "rooms"),
            voxel_size=sdf_voxel_size,
            cache_dir=sdf_cache_dir,
        )
    return Evaluator(body, scenes, joint_set=joint_set, protocol=protocol)


def config_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what checkpoints store)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def train_from_config(
    cfg: DictConfig,
    *,
    until_step: int | None = None,
    on_trainer: Callable[[Trainer], None] | None = None,
) -> FitResult:
    """Build data, method, loss and trainer from a ``configs/train.yaml`` config and train.

    Args:
        cfg: The composed config (``model``, ``loss``, ``data``, ``data_val``, ``body``,
            ``trainer``, ``paths``, ``seed``, ``resume``, ``needs_scene``, ``clip_length``,
            ``clip_stride``, ``clip_motion_prefix``, ...).
        until_step: Stop after this many steps in total (tests; see `Trainer.fit`).
        on_trainer: Called with the built trainer before training (tests, tools).

    Returns:
        The `FitResult`.
    """
    info = init_distributed(cfg.get("device", "auto"))
    try:
        return _train(cfg, info, until_step, on_trainer)
    finally:
        cleanup()


def _train(
    cfg: DictConfig,
    info: DistInfo,
    until_step: int | None,
    on_trainer: Callable[[Trainer], None] | None,
) -> FitResult:
    tcfg = TrainerConfig.from_mapping(cfg.trainer)
    seed = int(cfg.seed)
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / LAST
    resume = bool(cfg.get("resume", False))
    if last.is_file() and not resume:
        raise FileExistsError(
            f"{last} exists: pass resume=true to continue it, or choose another exp_name / "
            "paths.output_dir"
        )
    seed_everything(seed + info.rank)
    text = config_yaml(cfg)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(text, encoding="utf-8")

    body = _instantiate(cfg.body)
    needs_scene = bool(cfg.get("needs_scene", True))
    max_pts = cfg.get("max_points_per_scene")
    clip_length = cfg.get("clip_length")
    prefix = cfg.get("clip_motion_prefix", "seq_")
    loader: Any
    prepare: Any
    if cfg.get("loader") is not None:  # the in-memory data path (configs/loader/)
        from sahmr.engine.memory_data import build_memory_data

        loader, prepare = build_memory_data(
            _instantiate(cfg.loader),
            root=str(cfg.data.root),
            split=str(cfg.data.get("split", "train")),
            topology=body.topology,
            device=info.device,
            batch_size=tcfg.batch_size,
            seed=seed,
            rank=info.rank,
            world_size=info.world_size,
            needs_scene=needs_scene,
            max_points_per_scene=max_pts,
            clip_length=clip_length,
            progress=tcfg.progress and info.is_main,
        )
    else:
        train_frames = build_dataset(cfg.data)
        check_body_hash(train_frames, body.content_hash, what="the training body (body=)")
        train_set = clip_dataset(
            train_frames,
            clip_length,
            stride=cfg.get("clip_stride"),
            motion_prefix=prefix,
        )
        bank = build_scene_bank(
            _scene_points(train_set, needs_scene),
            info.device,
            max_points_per_scene=max_pts,
            seed=seed,
        )
        prepare = StepPreparer(body.topology, info.device, bank, clip_length=clip_length)
        loader = build_loader(
            train_set,
            tcfg.loader(train=True),
            train=True,
            seed=seed,
            rank=info.rank,
            world_size=info.world_size,
            device=info.device,
            clip_length=clip_length,
        )
    val_loader = val_prepare = evaluator = None
    val_split = "val"
    if tcfg.val_every_epochs and cfg.get("data_val") is not None:
        val_frames = build_dataset(OmegaConf.merge(cfg.data, cfg.data_val))
        check_body_hash(val_frames, body.content_hash, what="the training body")
        val_set = clip_dataset(val_frames, clip_length, motion_prefix=prefix)  # frames once
        if len(val_set) == 0:
            logger.warning("the validation split is empty (of clips, in clip mode); skipped")
        else:
            val_bank = build_scene_bank(
                _scene_points(val_set, needs_scene),
                info.device,
                max_points_per_scene=max_pts,
                seed=seed,
            )
            val_prepare = StepPreparer(
                body.topology, info.device, val_bank, clip_length=clip_length
            )
            val_loader = build_loader(
                val_set,
                tcfg.loader(train=False),
                train=False,
                seed=seed,
                rank=info.rank,
                world_size=info.world_size,
                device=info.device,
                clip_length=clip_length,
            )
            evaluator = build_evaluator(
                body,
                val_frames,
                scene_metrics=tcfg.val_scene_metrics,
                sdf_cache_dir=cfg.paths.get("sdf_cache_dir"),
            )
            val_split = str(cfg.data_val.get("split", "val"))

    method = _instantiate(cfg.model)
    init = cfg.get("init")
    if init is not None and init.get("weights") and not (resume and last.is_file()):
        stored = load_checkpoint(init.weights).get("body_hash")
        if stored is not None and stored != body.content_hash:
            raise BodyMismatchError(
                f"init.weights={init.weights} was trained on body {stored[:12]} but the body "
                f"of this run is {body.content_hash[:12]}: use the same body.model_path"
            )
        load_initial_weights(
            method,
            init.weights,
            source_prefix=str(init.get("source_prefix") or ""),
            target_prefix=str(init.get("target_prefix") or ""),
        )
    method = method.to(info.device)
    loss = _instantiate(cfg.loss).to(info.device)
    n_params = sum(p.numel() for p in method.parameters())
    n_train = sum(p.numel() for p in method.parameters() if p.requires_grad)
    logger.info(
        "%s: %.2fM parameters (%.2fM trainable)",
        type(method).__name__,
        n_params / 1e6,
        n_train / 1e6,
    )
    trainer = Trainer(
        method=method,
        loss=loss,
        config=tcfg,
        train_loader=loader,
        prepare=prepare,
        output_dir=out,
        dist=info,
        config_yaml=text,
        seed=seed,
        val_loader=val_loader,
        val_prepare=val_prepare,
        evaluator=evaluator,
        val_split=val_split,
        body_hash=body.content_hash,
    )
    if resume:
        if last.is_file():
            trainer.resume(last)
        else:
            logger.warning("resume=true but %s does not exist: starting from scratch", last)
    if on_trainer is not None:
        on_trainer(trainer)
    try:
        result = trainer.fit(until_step=until_step)
    finally:
        trainer.close()
    logger.info("training %s at step %d (epoch %d)", result.stopped, result.step, result.epoch)
    return result
