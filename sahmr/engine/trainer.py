"""One training loop for every method: AdamW, warm-up + cosine, bf16 on CUDA, DDP, resumable.

`Trainer` runs epochs of ``method(inputs, targets) -> output``, ``loss(output, targets)``,
clipped AdamW steps over the method's generator parameters; methods with an adversarial prior
(`sahmr.engine.methods.AdversarialMethod`: HMR, VIBE) then get a second step, an Adam step of
``method.discriminator_step(output)`` over ``method.discriminator_parameters()``; methods whose
forward takes ``sample_keys`` (SPIN) get one key per frame. Logs scalars and crop grids to
TensorBoard; validates at epoch end through
the shared evaluator (`sahmr.engine.validation`); writes ``checkpoints/last.pt`` atomically
every ``ckpt_every`` steps, at every epoch end and when it stops (step limit, time budget), and
``best.pt`` when the tracked validation metric improves. With ``ema_decay`` a moving average
of the weights (`sahmr.engine.weight_average`) is what validation scores and checkpoints store
as ``model``; the trained weights travel beside it for resuming.

Resuming is bit-identical on CPU: the checkpoint holds model (with any state a method keeps in
its state dict, e.g. SPIN's fits dictionary) and its weight average, both optimizers and
schedulers, every RNG state and the position (epoch, batches consumed); the data order is a
function of ``(seed, epoch)`` only and the consumed batches are skipped (`sahmr.engine.data`).
Validation and image summaries fork the RNG states, so they never change the training trajectory.

The loop's settings are `sahmr.engine.trainer_config.TrainerConfig`, its parameter groups and
LR schedule `sahmr.engine.optimizers`; `sahmr.engine.assembly.train_from_config` builds
everything from the hydra config of ``tools/train.py`` and runs it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sahmr.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from sahmr.engine.data import ResumableSampler, Step, StepPreparer, start_epoch
from sahmr.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    any_rank,
    barrier,
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
from sahmr.engine.optimizers import (
    WarmupCosine,
    clip_groups,
    freeze_batchnorm,
    freeze_parameters,
    parameter_groups,
)
from sahmr.engine.trainer_config import TrainerConfig
from sahmr.engine.validation import ValidationResult, prediction_from_output, run_validation
from sahmr.engine.weight_average import WeightAverage
from sahmr.geometry.cameras import project
from sahmr.records import LossOutput

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


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
        self.bf16 = config.autocast_bf16(self.device)
        if config.frozen_parameters:
            n = freeze_parameters(method, config.frozen_parameters)
            logger.info("parameters frozen in %s: %d", ", ".join(config.frozen_parameters), n)
        self.main_params = generator_parameters(method)
        self.clip_groups = clip_groups(method, self.main_params, config.grad_clip_groups)
        if config.frozen_batchnorm:  # checked here, applied after every model.train()
            n = freeze_batchnorm(method, config.frozen_batchnorm)
            logger.info("BatchNorm frozen (eval mode) in %s: %d layers",
                        ", ".join(config.frozen_batchnorm), n)  # fmt: skip
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
        # the weights validated and saved as `model` (trainer.ema_decay; None: the trained ones)
        self.ema = WeightAverage(method, config.ema_decay) if config.ema_decay is not None else None
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
                model=self.method if self.ema is None else self.ema.state_dict(),
                trained_model=self.method if self.ema is not None else None,
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
        # `model` holds the average when the run kept one; the optimiser's weights beside it
        self.method.load_state_dict(ckpt.get("model_trained", ckpt["model"]))
        if self.ema is not None:
            if "model_trained" in ckpt:
                self.ema.load_state_dict(ckpt["model"])
            else:
                logger.warning("%s holds no weight average: it starts at its weights", path)
                self.ema = WeightAverage(self.method, self.ema.decay)
        elif "model_trained" in ckpt:
            logger.warning("%s was saved with a weight average (trainer.ema_decay) that this run "
                           "does not keep: training continues from its trained weights", path)
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
        self._average()
        self.scheduler.step()
        disc_loss = self.discriminator_step(output) if self.disc_optimizer is not None else None
        return StepResult(output, loss_out, grad_norm.detach(), disc_loss)

    def _average(self) -> None:
        """Move the weight average (``trainer.ema_decay``) towards the weights just stepped."""
        if self.ema is not None:
            self.ema.update(self.method)

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
        self._average()  # a skipped step left the weights as they were: the average follows
        self.scheduler.step()
        self._skipped = bad.long() if self._skipped is None else self._skipped + bad.long()
        return StepResult(output, loss_out, grad_norm.detach())

    def _clip(self, params: list[nn.Parameter]) -> Tensor:
        """Clip to ``grad_clip`` (if set), per group of `clip_groups` when configured; the
        global norm before clipping."""
        if not params:
            return torch.zeros((), device=self.device)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip else float("inf")
        if len(self.clip_groups) <= 1:
            return nn.utils.clip_grad_norm_(params, max_norm)
        with_grad = {id(p) for p in params}
        norms = []
        for group in self.clip_groups:
            ps = [p for p in group if id(p) in with_grad]
            if ps:
                norms.append(nn.utils.clip_grad_norm_(ps, max_norm).float())
        return torch.stack(norms).square().sum().sqrt()

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
        # the weights saved as `model` are the ones scored: the average when there is one
        averaged = self.ema.applied(self.method) if self.ema is not None else nullcontext()
        try:
            with averaged:
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
        self,
        sums: dict[str, Tensor],
        count: int,
        samples: int,
        dt: float,
        grad_norm: Tensor,
        wait_s: float = 0.0,
    ) -> None:
        """Log one window of steps: the mean of each loss term, the LR, the last gradient
        norm, samples/s and ``data_wait``, the fraction of the window's wall time the host
        spent waiting for the loader's next batch (near 1: the input limits the pace; near 0:
        the steps do)."""
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
        scalars["data_wait"] = min(1.0, wait_s / max(dt, 1e-9))
        self._log_scalars("train", scalars, self.step)
        self._log_jsonl({"split": "train", "epoch": self.epoch, "step": self.step, **scalars})
        logger.info(
            "step %d/%d loss %.4g lr %.3g %.1f samples/s, %.0f %% waiting for data",
            self.step,
            self.total_steps,
            scalars.get("loss", float("nan")),
            scalars["lr"],
            scalars["samples_per_s"],
            100.0 * scalars["data_wait"],
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
        wait_s = 0.0  # seconds of the window the host waited for the loader's next batch
        t_window = time.monotonic()
        if cfg.val_at_start and self.step == 0 and self.total_steps > 0:
            self.validate()  # the weights this run continues: its curve's first point
            validated_at = 0
        while self.epoch < cfg.max_epochs and self.step < self.total_steps:
            self.model.train()
            freeze_batchnorm(self.method, self.cfg.frozen_batchnorm)
            start_epoch(self.train_loader, self.seed, self.epoch, self.batch_in_epoch)
            stop = False
            batches = iter(self.train_loader)
            while True:
                t_wait = time.monotonic()
                batch = next(batches, None)
                if batch is None:
                    break
                wait_s += time.monotonic() - t_wait
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
                        sums, count, samples, time.monotonic() - t_window, res.grad_norm, wait_s
                    )
                    sums, count, samples, t_window = {}, 0, 0, time.monotonic()
                    wait_s = 0.0
                if cfg.image_every and self.step % cfg.image_every == 0:
                    self._log_images(step, res.output)
                if cfg.val_every_steps and self.step % cfg.val_every_steps == 0:
                    self.validate()
                    validated_at = self.step  # run_validation restores the train mode
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
                if (
                    cfg.val_every_epochs
                    and self.epoch % cfg.val_every_epochs == 0
                    and validated_at != self.step
                ):
                    self.validate()
                    validated_at = self.step
                self.save()
            elif stop:
                self.save()
            if stop:
                break
        # A run ended by its step count or its time budget is scored where it stopped (its
        # last, lowest-LR weights can be the best); an interrupted one resumes instead.
        validates = cfg.val_every_epochs or cfg.val_every_steps
        if stopped in ("done", "time") and validated_at != self.step and validates:
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
