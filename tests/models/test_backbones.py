import pytest
import torch

from sahmr.models.backbones import build_backbone, load_backbone_weights
from sahmr.models.backbones._compat import import_torchvision


@pytest.mark.parametrize("stride", [8, 32])
def test_resnet_grid_shapes(stride):
    bb = build_backbone("resnet18", out_stride=stride)
    out = bb(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, bb.out_channels, 64 // stride, 64 // stride)


def test_unknown_name_and_stride():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="out_stride"):
        build_backbone("resnet18", out_stride=64)


def test_local_weights_load_into_truncated_resnet(tmp_path):
    tv = import_torchvision()
    torch.manual_seed(0)
    full = tv.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    bb = build_backbone("resnet18", out_stride=8)
    load_backbone_weights(bb, path, strict=True)
    x = torch.randn(1, 3, 64, 64)
    full.eval(), bb.eval()
    ref = full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))
    assert torch.allclose(bb(x), ref, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(bb, tmp_path / "missing.pth")
