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


def test_precisions_keep_a_small_fine_tune_that_int8_drops():
    """A fine-tune's small moves (a tenth of an int8 step) vanish in an int8 re-export and
    survive under an fp16 path; the longest path decides, and an unchanged int8 tensor
    re-quantises to itself."""
    torch.manual_seed(0)
    start = {
        "net.a.weight": torch.randn(64, 128),
        "net.enc.weight": torch.randn(64, 128),
        "other.weight": torch.randn(64, 128),
    }
    shipped = expand_int8({"format": "x", **quantize_state(start)})["model"]  # on the grid
    step = shipped["net.a.weight"].abs().amax(dim=1, keepdim=True) / 127
    moved = dict(shipped)
    # every weight but the channel's largest moves a tenth of a step (scales unchanged)
    nudge = 0.1 * step * torch.sign(torch.randn(64, 128))
    top = shipped["net.a.weight"].abs() == shipped["net.a.weight"].abs().amax(1, keepdim=True)
    moved["net.a.weight"] = shipped["net.a.weight"] + torch.where(top, 0.0, nudge)

    plain = expand_int8({"format": "x", **quantize_state(moved)})["model"]
    assert torch.equal(plain["net.a.weight"], shipped["net.a.weight"])  # the move is gone

    precisions = {"net": "fp16", "net.enc": "int8"}
    mixed = quantize_state(moved, precisions=precisions)
    assert set(mixed["model_int8"]) == {"net.enc.weight", "other.weight"}
    back = expand_int8({"format": "x", **mixed})["model"]
    err = (back["net.a.weight"] - moved["net.a.weight"]).abs()
    assert (err <= 1e-3 * moved["net.a.weight"].abs() + 1e-6).all()  # float16 keeps the move
    for name in ("net.enc.weight", "other.weight"):  # untouched: re-quantised to themselves
        assert torch.equal(back[name], shipped[name])
    with pytest.raises(ValueError, match="precisions must be one of"):
        quantize_state(moved, precisions={"net": "fp8"})
    with pytest.raises(ValueError, match="no tensor under"):
        quantize_state(moved, precisions={"nett": "fp16"})


def test_export_tool_keeps_fp16_under_a_path(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 128))
    src = save_checkpoint(tmp_path / "c.pt", model=net, config="model: {}\n")
    tool = _export_tool()
    dst = tmp_path / "mixed.pt"
    assert tool.main([str(src), str(dst), "--int8", "--fp16-under", "0"]) == 0
    raw = torch.load(dst, weights_only=True)
    assert set(raw["model_int8"]) == {"1.weight"}
    assert raw["model"]["0.weight"].dtype == torch.float16
    assert raw["exported"]["precisions"] == {"0": "fp16"}
    with pytest.raises(SystemExit):
        tool.main([str(src), str(tmp_path / "x.pt"), "--fp16-under", "0"])  # needs --int8
    assert not (tmp_path / "x.pt").exists()
