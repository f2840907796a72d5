"""tools/train_shape_net.py and tools/export_checkpoint.py --shape-net on a generated set."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from engine_testkit import TOOLS, load_tool, run_tool

from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint, load_method


@pytest.fixture(scope="module")
def shape_net_file(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shape_net") / "shape.pt"
    code = load_tool("train_shape_net").main([
        str(out), "--data", str(tiny_dataset), "--train-frames", "8", "--val-frames", "4",
        "--steps", "4", "--batch-size", "4", "--val-every", "2", "--size", "32",
    ])  # fmt: skip
    assert code == 0
    return out


def test_train_tool_writes_a_shape_net_checkpoint_and_its_history(shape_net_file):
    ckpt = load_checkpoint(shape_net_file)
    cfg = checkpoint_config(ckpt, shape_net_file)
    assert cfg.model._target_ == "sahmr.models.shape_net.CropShapeNet" and cfg.model.size == 32
    report = json.loads(shape_net_file.with_suffix(".json").read_text())
    assert report["train_frames"] == 8 and report["val_frames"] == 4
    assert [h["step"] for h in report["history"]] == [0, 2, 4]
    assert report["best"]["shape_mm"] == min(h["shape_mm"] for h in report["history"])
    # the saved weights are the best ones: scored again, they give the best val figure
    assert ckpt["metrics"]["val_shape_mm"] == pytest.approx(report["best"]["shape_mm"])


def test_train_tool_continues_from_init(shape_net_file, tiny_dataset, tmp_path):
    out = tmp_path / "again.pt"
    code = load_tool("train_shape_net").main([
        str(out), "--data", str(tiny_dataset), "--train-frames", "8", "--val-frames", "4",
        "--steps", "1", "--batch-size", "4", "--init", str(shape_net_file),
    ])  # fmt: skip
    assert code == 0
    first = json.loads(shape_net_file.with_suffix(".json").read_text())["best"]["shape_mm"]
    again = json.loads(out.with_suffix(".json").read_text())["history"][0]["shape_mm"]
    assert again == pytest.approx(first, rel=1e-5)  # step 0 scores the initial weights


def test_export_merges_the_shape_net_and_keeps_every_other_weight(
    shape_net_file, shipped_checkpoint, tiny_dataset, tmp_path
):
    out = tmp_path / "with_shape.pt"
    load_tool("export_checkpoint").export(
        shipped_checkpoint, out, shape_net=shape_net_file, int8=True,
        settings=["model.rcnet.depth_hypotheses=[]"],
    )  # fmt: skip
    plain, _ = load_method(shipped_checkpoint)
    merged, cfg = load_method(out)
    assert cfg.model.shape_net._target_ == "sahmr.models.shape_net.CropShapeNet"
    assert merged.shape_net is not None and plain.shape_net is None
    a, b = plain.state_dict(), merged.state_dict()
    assert set(b) - set(a) == {k for k in b if k.startswith("shape_net.")}
    for k in a:  # re-exporting an int8 file at int8 is exact
        assert torch.equal(a[k], b[k]), k
    # the merged net is the trained one (up to int8 storage of its larger kernels)
    own = load_checkpoint(shape_net_file)["model"]
    for k, v in own.items():
        got = b["shape_net." + k]
        if not v.is_floating_point():
            assert torch.equal(got, v), k
            continue
        step = float(v.abs().max()) / 127 + 1e-6  # at most half an int8 step off
        torch.testing.assert_close(got, v.float(), atol=step, rtol=1e-3)


def test_export_refuses_parts_that_do_not_fit(shape_net_file, shipped_checkpoint, tmp_path):
    cases = [
        (shipped_checkpoint, shipped_checkpoint, "not sahmr.models.shape_net.CropShapeNet"),
        (shape_net_file, shape_net_file, "takes no shape net"),
    ]
    for src, part, message in cases:
        res = run_tool([sys.executable, str(TOOLS / "export_checkpoint.py"), str(src),
                        str(tmp_path / "x.pt"), "--shape-net", str(part)])  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert message in res.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/set"], "not a generated set"),
        (["--data", "{data}", "--steps", "0"], "--steps must be >= 1"),
        (["--data", "{data}", "--size", "100"], "multiple of 32"),
        (["--data", "{data}", "--init", "/nonexistent.pt"], "not a checkpoint file"),
    ],
)
def test_train_tool_refuses_bad_inputs_in_one_line(args, message, tiny_dataset, tmp_path):
    out = tmp_path / "s.pt"
    args = [a.format(data=tiny_dataset) for a in args]
    res = run_tool([sys.executable, str(TOOLS / "train_shape_net.py"), str(out), *args])
    assert res.returncode == 2
    assert message in res.stderr.strip().splitlines()[-1]
    assert not out.exists()
