"""A training run assembled from the hydra config of ``tools/train.py`` (``configs/train.yaml``).

`train_from_config` builds the body, the training data (`build_train_data`: the DataLoader
path or the in-memory path of ``configs/loader/``), the validation data and evaluator
(`build_val_data`), the method (`build_method`, from ``init.weights`` when given) and the
loss, hands them to the loop (`sahmr.engine.trainer.Trainer`) and trains. Both splits get their
loader from one builder, `build_split_loader`. ``clip_length`` selects the data mode (frames,
or clips of T frames for temporal methods; see `sahmr.engine.data`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sahmr.data.smplx_targets import BodyMismatchError, check_body_hash
from sahmr.engine.checkpoint import load_checkpoint, load_initial_weights
from sahmr.engine.data import (
    StepPreparer,
    build_dataset,
    build_loader,
    build_scene_bank,
    clip_dataset,
)
from sahmr.engine.distributed import DistInfo, cleanup, init_distributed
from sahmr.engine.trainer import LAST, FitResult, Trainer
from sahmr.engine.trainer_config import TrainerConfig
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


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
    sdf_voxel_size: float = SDF_VOXEL_SIZE_M,
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

    body = _instantiate(cfg.body)
    loader, prepare = build_train_data(cfg, tcfg, body, info)
    val = build_val_data(cfg, tcfg, body, info)
    method = build_method(cfg, body, info.device, resuming=resume and last.is_file())
    if cfg.get("loader") is not None and cfg.loader.get("rcnet_once", False):
        # a frozen RCNet's outputs, once per sample, at the step's precision
        prepare.use_rcnet_store(
            method,
            bf16=tcfg.autocast_bf16(info.device),
            new_per_step=int(cfg.loader.get("rcnet_new_per_step", 0)),
            seed=seed + info.rank,
        )
    loss = _instantiate(cfg.loss).to(info.device)
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
        val_loader=val.loader if val is not None else None,
        val_prepare=val.prepare if val is not None else None,
        evaluator=val.evaluator if val is not None else None,
        val_split=val.split if val is not None else "val",
        body_hash=body.content_hash,
    )
    if info.is_main:  # only once the trainer accepted every setting: a bad one writes nothing
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(text, encoding="utf-8")
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


def build_split_loader(
    dataset: Dataset,
    cfg: DictConfig,
    tcfg: TrainerConfig,
    body: Any,
    info: DistInfo,
    *,
    train: bool,
    items: int | None = None,
) -> tuple[DataLoader, StepPreparer]:
    """The loader of one split (training or validation) and the step preparer of its batches,
    with the split's own scene bank.

    Args:
        dataset: The split (frames, or clips in clip mode).
        cfg: The run config (``seed``, ``needs_scene``, ``max_points_per_scene``,
            ``clip_length``).
        tcfg: The loop settings (batch sizes, workers).
        body: The training body (its topology).
        info: This process's place in the job (device, rank).
        train: Training (shuffled, resumable) or validation loader.
        items: Validation only: that many items spread evenly over the split (None: all).
    """
    seed = int(cfg.seed)
    clip_length = cfg.get("clip_length")
    bank = build_scene_bank(
        _scene_points(dataset, bool(cfg.get("needs_scene", True))),
        info.device,
        max_points_per_scene=cfg.get("max_points_per_scene"),
        seed=seed,
    )
    prepare = StepPreparer(body.topology, info.device, bank, clip_length=clip_length)
    loader = build_loader(
        dataset,
        tcfg.loader(train=train),
        train=train,
        seed=seed,
        rank=info.rank,
        world_size=info.world_size,
        device=info.device,
        clip_length=clip_length,
        items=items,
    )
    return loader, prepare


def build_train_data(
    cfg: DictConfig, tcfg: TrainerConfig, body: Any, info: DistInfo
) -> tuple[Any, Any]:
    """The training loader and its step preparer: the in-memory path when ``cfg.loader`` is
    set (``configs/loader/``), else the DataLoader path (`build_split_loader`)."""
    clip_length = cfg.get("clip_length")
    if cfg.get("loader") is not None:  # the in-memory data path (configs/loader/)
        from sahmr.engine.memory_data import build_memory_data

        return build_memory_data(
            _instantiate(cfg.loader),
            root=str(cfg.data.root),
            split=str(cfg.data.get("split", "train")),
            topology=body.topology,
            device=info.device,
            batch_size=tcfg.batch_size,
            seed=int(cfg.seed),
            rank=info.rank,
            world_size=info.world_size,
            needs_scene=bool(cfg.get("needs_scene", True)),
            max_points_per_scene=cfg.get("max_points_per_scene"),
            clip_length=clip_length,
            progress=tcfg.progress and info.is_main,
        )
    frames = build_dataset(cfg.data)
    check_body_hash(frames, body.content_hash, what="the training body (body=)")
    train_set = clip_dataset(
        frames,
        clip_length,
        stride=cfg.get("clip_stride"),
        motion_prefix=cfg.get("clip_motion_prefix", "seq_"),
    )
    return build_split_loader(train_set, cfg, tcfg, body, info, train=True)


@dataclass
class ValData:
    """What validation needs.

    Attributes:
        loader: The validation loader.
        prepare: Its step preparer (its own scene bank).
        evaluator: The shared body evaluator (`build_evaluator`).
        split: The split's name (validation frame names).
    """

    loader: DataLoader
    prepare: StepPreparer
    evaluator: Any
    split: str


def build_val_data(
    cfg: DictConfig, tcfg: TrainerConfig, body: Any, info: DistInfo
) -> ValData | None:
    """The validation loader, preparer and evaluator of ``cfg.data`` merged with
    ``cfg.data_val`` (every frame once, clips without overlap; with ``val_max_batches`` that
    many batches of frames spread evenly over the split, so every room counts); None when
    validation is off, there is no ``data_val``, or the split is empty."""
    if not ((tcfg.val_every_epochs or tcfg.val_every_steps) and cfg.get("data_val") is not None):
        return None
    frames = build_dataset(OmegaConf.merge(cfg.data, cfg.data_val))
    check_body_hash(frames, body.content_hash, what="the training body")
    val_set = clip_dataset(  # frames once
        frames, cfg.get("clip_length"), motion_prefix=cfg.get("clip_motion_prefix", "seq_")
    )
    if len(val_set) == 0:
        logger.warning("the validation split is empty (of clips, in clip mode); skipped")
        return None
    items = None  # val_max_batches: that many batches' worth of frames from every room
    if tcfg.val_max_batches is not None:
        items = tcfg.val_max_batches * tcfg.val_batch_size * info.world_size
    loader, prepare = build_split_loader(val_set, cfg, tcfg, body, info, train=False,
                                         items=items)  # fmt: skip
    evaluator = build_evaluator(
        body,
        frames,
        scene_metrics=tcfg.val_scene_metrics,
        sdf_cache_dir=cfg.paths.get("sdf_cache_dir"),
    )
    return ValData(loader, prepare, evaluator, str(cfg.data_val.get("split", "val")))


def build_method(cfg: DictConfig, body: Any, device: torch.device, *, resuming: bool) -> nn.Module:
    """The configured method on ``device``, started from ``cfg.init.weights`` when given
    (unless the run resumes from its own checkpoint).

    Raises:
        BodyMismatchError: The initial weights were trained on another body.
    """
    method = _instantiate(cfg.model)
    init = cfg.get("init")
    if init is not None and init.get("weights") and not resuming:
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
    method = method.to(device)
    n_params = sum(p.numel() for p in method.parameters())
    n_train = sum(p.numel() for p in method.parameters() if p.requires_grad)
    logger.info(
        "%s: %.2fM parameters (%.2fM trainable)",
        type(method).__name__,
        n_params / 1e6,
        n_train / 1e6,
    )
    return method
