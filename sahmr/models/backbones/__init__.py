"""Image backbones from maintained libraries (torchvision, timm); see `build_backbone`."""

from sahmr.models.backbones.factory import (
    BACKBONES,
    Backbone,
    build_backbone,
    load_backbone_weights,
)

__all__ = ["BACKBONES", "Backbone", "build_backbone", "load_backbone_weights"]
