"""The method an inference run uses: the shipped checkpoint or a given one, checked before any
slow work and restored in eval mode (`load_method_checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sahmr.inference.errors import CheckpointError, require_file


@dataclass
class LoadedMethod:
    """A method restored from a checkpoint.

    Attributes:
        module: The method (eval mode) with ``predict(inputs) -> BodyPrediction``.
        name: Method name (``--method``, or the checkpoint's model class).
        checkpoint: The file.
        config: The checkpoint's resolved config (OmegaConf DictConfig).
        device: Where it runs.
    """

    module: nn.Module
    name: str
    checkpoint: Path
    config: Any
    device: torch.device


_CHECKPOINT_PACKAGE = "sahmr"
_CHECKPOINT_FOLDER = "checkpoints"


def bundled_checkpoint(method: str = "sahmr") -> Path:
    """The shipped checkpoint of a method: ``sahmr/checkpoints/<method>_small.pt`` (or
    ``<method>.pt``), found with importlib.resources.

    Raises:
        CheckpointError: None is shipped for the method; the message names the files looked
            for and how to pass one.
    """
    from importlib.resources import files

    folder = files(_CHECKPOINT_PACKAGE).joinpath(_CHECKPOINT_FOLDER)
    tried = [folder.joinpath(f"{method}_small.pt"), folder.joinpath(f"{method}.pt")]
    for cand in tried:
        if cand.is_file():
            return Path(str(cand))
    raise CheckpointError(
        f"no shipped checkpoint for method {method!r}: neither {tried[0].name} nor "
        f"{tried[1].name} is in {folder}. Train one with tools/train.py (its experiment in "
        f"configs/exp/: exp={method}_small or exp={method}) and pass --checkpoint PATH"
    )


def check_method_checkpoint(path: str | Path) -> Path:
    """Check a checkpoint before any slow work: a readable, weights-only sahmr file whose
    stored config builds only the project's own classes (`sahmr.engine.safe_config`).

    Returns:
        The path.

    Raises:
        MissingFileError: No file.
        CheckpointError: Unreadable, holding pickled objects, or a refused config (one line
            naming the file).
    """
    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    p = require_file(path, "checkpoint")
    try:
        checkpoint_config(load_checkpoint(p), p)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(
            text if text.startswith(str(p)) else f"cannot load checkpoint {p}: {text}"
        ) from exc
    return p


def load_method_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", *, name: str | None = None
) -> LoadedMethod:
    """Build a method from a sahmr checkpoint (`sahmr.engine.checkpoint.load_method`).

    Raises:
        MissingFileError: No file.
        CheckpointError: Not a sahmr checkpoint, or the model cannot be built / loaded, or it
            has no ``predict``.
    """
    from sahmr.engine.checkpoint import load_method

    p = require_file(path, "checkpoint")
    try:
        module, cfg = load_method(p, device)
    except (ValueError, RuntimeError, KeyError, TypeError, EOFError) as exc:
        text = " ".join(str(exc).split())  # one line; engine errors already name the file
        raise CheckpointError(
            text if text.startswith(str(p)) else f"cannot load checkpoint {p}: {text}"
        ) from exc
    except Exception as exc:  # hydra wraps instantiation errors in its own types
        text = " ".join(str(exc).split())[:500]
        raise CheckpointError(f"cannot build the model of {p}: {text}") from exc
    if not callable(getattr(module, "predict", None)):
        raise CheckpointError(
            f"{p}: {type(module).__name__} has no predict(inputs) -> BodyPrediction (a root/"
            "contact network alone cannot place a body)"
        )
    if name is None:
        target = str(cfg.get("model", {}).get("_target_", type(module).__name__))
        name = target.rsplit(".", 1)[-1].lower()
    return LoadedMethod(module, name, p, cfg, torch.device(device))
