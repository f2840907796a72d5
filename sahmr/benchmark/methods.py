"""What the speed benchmark measures: the methods built from the shipped configs (random
weights or a checkpoint, ``--tiny`` smoke-test sizes) and the speed-up variants (bf16 autocast,
torch.compile, CUDA graphs)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

OPTIMISATION = "optimisation"
"""The name of the PROX-style fitting baseline among the benchmarked methods."""


@dataclass(frozen=True)
class MethodSpec:
    """How to build a method from the shipped configs.

    Attributes:
        model: ``configs/model/<model>.yaml``.
        family: Stage layout (`sahmr.benchmark.stages.LAYOUTS`).
        rcnet: ``configs/model/<rcnet>.yaml`` placed at ``model.rcnet`` (SA-HMR), or None.
        overrides: Hydra overrides always applied.
        tiny: Extra overrides of ``--tiny`` (smoke tests: tiny widths, ResNet-18 backbones).
    """

    model: str
    family: str
    rcnet: str | None = None
    overrides: tuple[str, ...] = ()
    tiny: tuple[str, ...] = ()


_TINY_SAHMR = (
    "model.mesh_net.backbone.name=resnet18", "model.mesh_net.backbone.out_stride=8",
    "model.mesh_net.encoder.widths=[16,16,8]", "model.mesh_net.encoder.num_layers=1",
    "model.mesh_net.encoder.num_heads=2", "model.rcnet.backbone.name=resnet18",
    "model.rcnet.backbone.out_stride=4", "model.rcnet.neck.out_channels=8",
    "model.rcnet.neck.num_upsamples=0", "model.rcnet.unet.channels=[8,8]",
    "model.rcnet.unet.blocks_per_level=1", "model.rcnet.depth_hidden=16",
)  # fmt: skip
# (RCNet derives its neck's and sparse U-Net's in_channels: 64 from the stride-4 ResNet-18, 11.)
_TINY_METRO = (
    "model.backbone.name=resnet18", "model.backbone.out_stride=8",
    "model.encoder.widths=[16,16,8]", "model.encoder.num_layers=1", "model.encoder.num_heads=2",
)  # fmt: skip
_TINY_HMR = (
    "model.backbone.name=resnet18", "model.backbone.out_stride=4",
    "model.regressor.feature_dim=64", "model.regressor.hidden_dim=32",
)  # fmt: skip
# predict() needs neither HMR's discriminator nor its 20k-sample pose library.
_NO_ADVERSARY = ("model.discriminator=null", "model.pose_library=null")

METHODS: dict[str, MethodSpec] = {
    "sahmr_small": MethodSpec("sahmr_small", "sahmr", rcnet="rcnet_small", tiny=_TINY_SAHMR),
    "sahmr_paper": MethodSpec("sahmr_paper", "sahmr", rcnet="rcnet_paper", tiny=_TINY_SAHMR),
    "metro_small": MethodSpec("metro_small", "metro", tiny=_TINY_METRO),
    "metro_paper": MethodSpec("metro_paper", "metro", tiny=_TINY_METRO),
    "hmr": MethodSpec("hmr", "hmr", overrides=_NO_ADVERSARY, tiny=_TINY_HMR),
}
"""Benchmarkable methods; ``optimisation`` is the PROX-style fitting baseline."""
DEFAULT_METHODS = "sahmr_small,sahmr_paper,metro_small,hmr,optimisation"


def compose_method(
    spec: MethodSpec, *, tiny: bool, extra: Sequence[str] = (), config_dir: Path
) -> Any:
    """The composed config (``model`` + ``body``) of a method from the configs in ``config_dir``
    (the repository's ``configs/``)."""
    from hydra import compose, initialize_config_dir

    overrides = [f"+model={spec.model}", "+body=license_free"]
    if spec.rcnet is not None:
        overrides.append(f"+model@model.rcnet={spec.rcnet}")
    overrides += [*spec.overrides, *(spec.tiny if tiny else ()), *extra]
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(overrides=overrides)


def build_method(
    name: str,
    *,
    tiny: bool,
    extra: Sequence[str],
    checkpoint: Path | None,
    device: torch.device,
    config_dir: Path,
) -> torch.nn.Module:
    """The method in eval mode on ``device``, gradients off (random weights or a checkpoint)."""
    if checkpoint is not None:
        from sahmr.engine.checkpoint import load_method

        # overrides change the checkpoint's stored config (tools/export_checkpoint.py --set)
        model, _ = load_method(checkpoint, device, settings=extra)
    else:
        from hydra.utils import instantiate

        model = instantiate(
            compose_method(METHODS[name], tiny=tiny, extra=extra, config_dir=config_dir).model
        )
    return model.to(device).eval().requires_grad_(False)


@dataclass(frozen=True)
class Variant:
    """One setting of the speed-ups.

    Attributes:
        bf16: bfloat16 autocast.
        compile: torch.compile of the layout's submodules.
        graphs: CUDA graphs of the layout's static submodules.
    """

    bf16: bool = False
    compile: bool = False
    graphs: bool = False

    @property
    def name(self) -> str:
        """``eager`` or the flags joined by ``+``."""
        on = [k for k in ("bf16", "compile", "graphs") if getattr(self, k)]
        return "+".join(on) if on else "eager"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``eager`` or ``+``-joined flags among ``bf16``, ``compile``, ``graphs``."""
        flags = {f.strip() for f in text.split("+") if f.strip()} - {"eager"}
        unknown = flags - {"bf16", "compile", "graphs"}
        if unknown:
            raise ValueError(f"unknown variant flag(s) {sorted(unknown)} in {text!r}")
        return cls(**{f: True for f in flags})


def autocast_factory(variant: Variant, device: torch.device) -> Callable[[], Any]:
    """Context factory: bf16 autocast for the variant, else a no-op."""
    if not variant.bf16:
        return contextlib.nullcontext
    # No cast cache: cached weight casts would be freed under a captured CUDA graph.
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
