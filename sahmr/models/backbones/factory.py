"""Convolutional image backbones returning one feature grid at a chosen stride.

Backbones come from torchvision (ResNets) and timm (HRNets). None downloads anything:
weights start random unless the user loads a local file with `load_backbone_weights`
(a torchvision/timm state dict, read with ``weights_only=True``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from sahmr.models.backbones._compat import import_timm, import_torchvision

logger = logging.getLogger(__name__)

_TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_TIMM_HRNETS = ("hrnet_w18_small", "hrnet_w18", "hrnet_w32", "hrnet_w48", "hrnet_w64")
BACKBONES: tuple[str, ...] = _TORCHVISION_RESNETS + _TIMM_HRNETS
"""Names `build_backbone` accepts."""
_RESNET_STAGES = {4: 1, 8: 2, 16: 3, 32: 4}  # output stride -> number of residual stages


class Backbone(nn.Module):
    """A 2-D CNN mapping images (B, 3, S, S) to one feature grid (B, C, S/r, S/r).

    Attributes:
        name: Backbone name.
        out_channels: C.
        out_stride: r.
    """

    def __init__(self, *, name: str, body: nn.Module, out_channels: int, out_stride: int,
                 feature_index: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.out_channels = out_channels
        self.out_stride = out_stride
        self._feature_index = feature_index

    def forward(self, image: Tensor) -> Tensor:
        """Features of normalised RGB images.

        Args:
            image: Tensor (B, 3, S, S), ImageNet-normalised.

        Returns:
            Tensor (B, C, S / out_stride, S / out_stride).
        """
        out = self.body(image)
        return out[self._feature_index] if self._feature_index is not None else out


def _resnet(name: str, out_stride: int) -> Backbone:
    tv = import_torchvision()
    net = getattr(tv.models, name)(weights=None)
    stages = _RESNET_STAGES[out_stride]
    layers = [net.conv1, net.bn1, net.relu, net.maxpool]
    layers += [getattr(net, f"layer{i}") for i in range(1, stages + 1)]
    last = getattr(net, f"layer{stages}")[-1]
    channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
    return Backbone(name=name, body=nn.Sequential(*layers), out_channels=channels,
                    out_stride=out_stride)


def _hrnet(name: str, out_stride: int) -> Backbone:
    timm = import_timm()
    strides = (2, 4, 8, 16, 32)
    index = strides.index(out_stride)
    net = timm.create_model(name, pretrained=False, features_only=True, out_indices=(index,))
    channels = int(net.feature_info.channels()[-1])
    return Backbone(name=name, body=net, out_channels=channels, out_stride=out_stride,
                    feature_index=0)


def build_backbone(name: str, *, out_stride: int = 32) -> Backbone:
    """Build a randomly initialised backbone.

    Args:
        name: One of `BACKBONES` (torchvision ``resnet*``, timm ``hrnet_*``).
        out_stride: Stride of the returned grid: 4, 8, 16 or 32 (ResNets are truncated after
            the stage reaching it; HRNets return the matching timm feature level).

    Returns:
        The `Backbone`.

    Raises:
        ValueError: For an unknown name or stride.
    """
    if out_stride not in _RESNET_STAGES:
        raise ValueError(f"out_stride must be one of {sorted(_RESNET_STAGES)}, got {out_stride}")
    if name in _TORCHVISION_RESNETS:
        return _resnet(name, out_stride)
    if name in _TIMM_HRNETS:
        return _hrnet(name, out_stride)
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


def load_backbone_weights(backbone: Backbone, path: str | Path, *, strict: bool = False) -> None:
    """Load a local torchvision/timm state dict into a backbone (no download, no unpickling).

    Keys of the full classification network (``layer1.0.conv1.weight``, ``fc.weight``) are
    matched to the truncated body; keys the body lacks (e.g. the classifier) are ignored.

    Args:
        backbone: The backbone to fill.
        path: A ``.pth``/``.pt`` file holding a state dict (optionally under ``state_dict``).
        strict: Raise if any backbone parameter is left unset.

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: In strict mode, naming the missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = backbone.body.state_dict()
    if isinstance(backbone.body, nn.Sequential):  # truncated ResNet: indices <- names
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        rename = {name: str(i) for i, name in enumerate(names)}
        mapped = {}
        for k, v in state.items():
            head, _, rest = k.partition(".")
            if head in rename:
                mapped[f"{rename[head]}.{rest}"] = v
        state = mapped
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if strict and missing:
        raise RuntimeError(f"{len(missing)} backbone parameters missing in {path}: {missing[:5]}")
    own.update(usable)
    backbone.body.load_state_dict(own)
    logger.info("loaded %d/%d backbone tensors from %s", len(usable), len(own), path)
