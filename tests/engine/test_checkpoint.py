"""Checkpoints: atomic writes, weights_only loading, RNG round trip, load_method, export."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_testkit import TOOLS, TinyMethod, TinyPipeline
from omegaconf import OmegaConf

from sahmr.engine.checkpoint import (
    UnsafeConfigError,
    capture_rng_state,
    load_checkpoint,
    load_initial_weights,
    load_method,
    restore_rng_state,
    save_checkpoint,
)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(target: str = "engine_testkit.TinyMethod", **model) -> str:
    return OmegaConf.to_yaml(OmegaConf.create({"model": {"_target_": target, **model}}))


def _draws() -> tuple:
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())  # noqa: NPY002


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    state = capture_rng_state()
    expected = _draws()
    model = TinyMethod()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.head.weight.sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "c.pt", model=model, config=_config(), optimizer=opt, rng=state, epoch=2,
        step=7, batch_in_epoch=1, metrics={"best": 1.5, "best_name": "g_mpve", "last": {}},
    )  # fmt: skip
    _draws()
    ckpt = torch.load(path, weights_only=True)  # plain safe load works
    assert ckpt["format"] == "sahmr.checkpoint" and ckpt["version"] == 1
    assert (ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]) == (2, 7, 1)
    assert ckpt["metrics"]["best"] == 1.5
    restore_rng_state(load_checkpoint(path)["rng"][0])
    assert _draws() == expected
    fresh = torch.optim.AdamW(TinyMethod().parameters(), lr=1e-3)
    fresh.load_state_dict(ckpt["optimizer"])
    (key,) = opt.state_dict()["state"]  # only head.weight had a gradient
    a, b = fresh.state_dict()["state"][key], opt.state_dict()["state"][key]
    assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_save_is_atomic(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=TinyMethod(), config=_config(), step=1)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 (whatever pickling raises)
        save_checkpoint(path, model=TinyMethod(), config=_config(), metrics={"bad": lambda: 0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temp file left


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"not a sahmr\.checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_load_method_and_fp16_export(tmp_path):
    torch.manual_seed(0)
    model = TinyMethod(hidden=4)
    src = save_checkpoint(tmp_path / "c.pt", model=model, config=_config(hidden=4), step=3)
    loaded, cfg = load_method(src)
    assert cfg.model.hidden == 4 and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)

    export = _tool("export_checkpoint")
    dst = tmp_path / "small.pt"
    assert export.main([str(src), str(dst)]) == 0
    ckpt = load_checkpoint(dst)
    assert "optimizer" not in ckpt and ckpt["model"]["head.weight"].dtype == torch.float16
    half, _ = load_method(dst)
    w = half.state_dict()["head.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model.head.weight.detach(), atol=1e-3, rtol=1e-3)


def test_export_merges_an_rcnet_checkpoint(tmp_path, capsys):
    torch.manual_seed(1)
    rc = TinyMethod(hidden=4)
    rc_path = save_checkpoint(tmp_path / "rc.pt", model=rc, config=_config(hidden=4))
    pipe = TinyPipeline()
    pipe_path = save_checkpoint(
        tmp_path / "p.pt", model=pipe, config=_config("engine_testkit.TinyPipeline", rcnet=None)
    )
    dst = tmp_path / "merged.pt"
    assert _tool("export_checkpoint").main([str(pipe_path), str(dst), "--rcnet", str(rc_path)]) == 0
    assert "MB)" in capsys.readouterr().out
    merged, cfg = load_method(dst)
    assert cfg.model.rcnet.hidden == 4
    assert isinstance(merged.rcnet, TinyMethod)
    torch.testing.assert_close(
        merged.rcnet.head.weight, rc.head.weight.detach(), atol=1e-3, rtol=1e-3
    )
    assert Path(dst).stat().st_size < Path(pipe_path).stat().st_size + Path(rc_path).stat().st_size


def test_export_set_changes_the_stored_config(tmp_path, capsys):
    """``--set KEY=VALUE``: the value (parsed as YAML) lands in the stored config and builds the
    model; a new leaf in an existing section is added; a missing section or a bad item is one
    error line (exit 2) and writes nothing."""
    model = TinyMethod(hidden=4)
    src = save_checkpoint(tmp_path / "c.pt", model=model, config=_config(hidden=4))
    export = _tool("export_checkpoint")
    dst = tmp_path / "set.pt"
    assert export.main([str(src), str(dst), "--set", "model.dropout=0.25",
                        "--set", "model.use_scene=false"]) == 0  # fmt: skip
    ckpt = load_checkpoint(dst)
    loaded, cfg = load_method(dst)
    assert cfg.model.dropout == 0.25 and cfg.model.use_scene is False
    assert loaded.drop.p == 0.25 and loaded.use_scene is False
    assert ckpt["exported"]["settings"] == ["model.dropout=0.25", "model.use_scene=false"]
    new_leaf = tmp_path / "leaf.pt"
    assert export.main([str(src), str(new_leaf), "--set", "model.extra_option=3"]) == 0
    assert load_checkpoint(new_leaf)["config"].count("extra_option: 3") == 1
    capsys.readouterr()
    for bad, why in (("modl.hidden=3", "no section modl"), ("model.hidden", "KEY=VALUE")):
        out = tmp_path / "bad.pt"
        with pytest.raises(SystemExit) as exc:
            export.main([str(src), str(out), "--set", bad])
        assert exc.value.code == 2 and not out.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert why in err[-1]


def test_load_method_with_settings_changes_only_the_built_method(tmp_path):
    """``load_method(..., settings=[...])``: the method is built from the changed config (as
    ``--set`` would store it), the file is untouched; bad items and foreign targets refused."""
    model = TinyMethod(hidden=4)
    src = save_checkpoint(tmp_path / "c.pt", model=model, config=_config(hidden=4))
    before = src.read_bytes()
    loaded, cfg = load_method(src, settings=["model.dropout=0.25", "model.use_scene=false"])
    assert loaded.drop.p == 0.25 and loaded.use_scene is False and cfg.model.dropout == 0.25
    torch.testing.assert_close(loaded.head.weight, model.head.weight.detach())
    assert src.read_bytes() == before
    assert load_method(src)[0].drop.p == model.drop.p
    with pytest.raises(ValueError, match=r"setting modl\.hidden: the checkpoint.s config has no"):
        load_method(src, settings=["modl.hidden=3"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_method(src, settings=["model.hidden"])
    with pytest.raises(UnsafeConfigError):
        load_method(src, settings=["model._target_=os.system"])


def test_benchmark_overrides_reach_a_checkpoint_model(tmp_path):
    """``tools/benchmark.py --checkpoint M=PATH --override M:KEY=VALUE``: the override changes
    the checkpoint's stored config before the model is built (it was silently dropped)."""
    from sahmr.benchmark.methods import build_method

    src = save_checkpoint(tmp_path / "c.pt", model=TinyMethod(hidden=4), config=_config(hidden=4))
    model = build_method("sahmr_small", tiny=False, extra=["model.dropout=0.4"], checkpoint=src,
                         device=torch.device("cpu"), config_dir=tmp_path)  # fmt: skip
    assert isinstance(model, TinyMethod) and model.drop.p == 0.4 and not model.training


def test_initial_weights_rename_prefixes_and_cast(tmp_path):
    torch.manual_seed(2)
    pipe = TinyPipeline()
    pipe.rcnet = TinyMethod(hidden=4)
    src = save_checkpoint(tmp_path / "p.pt", model=pipe.half(), config=_config(hidden=4))
    fresh = TinyMethod(hidden=4)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_initial_weights(fresh, src, source_prefix="rcnet.")
    assert report["loaded"] == sorted(f"{k}" for k in before) and report["missing"] == []
    for k, v in fresh.state_dict().items():
        assert v.dtype == before[k].dtype  # fp16 weights cast to the method's float32
        assert torch.equal(v, pipe.rcnet.state_dict()[k].to(v.dtype))

    # The other way round: an RCNet run's weights placed under "rcnet." of a pipeline.
    rc_path = save_checkpoint(tmp_path / "rc.pt", model=TinyMethod(hidden=4), config=_config())
    target = TinyPipeline()
    target.rcnet = TinyMethod(hidden=4)
    report = load_initial_weights(target, rc_path, target_prefix="rcnet.")
    assert report["loaded"] and all(k.startswith("rcnet.") for k in report["loaded"])
    assert report["missing"] and not any(k.startswith("rcnet.") for k in report["missing"])


def test_initial_weights_refuse_mismatches(tmp_path):
    src = save_checkpoint(tmp_path / "c.pt", model=TinyMethod(hidden=4), config=_config())
    with pytest.raises(ValueError, match="shape"):
        load_initial_weights(TinyMethod(hidden=5), src)
    with pytest.raises(ValueError, match=r"no weights under prefix 'hmr\.'"):
        load_initial_weights(TinyMethod(hidden=4), src, source_prefix="hmr.")


def test_refit_saver_writes_each_row_it_is_given(tmp_path):
    """The refits' ``on_best``: each call (re)writes the checkpoint, in a folder it makes,
    with that row's step, its metric and the weights the model holds at the call."""
    from sahmr.engine.checkpoint import refit_saver

    model = TinyMethod()
    path = tmp_path / "new" / "refit.pt"
    save = refit_saver(path, model, _config(), "refit_val_mm")
    save({"step": 40, "val_mm": 12.5})
    first = load_checkpoint(path)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save({"step": 80, "val_mm": 11.0})
    second = load_checkpoint(path)
    assert (first["step"], second["step"]) == (40, 80)
    assert second["metrics"] == {"refit_val_mm": 11.0}
    name = next(iter(model.state_dict()))
    assert torch.equal(second["model"][name], model.state_dict()[name])
    assert not torch.equal(first["model"][name], second["model"][name])


def test_shipped_checkpoint_travels_with_the_gpu_bundle():
    """The shipped file stays within 20 MB (it travels with the spconv bundle to the GPU
    machine) whatever precision mix it is exported with, and holds no pickled objects."""
    from sahmr.inference.method import bundled_checkpoint

    path = bundled_checkpoint("sahmr")
    assert path.stat().st_size <= 20e6
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["format"] == "sahmr.checkpoint"
