"""Weight-only int8 checkpoints (sahmr.engine.quantize) against float references."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from sahmr.engine.checkpoint import load_checkpoint, save_checkpoint
from sahmr.engine.quantize import (
    dequantize_weight,
    expand_int8,
    quantize_state,
    quantize_weight,
)

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def test_quantize_weight_matches_a_per_channel_loop():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 2, 2)
    w[2] = 0.0  # an all-zero channel keeps scale 1 and zeros
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (5,)
    for c in range(5):
        amax = w[c].abs().max().item()
        s = amax / 127 if amax > 0 else 1.0
        assert scale[c].item() == pytest.approx(s, rel=1e-6)
        ref = torch.round(w[c] / s).clamp(-127, 127)
        assert torch.equal(q[c].float(), ref)
    back = dequantize_weight(q, scale)
    # rounding error at most half a step per entry
    assert ((back - w).abs() <= scale.view(-1, 1, 1, 1) / 2 + 1e-7).all()
    assert torch.equal(back[2], torch.zeros(3, 2, 2))


def test_state_split_and_expand_round_trip():
    state = {
        "big.weight": torch.randn(64, 128),
        "small.weight": torch.randn(4, 4),
        "bias": torch.randn(64),
        "count": torch.tensor(3),
    }
    packed = quantize_state(state, min_numel=1000)
    assert set(packed["model_int8"]) == {"big.weight"}
    assert packed["model"]["small.weight"].dtype == torch.float16
    assert packed["model"]["count"].dtype == torch.int64
    full = expand_int8({"format": "x", **packed})["model"]
    assert set(full) == set(state)
    rel = (full["big.weight"] - state["big.weight"]).norm() / state["big.weight"].norm()
    assert rel < 0.01
    bad = {"model": packed["model"], "model_int8": packed["model_int8"], "model_int8_scale": {}}
    with pytest.raises(ValueError, match=r"big\.weight"):
        expand_int8(bad)


def _export_tool():
    spec = importlib.util.spec_from_file_location("export_ckpt", TOOLS / "export_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_exported_int8_checkpoint_is_smaller_and_predicts_like_the_original(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.LazyLinear(32),
    )  # fmt: skip
    x = torch.randn(2, 3, 12, 12)
    ref = net(x)
    src = save_checkpoint(tmp_path / "c.pt", model=net, config="model: {}\n")
    tool = _export_tool()
    fp16, int8 = tmp_path / "fp16.pt", tmp_path / "int8.pt"
    assert tool.main([str(src), str(fp16)]) == 0
    assert tool.main([str(src), str(int8), "--int8"]) == 0
    assert int8.stat().st_size < 0.6 * fp16.stat().st_size
    state = load_checkpoint(int8)["model"]
    assert all(v.dtype != torch.int8 for v in state.values())
    with torch.no_grad():  # load the expanded weights into the same modules
        net.load_state_dict({k: v.float() for k, v in state.items()})
    out = net(x)
    assert ((out - ref).norm() / ref.norm()).item() < 0.02
