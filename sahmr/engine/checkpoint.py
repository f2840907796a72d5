"""Training checkpoints: atomic writes, safe loading, RNG state, method loading.

A checkpoint is one ``torch.save`` dict::

    format    "sahmr.checkpoint"
    version   1
    config    the resolved hydra config as YAML text
    model     state_dict of the (unwrapped) method; float16 in exported files. A run that keeps
              a weight average (``trainer.ema_decay``) stores the average here: the weights
              it validated, which every reader (export, evaluation, ``init.weights``) takes
    model_trained   that run's weights as the optimiser left them (resuming it only; absent
              otherwise and in exported files)
    optimizer, scheduler   state dicts (absent in exported files)
    discriminator_optimizer, discriminator_scheduler   the adversarial prior's second
              optimiser and its schedule (methods with a discriminator; absent otherwise)
    rng       per-rank RNG states (python, numpy, torch, cuda) as tensors / ints / lists
    epoch, step, batch_in_epoch   position of the run (epoch and batches consumed in it)
    metrics   {"best": float|None, "best_name": str, "last": {name: float}}

Every value is a tensor, number, string, list or dict, so ``torch.load(weights_only=True)``
reads it: nothing is unpickled by type.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pickle
import random
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sahmr.atomic_write import atomic_open
from sahmr.engine.quantize import expand_int8
from sahmr.engine.safe_config import UnsafeConfigError as UnsafeConfigError  # re-exported
from sahmr.engine.safe_config import (
    check_stored_config,
    drop_machine_local_paths,
    rename_moved_targets,
)

logger = logging.getLogger(__name__)

FORMAT = "sahmr.checkpoint"
VERSION = 1


# ---------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """The RNG state of this process: python, numpy, torch CPU and every CUDA device.

    Returns:
        A dict of tensors, ints, floats and lists only (``weights_only``-loadable).
    """
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [int(version), [int(x) for x in mt], gauss],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored when devices match)."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in mt), gauss))
    n = state["numpy"]
    keys = np.asarray(n["keys"].numpy(), dtype=np.uint32)
    legacy = (n["name"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["gauss"]))
    np.random.set_state(legacy)  # noqa: NPY002 (the global legacy RNG is what we restore)
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([c.to(torch.uint8).cpu() for c in cuda])
        else:
            logger.warning(
                "checkpoint holds %d CUDA RNG states for %d devices; not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


# ---------------------------------------------------------------------------- files


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this machine (or cannot be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists under another user, or unknown: keep its files
    return True


def _temp_prefix(path: Path, pid: int | None = None) -> str:
    """Prefix of `atomic_torch_save`'s temporary files: hidden, naming host and writer pid."""
    host = socket.gethostname().replace(".", "_") or "host"
    return f".{path.name}.{host}.{os.getpid() if pid is None else pid}."


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temporary files a killed `atomic_torch_save` of ``path`` left behind.

    Only files written on this host by a process that no longer exists are removed; a live
    writer's (or another machine's) temporary file is left alone.

    Args:
        path: The target file whose leftovers are looked for (in its folder).

    Returns:
        The files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    head = _temp_prefix(path, pid=0)[: -len("0.")]  # ".<name>.<host>."
    removed: list[Path] = []
    for cand in path.parent.glob(f"{glob.escape(head)}*.tmp"):
        pid_text = cand.name[len(head) :].split(".", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        try:
            cand.unlink()
        except OSError as exc:
            logger.warning("cannot remove stale temporary file %s: %s", cand, exc)
            continue
        removed.append(cand)
        logger.info("removed %s, left by a killed writer (pid %s)", cand, pid_text)
    return removed


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the target folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact, never a truncated one; the temporary
    files of earlier killed writers of the same path are removed first
    (`remove_stale_temps`). The file gets the usual mode of a new file (0666 less the umask,
    e.g. 0644), not the 0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    with atomic_open(path, prefix=_temp_prefix(path), fsync=True) as fh:
        torch.save(obj, fh)
    return path


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    config: str | DictConfig,
    trained_model: nn.Module | Mapping[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    discriminator_optimizer: torch.optim.Optimizer | None = None,
    discriminator_scheduler: Any | None = None,
    rng: list[dict[str, Any]] | dict[str, Any] | None = None,
    epoch: int = 0,
    step: int = 0,
    batch_in_epoch: int = 0,
    metrics: Mapping[str, Any] | None = None,
    body_hash: str | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: Target file (``.pt``).
        model: The method (unwrapped, not DDP) or its state dict.
        config: The resolved config (YAML text, or a DictConfig that is resolved here).
        trained_model: With a weight average in ``model``: the weights the optimiser moves
            (stored as ``model_trained``, for resuming).
        optimizer: Optional optimizer whose state is saved.
        scheduler: Optional LR scheduler whose state is saved.
        discriminator_optimizer: Optional second optimiser (an adversarial prior's).
        discriminator_scheduler: Optional LR scheduler of the second optimiser.
        rng: RNG states (one dict per rank, or one dict), see `capture_rng_state`.
        epoch: Epoch in progress (or the next epoch when ``batch_in_epoch`` is 0).
        step: Optimiser steps done.
        batch_in_epoch: Batches of ``epoch`` already consumed.
        metrics: Best / last validation metrics.
        body_hash: Content hash of the body model the method was trained with
            (`sahmr.body.BodyModel.content_hash`); data and fine-tuning runs on another body
            are refused against it.

    Returns:
        The path written.
    """
    if isinstance(config, DictConfig):
        config = OmegaConf.to_yaml(config, resolve=True)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": str(config),
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "epoch": int(epoch),
        "step": int(step),
        "batch_in_epoch": int(batch_in_epoch),
        "metrics": dict(metrics or {}),
    }
    if trained_model is not None:
        trained = trained_model.state_dict() if isinstance(trained_model, nn.Module) \
            else dict(trained_model)  # fmt: skip
        ckpt["model_trained"] = {k: v.detach().cpu() for k, v in trained.items()}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if discriminator_optimizer is not None:
        ckpt["discriminator_optimizer"] = discriminator_optimizer.state_dict()
    if discriminator_scheduler is not None:
        ckpt["discriminator_scheduler"] = discriminator_scheduler.state_dict()
    if rng is not None:
        ckpt["rng"] = rng if isinstance(rng, list) else [rng]
    if body_hash is not None:
        ckpt["body_hash"] = str(body_hash)
    return atomic_torch_save(ckpt, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a sahmr checkpoint (unreadable, or holding pickled objects, which are
            refused), or a newer version. The message is one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL (\S+)", text)
        if found is None and "unsupported global" not in text.lower():  # garbage, truncated
            why = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text,
                            re.DOTALL)  # fmt: skip
            detail = " ".join((why.group(1) if why else text).split())[:200]
            raise ValueError(f"{path}: not a readable checkpoint file ({detail})") from exc
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path}: refused: it holds pickled Python objects{what} that only a full unpickle "
            "could build, and unpickling a shared file can run its code (a sahmr checkpoint "
            "holds tensors, numbers, text, lists and dicts only)"
        ) from exc
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(
            f"{path}: not a readable checkpoint file ({type(exc).__name__}: {detail})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    if int(ckpt.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt['version']} > supported {VERSION}")
    if not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path}: the checkpoint holds no model weights")
    try:
        return expand_int8(ckpt)  # shipped checkpoints may store weights as int8
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def checkpoint_config(ckpt: Mapping[str, Any], source: str | Path = "checkpoint") -> DictConfig:
    """The config stored in a checkpoint, as a DictConfig, checked before anything uses it.

    A checkpoint is data from whoever shared it: its config is refused unless every
    ``_target_`` in it names one of the project's own classes and it uses no OmegaConf
    resolver (`sahmr.engine.safe_config.check_stored_config`), so hydra cannot be made to
    call anything else when the method (or its body model) is built from it.

    Args:
        ckpt: The checkpoint dict (`load_checkpoint`).
        source: The checkpoint's file, named in errors.

    Raises:
        ValueError: No config, or not a mapping.
        UnsafeConfigError: (a ValueError) a refused ``_target_`` or resolver.
    """
    text = ckpt.get("config")
    if not isinstance(text, str):
        raise ValueError(f"{source}: the checkpoint holds no config text")
    try:
        cfg = OmegaConf.create(text)
    except Exception as exc:  # omegaconf/yaml raise several types for malformed text
        detail = " ".join(str(exc).split())
        raise ValueError(f"{source}: unreadable config ({type(exc).__name__}: {detail})") from exc
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{source}: checkpoint config is not a mapping")
    rename_moved_targets(cfg, source)
    check_stored_config(cfg, source)
    drop_machine_local_paths(cfg, source)
    return cfg


def float_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict with floating tensors cast to float32 (reads fp16 exports)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_initial_weights(
    method: nn.Module,
    path: str | Path,
    *,
    source_prefix: str = "",
    target_prefix: str = "",
) -> dict[str, list[str]]:
    """Start a method from another checkpoint's weights (fine-tuning, staged training).

    Keys of the checkpoint's ``model`` state that start with ``source_prefix`` have it replaced
    by ``target_prefix`` and are loaded into ``method`` where the method has that key; the rest
    keep their initial values. E.g. ``source_prefix="rcnet."`` starts an RCNet run from the
    RCNet inside an exported SA-HMR checkpoint, ``source_prefix="hmr."`` starts VIBE's image
    encoder and regressor from a SPIN run. fp16 exports are cast to the method's dtypes.

    Args:
        method: The freshly built method (not DDP-wrapped).
        path: A training or exported checkpoint (``torch.load(weights_only=True)``).
        source_prefix: Prefix selecting (and removed from) the checkpoint's keys.
        target_prefix: Prefix put in front of the selected keys.

    Returns:
        ``{"loaded": [...], "missing": [...], "unused": [...]}``: method keys loaded, method
        keys left at their initial values, selected checkpoint keys the method has no use for.

    Raises:
        ValueError: No key matched, or a matching key has a different shape.
    """
    state = load_checkpoint(path)["model"]
    own = method.state_dict()
    picked: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if not key.startswith(source_prefix):
            continue
        name = target_prefix + key[len(source_prefix) :]
        if name not in own:
            unused.append(key)
            continue
        if tuple(own[name].shape) != tuple(value.shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, the method's {name} has "
                f"{tuple(own[name].shape)}"
            )
        picked[name] = value.to(own[name].dtype) if value.is_floating_point() else value
    if not picked:
        raise ValueError(
            f"{path}: no weights under prefix {source_prefix!r} match the method's parameters"
        )
    method.load_state_dict(picked, strict=False)
    missing = [k for k in own if k not in picked]
    logger.info(
        "initial weights from %s: %d tensors loaded, %d left as built, %d unused",
        path,
        len(picked),
        len(missing),
        len(unused),
    )
    return {"loaded": sorted(picked), "missing": missing, "unused": unused}


def save_refit(path: str | Path, method: nn.Module, config: DictConfig, report: dict,
               metric: str) -> None:  # fmt: skip
    """Write a CPU refit's result (``tools/refit_head.py``, ``tools/refit_voter.py``): the
    training-format checkpoint at ``path`` (step ``report["best_step"]``, ``metric`` =
    ``report["best_val_mm"]``) and the whole report beside it as ``<path>.json``; print the
    report without its history."""
    path = Path(path)
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model=method, config=config, step=report["best_step"],
                    metrics={metric: report["best_val_mm"]})  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")


def refit_saver(path: str | Path, method: nn.Module, config: DictConfig,
                metric: str) -> Callable[[dict], None]:  # fmt: skip
    """The ``on_best`` callback of a CPU refit (``tools/refit_head.py``,
    ``tools/refit_voter.py``): each call writes the training-format checkpoint at ``path``
    with the validation row's step and ``metric = row["val_mm"]``, so a stopped refit keeps
    its best weights (`save_refit` writes the final result the same way)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(row: dict) -> None:
        save_checkpoint(path, model=method, config=config, step=row["step"],
                        metrics={metric: row["val_mm"]})  # fmt: skip

    return save


def apply_settings(cfg: DictConfig, settings: Sequence[str], flag: str = "--set") -> None:
    """Change a checkpoint's stored config in place by ``KEY=VALUE`` items (the value parsed as
    YAML), e.g. ``model.rcnet.roi_refinements=2``: an inference option stored with the weights
    (``tools/export_checkpoint.py --set``) or tried without storing it (`load_method`).

    A new leaf in an existing section is added (an option added after the checkpoint was
    trained; a wrong name fails when the model is built from the config).

    Raises:
        ValueError: An item that is not ``KEY=VALUE``, or a key whose section the config lacks
            (one line naming ``flag`` and the item).
    """
    import yaml

    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        parent = key.rpartition(".")[0]
        if parent and not isinstance(OmegaConf.select(cfg, parent, default=None), DictConfig):
            raise ValueError(f"{flag} {key}: the checkpoint's config has no section {parent}")
        OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)


def load_method(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    strict: bool = True,
    settings: Sequence[str] = (),
) -> tuple[nn.Module, DictConfig]:
    """Build the checkpoint's method from its config (``cfg.model``) and load its weights.

    Args:
        path: A training checkpoint or an exported (fp16) one.
        device: Where the method goes.
        strict: Passed to ``load_state_dict``.
        settings: ``KEY=VALUE`` changes of the stored config before the method is built
            (`apply_settings`), e.g. ``model.rcnet.depth_hypotheses=[]``; the file is unchanged.

    Returns:
        ``(method in eval mode on device, config)``.
    """
    from hydra.utils import instantiate

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)  # refuses foreign _target_s before instantiate
    if "model" not in cfg:
        raise ValueError(f"{path}: the checkpoint's config has no model")
    if settings:
        apply_settings(cfg, settings, flag="setting")
        check_stored_config(cfg, path)  # a setting may not bring a foreign _target_ in either
    method = instantiate(cfg.model)
    method.load_state_dict(float_state_dict(ckpt["model"]), strict=strict)
    method.to(device).eval()
    logger.info("loaded %s (step %s)", path, ckpt.get("step"))
    return method, cfg
