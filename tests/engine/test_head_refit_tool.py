"""tools/refit_head.py on a generated set: spread frames, keyed caches, --val-data, saves."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import load_tool

import sahmr.engine.head_refit as head_refit
from sahmr.engine.data import spread_indices

ARGS = ["--train-frames", "4", "--val-frames", "2", "--steps", "2", "--batch", "2",
        "--val-every", "1", "--lr", "1e-3"]  # fmt: skip


@pytest.fixture()
def shipped():
    from sahmr.inference.method import bundled_checkpoint

    return bundled_checkpoint("sahmr")


def _counting(monkeypatch) -> list:
    calls = []
    real = head_refit.collect_head_inputs

    def count(model, steps):
        calls.append(1)
        return real(model, steps)

    monkeypatch.setattr(head_refit, "collect_head_inputs", count)
    return calls


def test_caches_spread_frames_under_a_key_and_reuses_only_a_matching_one(
    shipped, tiny_dataset, tmp_path, monkeypatch, capsys
):
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import checkpoint_steps

    tool = load_tool("refit_head")
    cache, out = tmp_path / "cache", tmp_path / "refit.pt"
    calls = _counting(monkeypatch)
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache), *ARGS]) == 0
    assert len(calls) == 2 and out.is_file()
    key = json.loads((cache / "val_2.json").read_text())
    assert key["frames"] == 2 and key["of"] == 4 and key["split"] == "val" and key["scene"]
    assert key["data"] == str(tiny_dataset.resolve())
    assert json.loads((cache / "train_4.json").read_text())["of"] == 8

    # the val frames cached are the spread ones (1 and 3 of 4), not the first two
    _model, cfg = load_method(shipped)
    val = SyntheticDataset(tiny_dataset, "val")
    steps = checkpoint_steps(val, spread_indices(len(val), 2), cfg,
                             instantiate(cfg.body).topology, torch.device("cpu"),
                             progress=False)  # fmt: skip
    roots = torch.cat([s.frame_targets.root_cam for s in steps])
    cached = head_refit.HeadCache.load(cache / "val_2.pt")
    torch.testing.assert_close(cached.root_cam, roots.float(), atol=1e-5, rtol=0)

    # the same run again reads both caches; a key that no longer matches is rebuilt
    calls.clear()
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache), *ARGS]) == 0
    assert calls == []
    stale = json.loads((cache / "val_2.json").read_text())
    stale["encoder_sha256"] = "another encoder"
    (cache / "val_2.json").write_text(json.dumps(stale))
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache), *ARGS]) == 0
    assert len(calls) == 1
    assert json.loads((cache / "val_2.json").read_text()) == key
    capsys.readouterr()


def test_val_data_and_the_checkpoint_of_each_improvement(
    shipped, tiny_dataset, tmp_path, monkeypatch, capsys
):
    """``--val-data`` takes val from another set; the checkpoint on disk after the refit holds
    the best step's weights (it was written at each improvement, the last one kept)."""
    from sahmr.engine.checkpoint import load_checkpoint

    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    tool = load_tool("refit_head")
    out = tmp_path / "refit.pt"
    import sahmr.engine.checkpoint as checkpoint

    saves, original = [], checkpoint.save_checkpoint

    def counting_save(path, **kw):
        saves.append(kw["step"])
        return original(path, **kw)

    monkeypatch.setattr(checkpoint, "save_checkpoint", counting_save)
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--val-data", str(other),
                      "--cache", str(tmp_path / "cache"), *ARGS]) == 0  # fmt: skip
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["val_data"] == str(other) and report["val_frames"] == 2
    key = json.loads((tmp_path / "cache" / "val_2.json").read_text())
    assert key["data"] == str(other.resolve())
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == report["best_step"]
    best, improved = report["start_val_mm"], []
    for row in report["history"]:
        if row["val_mm"] < best:
            best, improved = row["val_mm"], [*improved, row["step"]]
    assert saves == [*improved, report["best_step"]]  # each improvement, then the result
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["SHIPPED", "DATA", "OUT", "--val-data", "nowhere"], "not a generated dataset"),
    (["SHIPPED", "nowhere", "OUT"], "not a generated dataset"),
    (["SHIPPED", "DATA", "OUT", "--val-frames", "0"], "--val-frames must be >= 1"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(args, message, shipped, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "refit.pt"
    names = {"SHIPPED": str(shipped), "DATA": str(tiny_dataset), "OUT": str(out)}
    with pytest.raises(SystemExit) as exit_info:
        load_tool("refit_head").main([names.get(x, x) for x in args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_diagnose_shape_reads_the_caches_of_its_checkpoint_only(
    shipped, tiny_dataset, tmp_path, capsys
):
    """tools/diagnose_shape.py on the caches refit_head wrote for the shipped checkpoint: the
    decomposition and the probe come out; a cache of another encoder is refused (exit 2)."""
    cache = tmp_path / "cache"
    assert load_tool("refit_head").main([str(shipped), str(tiny_dataset), str(tmp_path / "r.pt"),
                                         "--cache", str(cache), *ARGS]) == 0  # fmt: skip
    tool = load_tool("diagnose_shape")
    out = tmp_path / "shape.json"
    assert tool.main([str(shipped), str(cache / "val_2.pt"), "--train-cache",
                      str(cache / "train_4.pt"), "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["val_frames"] == 2 and report["train_frames"] == 4
    rows = report["edge_error_pct"]
    assert 0 < rows["predicted"] < 50 and len(report["linear_probe"]["r2"]) == 10
    assert "predicted pose, true betas[:3]" in rows and len(report["head_r2"]) == 10
    assert "edge-length error" in capsys.readouterr().out

    key = json.loads((cache / "val_2.json").read_text())
    key["encoder_sha256"] = "another encoder"
    (cache / "val_2.json").write_text(json.dumps(key))
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(shipped), str(cache / "val_2.pt")])
    assert exit_info.value.code == 2
    assert "not a cache of this checkpoint's encoder" in capsys.readouterr().err
