"""tools/train.py, tools/eval_checkpoint.py and tools/score_predictions.py end to end, on the
dummy and real methods.

The hydra tools run in-process (``sys.argv`` patched, hydra's logging set-up switched off so
pytest's capture is untouched); tools/score_predictions.py re-scores the predictions
tools/eval_checkpoint.py saved.
"""

from __future__ import annotations

import json

import pytest
import torch
from engine_testkit import CONFIGS, compose_train, run_hydra_tool
from engine_testkit import load_tool as _tool
from omegaconf import OmegaConf

from sahmr.engine.checkpoint import load_checkpoint

EXPS = ["rcnet_small", "rcnet_paper", "metro_small", "metro_paper", "sahmr_small", "sahmr_paper"]


def _tiny(dataset, out, **extra) -> list[str]:
    base = {
        "trainer": "tiny",
        "device": "cpu",
        "data.root": dataset,
        "paths.output_dir": out,
        "max_points_per_scene": 20000,
        "trainer.max_steps": 2,
        "trainer.batch_size": 2,
        "trainer.val_batch_size": 2,
        "trainer.image_every": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.mark.parametrize("exp", EXPS)
def test_experiments_compose(exp, tmp_path):
    cfg = compose_train([f"exp={exp}", "data.root=/data"], tmp_path)
    assert cfg.exp_name == exp and cfg.paths.output_dir.endswith(exp)
    method = exp.split("_")[0]
    assert cfg.model._target_.lower().endswith(method)
    assert cfg.loss._target_.split(".")[-1].lower().startswith(method)
    assert cfg.needs_scene == (method != "metro")
    assert cfg.trainer.best_metric


def test_train_eval_and_rescore_the_dummy_method(
    tiny_dataset, test_configs, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    search = f"hydra.searchpath=[file://{test_configs}]"
    train = _tiny(tiny_dataset, run, model="tiny", loss="tiny", exp_name="tiny")
    run_hydra_tool("train", [search, *train, "trainer.best_metric=g_mpve"], monkeypatch)
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :])["step"] == 2
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}

    out = tmp_path / "eval"
    run_hydra_tool(
        "eval_checkpoint",
        [
            f"checkpoint={run / 'checkpoints' / 'best.pt'}", f"data.root={tiny_dataset}",
            "split=val", f"out={out}", "device=cpu", "num_workers=0", "batch_size=3",
            "save_predictions=true", "sdf_voxel_size=0.1", f"sdf_cache_dir={tmp_path / 'sdf'}",
            "progress=false",
        ],
        monkeypatch,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["method"] == "TinyMethod"
    assert metrics["seconds_per_frame"] > 0
    assert metrics["method_metrics"]["root_error_mm"] > 0  # the method's own metrics
    assert "pene" in metrics["metrics"] and "confe" in metrics["metrics"]  # scene metrics on
    assert (out / "per_frame.csv").is_file() and any(out.glob("*.png"))
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [
        f"val-{i:06d}.npz" for i in range(4)
    ]
    rescored = tmp_path / "rescored"
    rc = _tool("score_predictions").main(
        ["--pred", str(out / "predictions"), "--gt-dataset", str(tiny_dataset), "--split", "val",
         "--out", str(rescored), "--no-progress", "--voxel-size", "0.1",
         "--sdf-cache-dir", str(tmp_path / "sdf")]
    )  # fmt: skip
    assert rc == 0
    again = json.loads((rescored / "metrics.json").read_text())["metrics"]
    for name in ("g_mpve", "mpjpe", "pene"):
        assert again[name]["value"] == pytest.approx(metrics["metrics"][name]["value"], rel=1e-4)


def _real_method_run(exp, dataset, tmp_path, monkeypatch, evaluate: bool):
    run = tmp_path / "run"
    run_hydra_tool("train", [f"exp={exp}", *_tiny(dataset, run)], monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["metrics"]["last"]["frames"] == 2
    assert any((run / "tb").glob("events.out.tfevents.*"))
    if evaluate:
        out = tmp_path / "eval"
        run_hydra_tool(
            "eval_checkpoint",
            [f"checkpoint={run / 'checkpoints' / 'last.pt'}", f"data.root={dataset}",
             "split=val", f"out={out}", "device=cpu", "num_workers=0", "batch_size=2",
             "max_batches=1", "scene_metrics=false", "progress=false"],
            monkeypatch,
        )  # fmt: skip
        return ckpt, json.loads((out / "metrics.json").read_text())
    return ckpt, None


def test_train_tool_sahmr_small(tiny_dataset, tmp_path, monkeypatch):
    """The mesh network alone (teacher forcing), validated with ground-truth root/contacts."""
    ckpt, _ = _real_method_run("sahmr_small", tiny_dataset, tmp_path, monkeypatch, False)
    assert ckpt["metrics"]["best_name"] == "g_mpve" and ckpt["metrics"]["best"] > 0


@pytest.mark.slow
def test_train_and_eval_tools_rcnet_small(tiny_dataset, tmp_path, monkeypatch):
    ckpt, metrics = _real_method_run("rcnet_small", tiny_dataset, tmp_path, monkeypatch, True)
    assert ckpt["metrics"]["last"]["root_error_mm"] > 0
    assert metrics["method"] == "RCNet" and "metrics" not in metrics  # no body: RCNet's own only
    assert metrics["method_metrics"]["root_error_mm"] > 0
    assert metrics["method_metrics"]["root_error_mm_median"] > 0  # per_frame_metrics hook
    assert 0 <= metrics["method_metrics"]["contact_recall"] <= 1


@pytest.mark.slow
def test_train_and_eval_tools_metro_small(tiny_dataset, tmp_path, monkeypatch):
    ckpt, metrics = _real_method_run("metro_small", tiny_dataset, tmp_path, monkeypatch, True)
    assert ckpt["metrics"]["best_name"] == "mpjpe"
    assert metrics["method"] == "METRO" and metrics["metrics"]["mpjpe"]["value"] > 0


def test_the_shipped_metro_baseline_is_trained_small_and_weights_only(
    tiny_dataset, tmp_path, monkeypatch
):
    """``--method metro`` has weights (runs 35 and 37, int8): a safe file that travels beside
    the shipped SA-HMR, and a trained network, not random weights. Random METRO small scores
    an MPJPE of about 410 mm (run 35's step 0), the shipped one 95 on held-out test rooms; on
    the bundled bedroom's 4 standing frames it must stay far below the first."""
    from sahmr.inference.method import bundled_checkpoint

    path = bundled_checkpoint("metro")
    assert path.name == "metro_small.pt" and path.stat().st_size <= 10e6
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["format"] == "sahmr.checkpoint"
    out = tmp_path / "eval"
    run_hydra_tool(
        "eval_checkpoint",
        [f"checkpoint={path}", f"data.root={tiny_dataset}", "split=val", f"out={out}",
         "device=cpu", "num_workers=0", "batch_size=4", "scene_metrics=false",
         "progress=false"],
        monkeypatch,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "METRO" and metrics["frames"] == 4
    assert metrics["metrics"]["mpjpe"]["value"] < 250.0  # shipped 115, random weights 396


def test_configs_folder_is_the_tools_folder():
    assert (CONFIGS / "train.yaml").is_file() and (CONFIGS / "eval.yaml").is_file()


def test_finetune_starts_from_the_shipped_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    """exp=sahmr_small_finetune: RCNet + mesh net from an SA-HMR checkpoint, RCNet frozen,
    the mesh network trained on RCNet's outputs and validated through predict()."""
    from sahmr.inference.method import bundled_checkpoint

    shipped = bundled_checkpoint("sahmr")
    run = tmp_path / "run"
    run_hydra_tool(
        "train",
        ["exp=sahmr_small_finetune", f"init.weights={shipped}", *_tiny(tiny_dataset, run)],
        monkeypatch,
    )
    start = load_checkpoint(shipped)["model"]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["metrics"]["last"]["frames"] == 2
    trained = ckpt["model"]
    rc_keys = [k for k in start if k.startswith("rcnet.")]
    assert rc_keys and all(torch.equal(trained[k], start[k].to(trained[k].dtype)) for k in rc_keys)
    moved = [k for k in start if k.startswith("mesh_net.") and start[k].is_floating_point()
             and not torch.equal(trained[k], start[k].float())]  # fmt: skip
    assert moved  # the mesh network trained, starting from the checkpoint
    head = "mesh_net.head.weight" if "mesh_net.head.weight" in start else moved[0]
    assert (trained[head] - start[head].float()).abs().max() < 0.05


def test_end_to_end_recipe_trains_rcnet_and_the_parametric_mesh_network(
    tiny_dataset, tmp_path, monkeypatch
):
    """exp=sahmr_small_e2e: from the shipped checkpoint, RCNet trains on its own loss while the
    mesh network (its parametric head included, loaded from the checkpoint) learns on RCNet's
    outputs."""
    from sahmr.inference.method import bundled_checkpoint

    shipped = bundled_checkpoint("sahmr")
    run = tmp_path / "run"
    run_hydra_tool(
        "train",
        ["exp=sahmr_small_e2e", f"init.weights={shipped}", *_tiny(tiny_dataset, run)],
        monkeypatch,
    )
    start = load_checkpoint(shipped)["model"]
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    rc_moved = [k for k in start if k.startswith("rcnet.") and start[k].is_floating_point()
                and not torch.equal(trained[k], start[k].float())]  # fmt: skip
    assert rc_moved  # RCNet is no longer frozen
    # ... and its ROI is centred on its own coarse root, as at test time (no teacher forcing)
    resolved = OmegaConf.load(run / "config.yaml")
    assert resolved.model.rcnet.teacher_forcing is False
    assert resolved.model.teacher_forcing is False
    head = [k for k in trained if k.startswith("mesh_net.param_head.")]
    # the shipped model has the head, all but its root offset (new: starts at zero and trains)
    offset = [k for k in head if k.startswith("mesh_net.param_head.root_out.")]
    assert sorted(offset) == [
        "mesh_net.param_head.root_out.bias",
        "mesh_net.param_head.root_out.weight",
    ]
    assert all(k in start for k in head if k not in offset)
    assert any(not torch.equal(trained[k], start[k].float()) for k in head if k not in offset)
    assert any(trained[k].abs().max() > 0 for k in offset)
    assert not any("body_model" in k for k in trained)


@pytest.mark.parametrize("exp", ["hmr", "metro_small", "sahmr_small_finetune"])
def test_lease_recipes_train_and_validate_under_bfloat16_autocast(
    exp, tiny_dataset, tmp_path, monkeypatch
):
    """On a GPU the trainer runs every step and validation under bfloat16 autocast, which it
    never does on the CPU: a failure there cost run 39's whole lease (HMR's body model under
    autocast). The trainer's autocast is forced on here for the recipes the leases train (the
    image-only baselines from random weights, stage two from the shipped file), validation
    at the start included, as the leases run it."""
    from sahmr.engine.trainer_config import TrainerConfig
    from sahmr.inference.method import bundled_checkpoint

    monkeypatch.setattr(TrainerConfig, "autocast_bf16", lambda self, device: bool(self.bf16))
    run = tmp_path / "run"
    init = [f"init.weights={bundled_checkpoint('sahmr')}"] if exp.startswith("sahmr") else []
    run_hydra_tool(
        "train",
        [f"exp={exp}", *init, *_tiny(tiny_dataset, run, **{"trainer.val_at_start": "true"})],
        monkeypatch,
    )
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    values = [v for v in ckpt["metrics"]["last"].values() if isinstance(v, float)]
    assert values and all(torch.isfinite(torch.tensor(values)))


def test_every_trainer_field_is_overridable():
    """Each TrainerConfig field is in configs/trainer/default.yaml, so ``trainer.<field>=...``
    on the command line composes (docs/benchmarks.md's ``trainer.sync_free_steps=true`` and
    ``trainer.compile_submodules=[...]`` once needed a ``+``)."""
    import dataclasses

    from hydra import compose, initialize_config_dir

    from sahmr.engine.trainer_config import TrainerConfig

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "exp=sahmr_small_finetune",
                "trainer.sync_free_steps=true",
                "trainer.compile_submodules=[mesh_net.backbone,mesh_net.upsampler]",
                "trainer.lr_multipliers={mesh_net.param_head:5.0}",
                "trainer.grad_clip_groups=[rcnet,mesh_net]",
            ],
        )
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    assert fields <= set(cfg.trainer), sorted(fields - set(cfg.trainer))
    tc = TrainerConfig(**cfg.trainer)
    assert tc.sync_free_steps
    assert tc.compile_submodules == ("mesh_net.backbone", "mesh_net.upsampler")
    assert tc.lr_multipliers == {"mesh_net.param_head": 5.0}
    assert tc.grad_clip_groups == ("rcnet", "mesh_net")
