"""The baselines in the shared engine: adversarial priors (HMR, VIBE), sample keys (SPIN), clips
(VIBE), through tools/train.py and tools/eval_checkpoint.py on tiny configurations.

The engine-level checks run on `engine_testkit.TinyAdversarialMethod` (a discriminator, a second
optimiser, keys remembered in its state dict); the real methods run a few CPU steps with
ResNet-18 and narrow heads.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from engine_testkit import (
    CONFIGS,
    TOOLS,
    TinyAdversarialMethod,
    TinyMethod,
    compose_train,
    run_hydra_tool,
    run_tool,
    tiny_overrides,
    train_straight_and_resumed,
)

from sahmr.engine.checkpoint import load_checkpoint, load_method
from sahmr.engine.data import (
    LoaderSettings,
    StepPreparer,
    build_loader,
    clip_dataset,
    frame_indices,
)
from sahmr.engine.methods import (
    discriminator_parameters,
    generator_parameters,
    has_discriminator,
    wants_sample_keys,
)

HMR_TINY = {
    "model.backbone.name": "resnet18",
    "model.regressor.feature_dim": 512,
    "model.regressor.hidden_dim": 32,
    "model.discriminator.joint_channels": 8,
    "model.discriminator.pose_hidden": 16,
    "model.pose_library.num_samples": 64,
}
SPIN_TINY = {
    "model.hmr.backbone.name": "resnet18",
    "model.hmr.regressor.feature_dim": 512,
    "model.hmr.regressor.hidden_dim": 32,
    "model.smplify.stages.iterations": 2,
}
VIBE_TINY = {
    "model.backbone.name": "resnet18",
    "model.encoder.feature_dim": 512,
    "model.encoder.hidden_dim": 16,
    "model.regressor.feature_dim": 512,
    "model.regressor.hidden_dim": 32,
    "model.motion_discriminator.hidden_dim": 16,
    "model.motion_discriminator.attention_dim": 16,
    "model.motion_discriminator.attention_layers": 1,
    "model.motion_library.num_sequences": 16,
    "model.motion_library.length": 8,
}


def _tool_overrides(dataset, out, model: dict, **extra) -> list[str]:
    """A tiny CPU run of an experiment through tools/train.py."""
    base = {
        "trainer": "tiny",
        "device": "cpu",
        "data.root": dataset,
        "paths.output_dir": out,
        "trainer.max_steps": 2,
        "trainer.batch_size": 2,
        "trainer.val_batch_size": 2,
        "trainer.image_every": 2,
        **model,
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def _eval(ckpt, dataset, out, monkeypatch, **extra) -> dict:
    overrides = {
        "checkpoint": ckpt, "data.root": dataset, "split": "val", "out": out, "device": "cpu",
        "num_workers": 0, "batch_size": 2, "max_batches": 1, "scene_metrics": "false",
        "progress": "false", **extra,
    }  # fmt: skip
    run_hydra_tool("eval_checkpoint", [f"{k}={v}" for k, v in overrides.items()], monkeypatch)
    return json.loads((out / "metrics.json").read_text())


def _train_records(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def _fits_keys(ckpt) -> list[str]:
    """Keys of SPIN's fits dictionary stored in a checkpoint's model state."""
    data = ckpt["model"]["fits._extra_state"].numpy().tobytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return [str(k) for k in z["keys"]]


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("exp", ["hmr", "spin", "vibe"])
def test_baseline_experiments_compose(exp, tmp_path):
    cfg = compose_train([f"exp={exp}", "data.root=/data"], tmp_path)
    assert cfg.exp_name == exp and cfg.paths.output_dir.endswith(exp)
    assert cfg.model._target_.lower().endswith(exp)
    assert cfg.loss._target_.split(".")[-1].lower().startswith(exp)
    assert cfg.needs_scene is False and cfg.trainer.best_metric == "mpjpe"
    assert cfg.clip_length == (8 if exp == "vibe" else None)
    assert (cfg.trainer.disc_lr is not None) == (exp != "spin")
    assert (CONFIGS / "exp" / f"{exp}.yaml").is_file()


# ---------------------------------------------------------------------------- engine


def test_methods_protocols_are_duck_typed():
    plain, adv = TinyMethod(), TinyAdversarialMethod()
    assert not has_discriminator(plain) and not wants_sample_keys(plain)
    assert discriminator_parameters(plain) == []
    assert len(generator_parameters(plain)) == len(list(plain.parameters()))
    assert has_discriminator(adv) and wants_sample_keys(adv)
    disc = {id(p) for p in discriminator_parameters(adv)}
    gen = {id(p) for p in generator_parameters(adv)}
    assert disc == {id(p) for p in adv.discriminator.parameters()}
    assert not disc & gen and len(disc | gen) == len(list(adv.parameters()))


def test_adversarial_keyed_method_resumes_bit_identically(tiny_dataset, test_configs, tmp_path):
    """8 steps straight == 3 steps, stop, resume, 5 steps: both optimisers, both schedules,
    the discriminator and the keys the method keeps in its state dict."""
    extra = {
        "model": "tiny_adversarial", "loss": "tiny_adversarial", "trainer.max_epochs": 2,
        "trainer.max_steps": 8, "trainer.ckpt_every": 0, "needs_scene": "false",
    }  # fmt: skip
    seen = {}

    def check_optimisers(trainer):
        main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        disc = {id(p) for g in trainer.disc_optimizer.param_groups for p in g["params"]}
        model = trainer.method
        assert disc == {id(p) for p in model.discriminator.parameters()}
        assert main == {id(p) for p in model.generator_parameters()} and not main & disc
        seen["init_disc"] = [p.detach().clone() for p in model.discriminator.parameters()]

    a, b = train_straight_and_resumed(tiny_dataset, test_configs, tmp_path, extra, stop_at=3,
                                      on_trainer=check_optimisers)  # fmt: skip
    assert a["step"] == b["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for name in ("optimizer", "discriminator_optimizer"):
        assert len(a[name]["state"]) == len(b[name]["state"]) > 0
        for sa, sb in zip(a[name]["state"].values(), b[name]["state"].values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert a["scheduler"] == b["scheduler"]
    assert a["discriminator_scheduler"] == b["discriminator_scheduler"]
    assert a["discriminator_scheduler"]["last_epoch"] == 8
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    # the discriminator was trained by its own optimiser
    trained = [a["model"][k] for k in sorted(a["model"]) if k.startswith("discriminator.")]
    assert not all(torch.equal(x, y) for x, y in zip(trained, seen["init_disc"]))
    # every training frame's key reached forward (2 epochs over 8 frames) and was checkpointed
    from sahmr.data.collate import collate_samples
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.models.spin import sample_keys_from_batch

    train = SyntheticDataset(tiny_dataset, "train")
    expected = sample_keys_from_batch(collate_samples([train[i] for i in range(len(train))]))
    keys = bytes(a["model"]["_extra_state"].numpy().tobytes()).decode().split("\n")
    assert sorted(keys) == sorted(expected) and len(set(expected)) == len(train)
    # discriminator terms are logged next to the main ones
    records = _train_records(tmp_path / "straight")
    assert len(records) == 8
    assert all({"loss", "adversarial", "disc_loss", "disc_real", "disc_fake"} <= set(r)
               for r in records)  # fmt: skip
    r = records[-1]
    assert r["disc_loss"] == pytest.approx(r["disc_real"] + r["disc_fake"], rel=1e-5)


@pytest.mark.slow  # two fresh interpreters: ~15 s on the shared 2-core machine
def test_adversarial_keyed_method_under_torchrun(tiny_dataset, subprocess_configs, tmp_path):
    """Two CPU ranks (gloo): the discriminator's gradients are averaged by the engine, outside
    DDP's hooks, step after step; keys pass through the DDP wrapper."""
    out = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_dataset, out, model="tiny_adversarial", loss="tiny_adversarial",
        needs_scene="false",
        **{"trainer.max_steps": 3, "trainer.max_epochs": 2, "trainer.ckpt_every": 0},
    )  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(TOOLS / "train.py"), f"hydra.searchpath=[file://{subprocess_configs}]", *overrides,
    ]  # fmt: skip
    res = run_tool(cmd, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["discriminator_scheduler"]["last_epoch"] == 3
    (steps,) = {int(s["step"]) for s in ckpt["discriminator_optimizer"]["state"].values()}
    assert steps == 3
    keys = bytes(ckpt["model"]["_extra_state"].numpy().tobytes()).decode().split("\n")
    assert 4 <= len(set(keys)) <= 6  # rank 0: 3 steps x 2 frames, its 4-frame share
    records = _train_records(out)
    assert [r["step"] for r in records] == [1, 2, 3] and all("disc_real" in r for r in records)


def test_clip_mode_loader_and_steps_match_frame_mode(tiny_dataset):
    """Clips (here: the two views of a body, any action) collate into clip-major frames whose
    inputs, targets, names and keys equal the frame mode's for the same frames."""
    from sahmr.body import BodyModel
    from sahmr.data.collate import collate_samples
    from sahmr.data.sequences import ClipDataset
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.models.spin import sample_keys_from_batch
    from sahmr.models.vibe import ClipInputs, ClipTargets

    frames = SyntheticDataset(tiny_dataset, "train")
    assert clip_dataset(frames, None) is frames
    clips = clip_dataset(frames, 2, motion_prefix=None)
    assert isinstance(clips, ClipDataset) and len(clips) == 4
    assert len(clip_dataset(frames, 2)) == 0  # no motions in this dataset
    with pytest.raises(ValueError):
        build_loader(clips, LoaderSettings(batch_size=2), train=False)  # clips need clip_length
    with pytest.raises(ValueError):
        build_loader(frames, LoaderSettings(batch_size=2), train=False, clip_length=2)

    topology = BodyModel().topology
    device = torch.device("cpu")
    clip_prep = StepPreparer(topology, device, None, clip_length=2)
    frame_prep = StepPreparer(topology, device, None)
    loader = build_loader(clips, LoaderSettings(batch_size=2), train=False, clip_length=2)
    batch = next(iter(loader))
    step = clip_prep.step(batch)
    assert isinstance(step.inputs, ClipInputs) and isinstance(step.targets, ClipTargets)
    assert step.inputs.batch_size == 2 and step.num_frames == 4
    rows = frame_indices(clips, [0, 1])
    assert rows == clips.clips[0] + clips.clips[1]
    ref = frame_prep.step(collate_samples([frames[i] for i in rows]))
    torch.testing.assert_close(step.inputs.frames.image, ref.inputs.image)
    torch.testing.assert_close(step.inputs.frames.K_crop, ref.inputs.K_crop)
    torch.testing.assert_close(step.targets.frames.joints_cam, ref.targets.joints_cam)
    assert step.sample_keys == ref.sample_keys == sample_keys_from_batch(ref.frames)
    with pytest.raises(TypeError):
        frame_prep.step(batch)  # a ClipBatch in frame mode


# ---------------------------------------------------------------------------- real methods


def test_hmr_trains_resumes_and_evaluates(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_hydra_tool("train", ["exp=hmr", *_tool_overrides(tiny_dataset, run, HMR_TINY)],
                   monkeypatch)  # fmt: skip
    first = load_checkpoint(run / "checkpoints" / "last.pt")
    assert first["step"] == 2 and first["metrics"]["best_name"] == "mpjpe"
    disc_keys = [k for k in first["model"] if k.startswith("discriminator.")]
    assert disc_keys and len(first["discriminator_optimizer"]["state"]) == len(disc_keys)
    hmr, _ = load_method(run / "checkpoints" / "last.pt")
    n_main = sum(len(g["params"]) for g in first["optimizer"]["param_groups"])
    assert n_main == len(generator_parameters(hmr)) == len(list(hmr.parameters())) - len(disc_keys)
    records = _train_records(run)
    assert all(np.isfinite(r["loss"]) and "disc_real" in r and "adversarial" in r
               for r in records)  # fmt: skip

    overrides = _tool_overrides(tiny_dataset, run, HMR_TINY, **{"trainer.max_steps": 3})
    run_hydra_tool("train", ["exp=hmr", *overrides, "resume=true"], monkeypatch)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 3
    (state,) = {int(s["step"]) for s in last["discriminator_optimizer"]["state"].values()}
    assert state == 3  # the discriminator's Adam went on from its stored state
    assert not torch.equal(first["model"][disc_keys[0]], last["model"][disc_keys[0]])

    metrics = _eval(run / "checkpoints" / "last.pt", tiny_dataset, tmp_path / "eval", monkeypatch)
    assert metrics["method"] == "HMR" and metrics["frames"] == 2
    assert metrics["metrics"]["mpjpe"]["value"] > 0 and metrics["clip_length"] is None


@pytest.mark.slow
def test_spin_passes_keys_and_keeps_its_fits(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_hydra_tool("train", ["exp=spin", *_tool_overrides(tiny_dataset, run, SPIN_TINY)],
                   monkeypatch)  # fmt: skip
    first = load_checkpoint(run / "checkpoints" / "last.pt")
    keys = _fits_keys(first)
    assert len(keys) == 4 and all(k.startswith("synth/train-") for k in keys)  # 2 steps x 2
    assert "discriminator_optimizer" not in first
    records = _train_records(run)
    assert all("fit_pose" in r and "disc_loss" not in r for r in records)

    overrides = _tool_overrides(tiny_dataset, run, SPIN_TINY, **{"trainer.max_steps": 4})
    run_hydra_tool("train", ["exp=spin", *overrides, "resume=true"], monkeypatch)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 4 and set(keys) <= set(_fits_keys(last))
    assert len(_fits_keys(last)) == 8  # one epoch of 4 steps: every training frame once

    metrics = _eval(run / "checkpoints" / "last.pt", tiny_dataset, tmp_path / "eval", monkeypatch)
    assert metrics["method"] == "SPIN" and metrics["metrics"]["mpjpe"]["value"] > 0


def test_vibe_trains_and_evaluates_on_clips(tiny_dataset, tmp_path, monkeypatch):
    """Clip mode on the tiny dataset's view pairs (clip_motion_prefix=null: any sequence)."""
    run = tmp_path / "run"
    clips = {"clip_length": 2, "clip_motion_prefix": "null"}
    overrides = _tool_overrides(tiny_dataset, run, VIBE_TINY, **clips)
    run_hydra_tool("train", ["exp=vibe", *overrides], monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    from sahmr.data.synthetic import SyntheticDataset

    val_frames = len(SyntheticDataset(tiny_dataset, split="val"))  # view pairs: 2-frame clips
    assert val_frames % 2 == 0 and val_frames > 0
    assert ckpt["step"] == 2 and ckpt["metrics"]["last"]["frames"] == val_frames
    assert len(ckpt["discriminator_optimizer"]["state"]) > 0
    records = _train_records(run)
    assert all("motion_disc_real" in r and "motion_adversarial" in r for r in records)
    assert records[0]["samples_per_s"] > 0

    metrics = _eval(run / "checkpoints" / "last.pt", tiny_dataset, tmp_path / "eval", monkeypatch)
    assert metrics["method"] == "VIBE" and metrics["clip_length"] == 2
    assert metrics["frames"] == val_frames and metrics["metrics"]["mpjpe"]["value"] > 0


@pytest.fixture(scope="module")
def motion_dataset(tmp_path_factory):
    """Motions only: 8 train frames (bedroom) + 8 val frames (living room), 4-frame motions."""
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    out = tmp_path_factory.mktemp("engine_motions")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=16, samples_per_shard=8, seed=4, workers=0,
            sequence_fraction=1.0, sequence_frames=4, views_per_body=1,
            splits={"train": dict(fraction=1, bundled=["bedroom"]),
                    "val": dict(fraction=1, bundled=["living_room"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


@pytest.mark.slow
def test_vibe_on_motion_clips_reports_acceleration_error(motion_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    overrides = _tool_overrides(
        motion_dataset, run, VIBE_TINY,
        **{"clip_length": 4, "trainer.batch_size": 1, "trainer.val_batch_size": 1},
    )  # fmt: skip
    run_hydra_tool("train", ["exp=vibe", *overrides], monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    last = ckpt["metrics"]["last"]
    assert last["frames"] == 4 and last["accel_error"] > 0 and last["accel_error_cam"] > 0

    out = tmp_path / "eval"
    metrics = _eval(run / "checkpoints" / "last.pt", motion_dataset, out, monkeypatch,
                    batch_size=1, max_batches="null", save_predictions="true")  # fmt: skip
    assert metrics["clip_length"] == 4 and metrics["method_metrics"]["accel_error"] > 0
    names = sorted(p.stem for p in (out / "predictions").iterdir())
    assert len(names) == metrics["frames"] == 8  # every val frame, each in one clip
