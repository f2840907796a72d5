"""The GPU lease's head refit (`tools/gpu/parametric_run.py --refit-train-frames`): the cache
moved to the refit's device, batched caching with several loader workers, and the job graph
that refits the trained network and scores it beside the others."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from engine_testkit import load_tool

from sahmr.engine.head_refit import HeadCache


def _cache(frames: int = 3, crops: bool = True) -> HeadCache:
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return HeadCache(
        tokens=r(frames, 5, 4).half(),
        xyz_rel=r(frames, 5, 3),
        crop_side_m=r(frames).abs(),
        root_given_cam=r(frames, 3),
        betas=r(frames, 10),
        rotmats=r(frames, 24, 3, 3),
        root_cam=r(frames, 3),
        verts_rel=r(frames, 7, 3),
        joints14_rel=r(frames, 14, 3),
        sdf_crop=r(frames, 3, 3, 3).half() if crops else None,
    )


def test_head_cache_to_moves_every_tensor_and_keeps_its_dtype():
    for crops in (True, False):
        cache = _cache(crops=crops)
        moved = cache.to("meta")  # a device other than the CPU, available everywhere
        for f in fields(HeadCache):
            before, after = getattr(cache, f.name), getattr(moved, f.name)
            if before is None:
                assert after is None
                continue
            assert after.device.type == "meta"
            assert after.dtype == before.dtype and after.shape == before.shape
        back = cache.to("cpu")
        for f in fields(HeadCache):
            if getattr(cache, f.name) is not None:
                assert torch.equal(getattr(back, f.name), getattr(cache, f.name))


def test_caching_in_batches_with_several_workers_gives_the_same_cache(
    tiny_dataset, tmp_path, shipped_checkpoint
):
    """What the GPU lease passes (``--cache-batch``, ``--loader-workers``) changes how frames
    are grouped and loaded, not what the head reads."""
    tool = load_tool("refit_head")
    shipped = shipped_checkpoint
    args = ["--train-frames", "4", "--val-frames", "2", "--steps", "1", "--batch", "2",
            "--val-every", "1"]  # fmt: skip
    caches = {}
    for name, extra in (("one", []), ("batched", ["--cache-batch", "3", "--loader-workers", "2"])):
        out, cache = tmp_path / f"{name}.pt", tmp_path / f"cache_{name}"
        assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache),
                          *args, *extra]) == 0  # fmt: skip
        caches[name] = HeadCache.load(cache / "train_4.pt")
    for f in fields(HeadCache):
        a, b = getattr(caches["one"], f.name), getattr(caches["batched"], f.name)
        assert (a is None) == (b is None), f.name
        if a is not None:
            torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=1e-3, msg=f.name)


def _jobs(tmp_path, monkeypatch, *argv):
    tool = load_tool("gpu/parametric_run")
    monkeypatch.setattr(tool, "PY", "echo")  # the commands print themselves instead of running
    a = tool.parser().parse_args(["--root", str(tmp_path), *argv])
    a.root = a.root.resolve()
    return {j.name: j for j in tool.build_jobs(a)}, tool


def test_the_refit_is_on_by_default_and_zero_frames_turn_it_off(tmp_path, monkeypatch):
    default, _ = _jobs(tmp_path, monkeypatch)
    off, _ = _jobs(tmp_path, monkeypatch, "--refit-train-frames", "0")
    assert {"refit", "export_refit", "eval_refit_val"} <= set(default)
    assert not [n for n in off if "refit" in n]


def test_refit_jobs_follow_the_training_and_are_scored_like_the_others(tmp_path, monkeypatch):
    jobs, tool = _jobs(tmp_path, monkeypatch, "--refit-train-frames", "5000",
                       "--refit-penetration", "20")  # fmt: skip
    assert jobs["refit"].after == ["train"]
    assert jobs["export_refit"].after == ["refit"]
    for tag in ("val", "test", "away"):
        ev = jobs[f"eval_refit_{tag}"]
        assert "export_refit" in ev.after and not ev.soft
        assert f"checkpoint={tmp_path / tool.REFIT_EXPORT}" in ev.cmd
    assert str(tmp_path / tool.REFIT_TRAINING) in jobs["export_refit"].cmd

    # the refit starts from the in-memory run's last weights (the trained encoder), or the
    # DataLoader run's if that one exists (the in-memory path failed); the best-on-val weights
    # beside them are not taken
    runs = tmp_path / "runs"
    for run in ("sahmr_param", "sahmr_param_dl"):
        for name in ("best.pt", "last.pt"):
            (runs / run / "checkpoints").mkdir(parents=True, exist_ok=True)
            (runs / run / "checkpoints" / name).touch()
        shown = subprocess.run(jobs["refit"].cmd, capture_output=True, text=True, check=True)
        words = shown.stdout.split()
        assert words[:2] == ["tools/refit_head.py", str(runs / run / "checkpoints" / "last.pt")]
        assert "--train-frames=5000" in words and "--penetration=20.0" in words
        assert "--device=cuda" in words


def test_refit_from_best_takes_the_best_on_val_weights(tmp_path, monkeypatch):
    jobs, _ = _jobs(tmp_path, monkeypatch, "--refit-train-frames", "100", "--refit-from", "best")
    best = tmp_path / "runs" / "sahmr_param" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    best.touch()
    (best.parent / "last.pt").touch()
    shown = subprocess.run(jobs["refit"].cmd, capture_output=True, text=True, check=True)
    assert shown.stdout.split()[:2] == ["tools/refit_head.py", str(best)]


def test_new_scores_val_keeps_the_trained_network_off_test_and_away(tmp_path, monkeypatch):
    """By default (``--new-scores val``) the refit and the shipped weights are scored everywhere,
    the trained network on val alone; ``--new-scores all`` scores it everywhere too."""
    every, _ = _jobs(tmp_path, monkeypatch, "--refit-train-frames", "100", "--new-scores", "all")
    val_only, _ = _jobs(tmp_path, monkeypatch, "--refit-train-frames", "100")  # the default
    assert {f"eval_new_{t}" for t in ("val", "test", "away")} <= set(every)
    assert "eval_new_val" in val_only
    assert not {"eval_new_test", "eval_new_away"} & set(val_only)
    for name in ("refit", "shipped"):
        assert {f"eval_{name}_{t}" for t in ("val", "test", "away")} <= set(val_only)
    assert set(every) - set(val_only) == {"eval_new_test", "eval_new_away"}


def test_the_shipped_model_is_scored_after_the_training_unless_asked(tmp_path, monkeypatch):
    after, _ = _jobs(tmp_path, monkeypatch)
    beside, _ = _jobs(tmp_path, monkeypatch, "--shipped-scores", "beside")
    for tag in ("val", "test", "away"):
        assert "train" in after[f"eval_shipped_{tag}"].after
        assert "train" not in beside[f"eval_shipped_{tag}"].after
        assert after[f"eval_shipped_{tag}"].soft  # a failed training does not cancel them
    assert after["eval_shipped_away"].after == ["data_away", "train", "export"]
    # the new file's val is listed before the shipped one's: ready together, it starts first
    names = list(after)
    assert names.index("eval_new_val") < names.index("eval_shipped_val")
    assert set(after["eval_new_val"].after) <= set(after["eval_shipped_val"].after)


def test_refuses_to_start_without_embreex(tmp_path, monkeypatch, capsys):
    """Run 20 lost its lease to a generator without Embree: one line, exit 2, nothing written."""
    import pytest

    import sahmr.geometry.raycast as raycast

    tool = load_tool("gpu/parametric_run")
    monkeypatch.setattr(raycast, "fast_raycast_available", lambda: False)
    root = tmp_path / "lease"
    with pytest.raises(SystemExit) as exc:
        tool.main(["--root", str(root)])
    assert exc.value.code == 2
    assert "embreex is not installed" in capsys.readouterr().err
    assert not root.exists()


def test_the_step_profile_times_the_recipe_the_lease_trains(tmp_path, monkeypatch):
    default, _ = _jobs(tmp_path, monkeypatch)
    e2e, _ = _jobs(tmp_path, monkeypatch, "--exp", "sahmr_small_e2e")
    assert "--methods=sahmr_small_rcnet" in default["profile"].cmd
    assert "--methods=sahmr_small_e2e" in e2e["profile"].cmd


def test_the_last_weights_are_exported_beside_the_best(tmp_path, monkeypatch):
    """Run 29's best-on-val weights were from step 250 while its mesh network kept improving
    to the end: the lease brings the last weights back too (int8, unscored there)."""
    jobs, tool = _jobs(tmp_path, monkeypatch)
    job = jobs["export_last"]
    assert job.after == ["train"] and job.soft
    assert not [j for j in jobs.values() if "export_last" in j.after]  # nothing waits for it
    ckpts = tmp_path / "runs" / "sahmr_param" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (ckpts / name).touch()
    shown = subprocess.run(job.cmd, capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["tools/export_checkpoint.py", str(ckpts / "last.pt"),
                     str(tmp_path / tool.LAST_EXPORT), "--int8", "--fp16-under=mesh_net",
                     "--int8-under=mesh_net.encoder"]  # fmt: skip
    # every export keeps the fine-tuned parts in float16 (run 30), the refit's too
    refit, _ = _jobs(tmp_path, monkeypatch, "--export-fp16-under", "mesh_net.param_head",
                     "--export-int8-under")  # fmt: skip
    assert refit["export_refit"].cmd[-2:] == ["--int8", "--fp16-under=mesh_net.param_head"]


def test_rcnet_once_stores_the_frozen_rcnet_in_the_in_memory_call_only(tmp_path, monkeypatch):
    """``--rcnet-once`` and ``--scene-penetration``: the in-memory training call sets
    ``loader.rcnet_once=true`` (and the rooms' grids with the penetration weight) and composes;
    the DataLoader fallback (no ``loader`` group) gets neither."""
    import shlex

    from engine_testkit import CONFIGS
    from hydra import compose, initialize_config_dir

    tool = load_tool("gpu/parametric_run")
    args = tool.parser().parse_args(["--root", str(tmp_path), "--rcnet-once",
                                     "--scene-penetration", "30"])  # fmt: skip
    memory, fallback = (shlex.split(c) for c in tool.train_calls(args, tmp_path / "data"))
    assert "loader.rcnet_once=true" in memory and "loader.rcnet_once=true" not in fallback
    assert "loader.scene_sdf=true" in memory and not any("scene_sdf" in w for w in fallback)
    assert not any("penetration" in w for w in fallback)
    plain = tool.train_calls(tool.parser().parse_args(["--root", str(tmp_path)]),
                             tmp_path / "data")  # fmt: skip
    assert "loader.rcnet_once" not in plain[0] and "scene_sdf" not in plain[0]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=memory[2:])
    assert cfg.loader.rcnet_once is True and cfg.model.freeze_rcnet is True
    assert cfg.loader.scene_sdf is True and cfg.loss.param_terms.penetration == 30.0


def test_rcnet_new_per_step_caps_the_in_memory_call_only(tmp_path):
    """``--rcnet-new-per-step``: ``loader.rcnet_new_per_step`` in the in-memory call (which
    composes), nothing in the fallback; without ``--rcnet-once`` or below 0, one clear error."""
    import shlex

    from engine_testkit import CONFIGS
    from hydra import compose, initialize_config_dir

    tool = load_tool("gpu/parametric_run")
    args = tool.parser().parse_args(["--root", str(tmp_path), "--rcnet-once",
                                     "--rcnet-new-per-step", "24"])  # fmt: skip
    tool.apply_exp_defaults(args)
    memory, fallback = (shlex.split(c) for c in tool.train_calls(args, tmp_path / "data"))
    assert "loader.rcnet_new_per_step=24" in memory
    assert not any(w.startswith("loader.") for w in fallback)  # (tmp_path holds the name)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=memory[2:])
    assert cfg.loader.rcnet_new_per_step == 24 and cfg.loader.rcnet_once is True
    for bad in (["--rcnet-new-per-step", "24"], ["--rcnet-once", "--rcnet-new-per-step", "-1"]):
        with pytest.raises(ValueError, match="--rcnet-new-per-step"):
            tool.apply_exp_defaults(tool.parser().parse_args(bad))


def _override(cmd: list[str], key: str) -> str | None:
    """The value of ``key=...`` in a command line, or None."""
    found = [c.split("=", 1)[1] for c in cmd if c.startswith(key + "=")]
    return found[-1] if found else None


def _generation_config(cmd: list[str]):
    """The `GenerationConfig` a data job's command gives (hydra-composed as
    tools/make_dataset.py composes it)."""
    from engine_testkit import CONFIGS
    from hydra import compose, initialize_config_dir

    from sahmr.synth.plan import config_from_mapping

    args = cmd[cmd.index("tools/make_dataset.py") + 1 :]
    name = "make_dataset"
    if "--config-name" in args:
        i = args.index("--config-name")
        name, args = args[i + 1], args[:i] + args[i + 2 :]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return config_from_mapping(compose(config_name=name, overrides=args))


def _planned_rooms(cmd: list[str]) -> dict:
    """The room table the generator would plan from a data job's command."""
    from sahmr.synth.plan import scene_table

    return scene_table(_generation_config(cmd))


def test_every_lease_draws_fresh_train_rooms_and_frames(tmp_path, monkeypatch):
    """Up to run 33 every lease generated the same set (seed 0, train rooms 100-139): each
    trained on the same frames. The default now draws a seed; val and test keep their room pools."""
    jobs, tool = _jobs(tmp_path, monkeypatch, "--data-seed", "7")
    data = jobs["data"].cmd
    assert _override(data, "seed") == "7"
    assert _override(data, "splits.train.seed_range") == "[1280,1320]"
    assert _override(jobs["data_away"].cmd, "seed") == "8"
    table = _planned_rooms(data)  # plans without the disjointness error
    by_split = {}
    for rec in table.values():
        by_split.setdefault(rec["split"], set()).add(rec["seed"])
    assert by_split["train"] == set(range(1280, 1320))
    assert by_split["val"] == set(range(140, 145))
    assert {500, 501, 502} <= by_split["test"]
    # seed 0: the generator's defaults, exactly the earlier leases' set
    zero, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "0")
    assert _override(zero["data"].cmd, "seed") is None
    assert _override(zero["data"].cmd, "splits.train.seed_range") is None
    assert _override(zero["data_away"].cmd, "seed") is None
    # no seed given: one is drawn, in range, and the jobs carry it
    monkeypatch.setattr(tool.time, "time", lambda: 1_796_000_000.0)
    drawn = tool.parser().parse_args(["--root", str(tmp_path)])
    jobs = {j.name: j for j in tool.build_jobs(drawn)}
    assert 1 <= drawn.data_seed < tool.DATA_SEED_LIMIT
    assert _override(jobs["data"].cmd, "seed") == str(drawn.data_seed)
    # the largest seed keeps the train rooms apart from the rest too
    top, _ = _jobs(tmp_path, monkeypatch, "--data-seed", str(tool.DATA_SEED_LIMIT - 1))
    train_lo = int(_override(top["data"].cmd, "splits.train.seed_range")[1:].split(",")[0])
    assert train_lo > 503


def test_a_data_seed_out_of_range_is_one_clear_error(tmp_path, capsys):
    tool = load_tool("gpu/parametric_run")
    with pytest.raises(SystemExit) as exc:
        tool.main(["--root", str(tmp_path / "lease"), "--data-seed", "-1"])
    assert exc.value.code == 2
    assert "--data-seed must be in" in capsys.readouterr().err
    assert not (tmp_path / "lease").exists()


def test_the_generator_commands_parse_on_hydras_command_line(tmp_path, monkeypatch):
    """The first seeded lease's away set failed: ``--config-name`` stood between overrides,
    and hydra's command line rejected the seed after it. Both generator jobs go through
    ``tools/make_dataset.py --cfg job``, which parses and composes without generating."""
    jobs, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "7")
    repo = Path(__file__).resolve().parents[2]
    for name, seed in (("data", "7"), ("data_away", "8")):
        cmd = jobs[name].cmd
        args = cmd[cmd.index("tools/make_dataset.py") + 1 :]
        done = subprocess.run(
            [sys.executable, "tools/make_dataset.py", *args, "--cfg", "job"],
            cwd=repo, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"{name}: {done.stderr[-600:]}"
        assert f"seed: {seed}" in done.stdout.splitlines()
        assert not Path(_override(cmd, "out_dir")).exists()  # composed, nothing written


def _train_overrides(tool, a) -> list[str]:
    """The in-memory training command's hydra overrides (`train_calls`' first command)."""
    words = shlex.split(tool.train_calls(a, a.root / "data")[0])
    return words[words.index("tools/train.py") + 1 :]


def _compose_train(overrides: list[str]):
    from engine_testkit import CONFIGS
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_plain_scores_score_the_shipped_bodies_unbent_on_test_and_away(tmp_path, monkeypatch):
    """The evaluator bends penetrating bodies' joints out of the scan by default since
    2026-12-07; ``--plain-scores`` adds the shipped SA-HMR scored without it (as every earlier
    lease scored) on the test and away frames the default scorings use (same data, checkpoint
    and frame count), for HMR's lease as for SA-HMR's; without it there is no such scoring."""
    plain, _ = _jobs(tmp_path, monkeypatch, "--exp", "hmr")
    jobs, _ = _jobs(tmp_path, monkeypatch, "--exp", "hmr", "--plain-scores")
    assert not [n for n in plain if n.endswith("_plain_test") or n.endswith("_plain_away")]
    added = set(jobs) - set(plain)
    assert added == {"eval_shipped_plain_test", "eval_shipped_plain_away"}
    for tag in ("test", "away"):
        unbent, base = jobs[f"eval_shipped_plain_{tag}"], jobs[f"eval_shipped_{tag}"]
        assert _override(unbent.cmd, "scene_depenetrate") == "false"
        assert _override(base.cmd, "scene_depenetrate") is None  # the evaluator's default: on
        for key in ("checkpoint", "data.root", "split", "frames", "scene_metrics"):
            assert _override(unbent.cmd, key) == _override(base.cmd, key), key
        assert unbent.after == base.after and unbent.soft
        assert _override(unbent.cmd, "out").endswith(f"shipped_plain_{tag}")


@pytest.mark.parametrize("exp", ["metro_small", "hmr"])
def test_a_baseline_lease_trains_from_random_weights_and_scores_beside_sahmr(
    tmp_path, monkeypatch, exp
):
    """Issue 18's comparison table needs METRO + PnP and HMR + PnP retrained on a lease: the
    same data and scoring as SA-HMR's, none of SA-HMR's own steps, and a training command
    whose every override and submodule path exists for that method."""
    from hydra.utils import instantiate

    argv = ("--exp", exp, "--data-seed", "5", "--from-scratch")
    jobs, tool = _jobs(tmp_path, monkeypatch, *argv)
    a = tool.parser().parse_args(["--root", str(tmp_path), *argv])
    tool.apply_exp_defaults(a)
    overrides = _train_overrides(tool, a)
    assert f"exp={exp}" in overrides
    assert not [o for o in overrides if o.startswith(("init.weights", "loader.rcnet_once"))]
    assert "trainer.lr_multipliers={}" in overrides
    assert ("loss.param_terms.betas=0.5" in overrides) == (exp == "metro_small")
    assert not {"profile", "refit", "export_last", "eval_shipped_baseline_val"} & set(jobs)
    assert jobs["train"].needs == []  # no shipped weights needed to start
    export = jobs["export"].cmd[-1]
    assert f"{tmp_path / (exp + '.pt')}" in export
    assert ("--int8" in export) == (exp == "metro_small")  # METRO ships int8, 7.2 MB
    for tag in ("val", "test", "away"):  # both scored on the same frames
        assert {f"eval_new_{tag}", f"eval_shipped_{tag}"} <= set(jobs)
    assert _override(jobs["data"].cmd, "seed") == "5"
    # the command composes (every key exists) and its compiled submodules are the method's
    cfg = _compose_train(overrides[:])
    assert cfg.exp_name == f"{exp}_run" and not cfg.get("init", {}).get("weights")
    assert f"runs/{exp}_run/checkpoints/best.pt" in jobs["export"].cmd[-1]
    method = instantiate(cfg.model)
    for path in cfg.trainer.compile_submodules:
        method.get_submodule(path)  # AttributeError: the trainer would skip it silently


def test_a_baseline_lease_continues_its_shipped_checkpoint(tmp_path, monkeypatch):
    """A lease's METRO saw 289,280 samples (run 35) where SA-HMR's lineage saw about a million:
    the next lease continues the shipped file rather than starting over, scores it on the same
    val frames as the new one (it ships only if beaten), and a baseline with no shipped file
    still starts from random weights."""
    tool = load_tool("gpu/parametric_run")
    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    (shipped / "metro_small.pt").write_bytes(b"weights")  # no hmr.pt
    monkeypatch.setattr(tool, "shipped_baseline", lambda exp: shipped / f"{exp}.pt")
    monkeypatch.setattr(tool, "PY", "echo")

    def plan(*argv):
        a = tool.parser().parse_args(["--root", str(tmp_path / "run"), "--data-seed", "5", *argv])
        jobs = {j.name: j for j in tool.build_jobs(a)}
        return jobs, _train_overrides(tool, a)

    jobs, overrides = plan("--exp", "metro_small")
    assert f"init.weights={shipped / 'metro_small.pt'}" in overrides
    assert jobs["train"].needs == [shipped / "metro_small.pt"]
    ev = jobs["eval_shipped_baseline_val"]
    assert f"checkpoint={shipped / 'metro_small.pt'}" in ev.cmd and ev.soft
    assert "train" in ev.after  # the lent GPU trains first (--shipped-scores after)
    assert not [n for n in jobs if n.startswith("eval_shipped_baseline_") and n != ev.name]
    jobs, overrides = plan("--exp", "metro_small", "--from-scratch")
    assert not [o for o in overrides if o.startswith("init.weights")]
    assert "eval_shipped_baseline_val" not in jobs
    jobs, overrides = plan("--exp", "hmr")
    assert not [o for o in overrides if o.startswith("init.weights")] and jobs["train"].needs == []


def test_the_sahmr_lease_keeps_its_defaults_and_baselines_refuse_sahmr_steps(
    tmp_path, monkeypatch, capsys
):
    jobs, tool = _jobs(tmp_path, monkeypatch)
    a = tool.parser().parse_args(["--root", str(tmp_path)])
    tool.apply_exp_defaults(a)
    overrides = _train_overrides(tool, a)
    assert f"init.weights={tool.SHIPPED}" in overrides
    assert "trainer.lr_multipliers={mesh_net.param_head:1.5}" in overrides
    assert "trainer.compile_submodules=[mesh_net.backbone,mesh_net.upsampler]" in overrides
    assert {"refit", "export_last"} <= set(jobs)
    assert "--int8" in jobs["export"].cmd[-1]
    assert "sahmr_small_param.pt" in jobs["export"].cmd[-1]
    cfg = _compose_train(overrides)
    assert cfg.loss.param_terms.betas == 0.5
    for bad in (["--rcnet-once"], ["--scene-penetration", "30"], ["--refit-train-frames", "10"]):
        with pytest.raises(SystemExit) as exc:
            tool.main(["--root", str(tmp_path / "x"), "--exp", "hmr", *bad])
        assert exc.value.code == 2
        assert "image-only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_lease_sets_its_val_and_test_frames_in_many_rooms(tmp_path, monkeypatch):
    """Runs 33 and 34 scored 960 test frames from 5 rooms each (one room per 250-frame shard)
    and the shipped file moved by 10 mm between them; 50-frame val and test shards spread the
    same frames over about three times as many rooms."""
    from sahmr.synth.plan import plan_shards, shard_scene_id

    jobs, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "7")
    data = jobs["data"].cmd
    assert _override(data, "splits.val.samples_per_shard") == "50"
    assert _override(jobs["data_away"].cmd, "splits.test.samples_per_shard") == "50"
    cfg = _generation_config(data)
    plans = plan_shards(cfg)
    for split, shards, least_rooms in (("val", 30, 15), ("test", 30, 12)):
        mine = [p for p in plans if p.split == split]
        assert len(mine) == shards and {p.num_samples for p in mine} == {50}
        assert len({shard_scene_id(cfg, p) for p in mine}) >= least_rooms
    assert {p.num_samples for p in plans if p.split == "train"} == {250}
    off, _ = _jobs(tmp_path, monkeypatch, "--eval-shard-samples", "0")
    assert _override(off["data"].cmd, "splits.val.samples_per_shard") is None


def test_the_scoring_sdfs_are_built_beside_the_training(tiny_dataset, tmp_path, monkeypatch):
    """Run 35's first test scoring spent 4.4 minutes building its rooms' SDF grids after the
    training, and the lease ended before the next scoring. The lease now builds them while it
    trains (``warm_sdfs``), and `tools/eval_checkpoint.py` with scene metrics must then find
    every grid it needs in the cache: building one is an error here."""
    from engine_testkit import run_hydra_tool

    import sahmr.scene.sdf as sdf
    from sahmr.inference.method import bundled_checkpoint

    tool = load_tool("gpu/parametric_run")
    jobs, _ = _jobs(tmp_path / "plan", monkeypatch)
    assert jobs["warm_sdfs"].after == ["eval_splits"] and jobs["warm_sdfs"].soft
    assert jobs["warm_sdfs_away"].after == ["data_away"]
    assert "--warm-sdfs" in jobs["warm_sdfs"].cmd and "nice" in jobs["warm_sdfs"].cmd
    no_away, _ = _jobs(tmp_path / "plan2", monkeypatch, "--away-samples", "0")
    assert "warm_sdfs_away" not in no_away and "warm_sdfs" in no_away

    monkeypatch.setenv("SAHMR_CACHE_DIR", str(tmp_path / "cache"))
    assert tool.split_rooms(tiny_dataset, "val") == ["bundled_bedroom"]
    repo = Path(tool.__file__).resolve().parents[2]
    done = subprocess.run(  # the job's own command line, its process pool included
        [sys.executable, "tools/gpu/parametric_run.py", "--warm-sdfs", str(tiny_dataset), "val"],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-600:]
    assert "SDF grids of 1 rooms ready" in done.stdout
    assert len(list((tmp_path / "cache" / "sdf").glob("*.npz"))) == 1

    def no_building(*args, **kwargs):
        raise AssertionError("the scoring built an SDF grid the lease had built")

    monkeypatch.setattr(sdf, "build_sdf_grid", no_building)
    out = tmp_path / "eval"
    run_hydra_tool(
        "eval_checkpoint",
        [f"checkpoint={bundled_checkpoint('metro')}", f"data.root={tiny_dataset}", "split=val",
         f"out={out}", "device=cpu", "num_workers=0", "batch_size=4", "progress=false"],
        monkeypatch,
    )  # fmt: skip
    assert "pene" in (out / "metrics.json").read_text()


def test_a_voter_lease_trains_the_shipped_rcnet_and_puts_it_back(tmp_path, monkeypatch):
    """``--exp rcnet_small`` (run 41): RCNet alone, from the shipped file's ``rcnet.`` weights,
    validated as the shipped model votes (its ROI refinements and depth search, read from the
    shipped config); its best weights go back into the shipped file beside the mesh network
    (the export), whose head the refit then fits to the new roots; the refit and the shipped
    file are scored everywhere, the merged file on val; RCNet also comes back alone."""
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    jobs, tool = _jobs(tmp_path, monkeypatch, "--exp", "rcnet_small", "--data-seed", "3",
                       "--train-extra", "model.roi_noise_std=0.15")  # fmt: skip
    a = tool.parser().parse_args(["--root", str(tmp_path), "--exp", "rcnet_small",
                                  "--train-extra", "model.roi_noise_std=0.15"])  # fmt: skip
    tool.apply_exp_defaults(a)
    overrides = _train_overrides(tool, a)
    assert f"init.weights={tool.SHIPPED}" in overrides and "init.source_prefix=rcnet." in overrides
    assert not [o for o in overrides if o.startswith("loss.param_terms")]
    cfg = _compose_train(overrides)
    shipped = checkpoint_config(load_checkpoint(tool.SHIPPED), tool.SHIPPED).model.rcnet
    for key in tool.VOTER_SETTINGS:
        assert OmegaConf.select(cfg.model, key) == OmegaConf.select(shipped, key), key
    assert cfg.model.teacher_forcing and cfg.model.roi_noise_std == 0.15
    b = tool.parser().parse_args(["--root", str(tmp_path), "--exp", "rcnet_small",
                                  "--train-extra", "model.roi_depth_noise=0.2"])  # fmt: skip
    tool.apply_exp_defaults(b)
    assert _compose_train(_train_overrides(tool, b)).model.roi_depth_noise == 0.2  # the user's
    assert cfg.exp_name == "rcnet_small_run" and cfg.trainer.best_metric == "root_error_mm"
    assert "profile" not in jobs and jobs["train"].needs == [tool.SHIPPED]

    export = shlex.split(jobs["export"].cmd[-1].split(";", 2)[-1])
    assert export[1:5] == ["tools/export_checkpoint.py", str(tool.SHIPPED), "--rcnet", "$src"]
    assert export[5] == str(tmp_path / "sahmr_small_param.pt")
    assert {"--int8", "--fp16-under=mesh_net", "--int8-under=mesh_net.encoder"} <= set(export)
    assert "runs/rcnet_small_run/checkpoints/best.pt" in jobs["export"].cmd[-1]
    assert str(tmp_path / tool.VOTER_EXPORT) in jobs["export_rcnet"].cmd[-1]
    assert jobs["refit"].after == ["export"]
    shown = subprocess.run(jobs["refit"].cmd, capture_output=True, text=True, check=True)
    merged = str(tmp_path / "sahmr_small_param.pt")
    assert shown.stdout.split()[:2] == ["tools/refit_head.py", merged]
    assert {"eval_new_val", "eval_refit_val", "eval_refit_test", "eval_refit_away",
            "eval_shipped_test"} <= set(jobs)  # fmt: skip
    assert "eval_new_test" not in jobs
    with pytest.raises(ValueError, match="trains RCNet"):
        tool.apply_exp_defaults(tool.parser().parse_args(["--exp", "rcnet_small", "--rcnet-once"]))


def test_a_trained_rcnet_merged_into_an_exported_file_leaves_the_mesh_network(tmp_path):
    """The voter lease's export: an RCNet checkpoint merged into the shipped (int8 / float16)
    file. Every ``rcnet.`` tensor is the new one (to int8 rounding), every ``mesh_net.`` tensor
    is the shipped one exactly (re-quantising int8 weights with their own scales gives the same
    integers), and the stored config's RCNet settings are the trained RCNet's."""
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import atomic_torch_save, checkpoint_config, load_checkpoint
    from sahmr.inference.method import bundled_checkpoint

    export_tool = load_tool("export_checkpoint")
    shipped_path = bundled_checkpoint("sahmr")
    shipped = load_checkpoint(shipped_path)
    cfg = checkpoint_config(shipped, shipped_path)
    rc_cfg = OmegaConf.create({"model": OmegaConf.to_container(cfg.model.rcnet)})
    OmegaConf.update(rc_cfg, "model.roi_refinements", 3)
    g = torch.Generator().manual_seed(0)
    rc_state = {k[len("rcnet."):]: (v.float() + 0.01 * torch.randn(v.shape, generator=g)
                                    if v.is_floating_point() else v)
                for k, v in shipped["model"].items() if k.startswith("rcnet.")}  # fmt: skip
    rc_path = tmp_path / "rcnet.pt"
    rc_ckpt = {"format": shipped["format"], "version": shipped["version"],
               "config": OmegaConf.to_yaml(rc_cfg), "model": rc_state}  # fmt: skip
    atomic_torch_save(rc_ckpt, rc_path)
    out = tmp_path / "merged.pt"
    flags = ["--int8", "--fp16-under=mesh_net", "--int8-under=mesh_net.encoder"]
    assert export_tool.main([str(shipped_path), "--rcnet", str(rc_path), str(out), *flags]) == 0
    merged = load_checkpoint(out)
    assert set(merged["model"]) == set(shipped["model"])
    for key, value in shipped["model"].items():
        if key.startswith("mesh_net."):
            assert torch.equal(merged["model"][key], value), key
        elif key.startswith("rcnet.") and value.is_floating_point() and value.numel() > 64:
            new = rc_state[key[len("rcnet."):]]
            step = new.abs().max() / 127  # an int8 step of the widest channel, at most
            assert (merged["model"][key].float() - new).abs().max() <= step, key
            assert not torch.equal(merged["model"][key].float(), value.float()), key
    assert checkpoint_config(merged, out).model.rcnet.roi_refinements == 3


def test_data_extra_reaches_the_main_set_and_composes(tmp_path, monkeypatch):
    """``--data-extra`` passes generator overrides to the lease's main set (not the away
    set), after the lease's own, and the command still composes as tools/make_dataset.py
    composes it."""
    jobs, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "4", "--data-extra",
                    "camera.hidden_fraction=0.5", "camera.hidden_candidates=6")  # fmt: skip
    data = jobs["data"].cmd
    assert data[-2:] == ["camera.hidden_fraction=0.5", "camera.hidden_candidates=6"]
    cfg = _generation_config(data)
    assert cfg.camera.hidden_fraction == 0.5 and cfg.camera.hidden_candidates == 6
    assert _override(jobs["data_away"].cmd, "camera.hidden_fraction") is None
    plain, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "4")
    assert _generation_config(plain["data"].cmd).camera.hidden_fraction == 0.0
    train_only, _ = _jobs(tmp_path, monkeypatch, "--data-seed", "4", "--data-extra",
                          "splits.train.hidden_fraction=0.5")  # fmt: skip
    cfg = _generation_config(train_only["data"].cmd)
    assert [cfg.hidden_fraction(k) for k in ("train", "val", "test")] == [0.5, 0.0, 0.0]
