"""tools/refit_head.py on a generated set: spread frames, keyed caches, --val-data, saves."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from engine_testkit import load_tool

import sahmr.engine.head_refit as head_refit
from sahmr.engine.data import spread_indices
from sahmr.engine.head_refit import read_cache_key as read_key

ARGS = ["--train-frames", "4", "--val-frames", "2", "--steps", "2", "--batch", "2",
        "--val-every", "1", "--lr", "1e-3"]  # fmt: skip


@pytest.fixture()
def shipped(shipped_checkpoint):
    return shipped_checkpoint


def _counting(monkeypatch) -> list:
    calls = []
    real = head_refit.collect_head_inputs

    def count(model, steps, *args, **kwargs):
        calls.append(1)
        return real(model, steps, *args, **kwargs)

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


def test_extra_train_sets_join_the_training_under_their_own_caches(
    shipped, tiny_dataset, tmp_path, capsys
):
    """``--extra-train DATA N``: N frames spread over another set's train split are cached
    under their own key and file (not the main set's, even at the same size) and trained on
    with the main set's frames; val is untouched."""
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    tool = load_tool("refit_head")
    cache, out = tmp_path / "cache", tmp_path / "refit.pt"
    args = [str(shipped), str(tiny_dataset), str(out), "--cache", str(cache), *ARGS,
            "--extra-train", str(other), "4"]  # fmt: skip
    assert tool.main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["train_frames"] == 8 and report["val_frames"] == 2
    assert report["extra_train"] == [{"data": str(other), "frames": 4}]
    name = tool.extra_cache_name(other, 4, True)
    assert name != "train_4.pt" and name == tool.extra_cache_name(other / "." , 4, True)
    key = json.loads((cache / name).with_suffix(".json").read_text())
    assert key["data"] == str(other.resolve()) and key["split"] == "train" and key["of"] == 8
    main_key = json.loads((cache / "train_4.json").read_text())
    assert main_key["data"] == str(tiny_dataset.resolve())
    # the same frames of another copy: the cached head inputs match the main set's
    torch.testing.assert_close(head_refit.HeadCache.load(cache / name).root_cam,
                               head_refit.HeadCache.load(cache / "train_4.pt").root_cam)
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["SHIPPED", "DATA", "OUT", "--val-data", "nowhere"], "not a generated dataset"),
    (["SHIPPED", "nowhere", "OUT"], "not a generated dataset"),
    (["SHIPPED", "DATA", "OUT", "--val-frames", "0"], "--val-frames must be >= 1"),
    (["SHIPPED", "DATA", "OUT", "--penetration", "-0.5"], "--penetration must be >= 0"),
    (["SHIPPED", "DATA", "OUT", "--penetration", "nan"], "--penetration must be >= 0"),
    (["SHIPPED", "DATA", "OUT", "--extra-train", "nowhere", "3"], "not a generated dataset"),
    (["SHIPPED", "DATA", "OUT", "--extra-train", "DATA", "0"], "FRAMES must be a whole number"),
    (["SHIPPED", "DATA", "OUT", "--extra-train", "DATA", "many"], "FRAMES must be a whole number"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(args, message, shipped, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "refit.pt"
    names = {"SHIPPED": str(shipped), "DATA": str(tiny_dataset), "OUT": str(out)}
    with pytest.raises(SystemExit) as exit_info:
        load_tool("refit_head").main([names.get(x, x) for x in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].count("error:") == 1
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_penetration_adds_room_crops_to_matching_caches_without_the_network(
    shipped, tiny_dataset, tmp_path, monkeypatch, capsys
):
    """``--penetration``: caches written without crops get them (no network run), their keys
    say so, validation reports the crop PenE; crops collected with the network on a fresh
    cache are the same; each crop's centre node is the frame's room SDF at its true root."""
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.scene.sdf import load_or_build_sdf

    tool = load_tool("refit_head")
    cache, sdf, out = tmp_path / "cache", tmp_path / "sdf", tmp_path / "refit.pt"
    pen = ["--penetration", "0.5", "--sdf-cache", str(sdf), "--crop-sdf", "exact"]
    calls = _counting(monkeypatch)
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache), *ARGS]) == 0
    assert len(calls) == 2
    assert json.loads((cache / "val_2.json").read_text())["sdf_crop"] is None
    assert head_refit.HeadCache.load(cache / "val_2.pt").sdf_crop is None

    calls.clear()
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(cache),
                      *ARGS, *pen]) == 0  # fmt: skip
    assert calls == []  # the crops were added; the network did not run
    nodes = head_refit.SDF_CROP_NODES
    for name, frames in (("train_4", 4), ("val_2", 2)):
        key = json.loads((cache / f"{name}.json").read_text())
        assert key["sdf_crop"] == head_refit.sdf_crop_spec("exact") and key["frames"] == frames
        crop = head_refit.HeadCache.load(cache / f"{name}.pt").sdf_crop
        assert crop.shape == (frames, nodes, nodes, nodes) and crop.dtype == torch.float16
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["penetration"] == 0.5 and report["start_val_pene_mm"] >= 0
    assert all("val_pene_mm" in row for row in report["history"])

    # the centre node of each val crop: the frame's own room, read at its true root
    val = SyntheticDataset(tiny_dataset, "val")
    crop = head_refit.HeadCache.load(cache / "val_2.pt").sdf_crop
    for row, index in enumerate(spread_indices(len(val), 2)):
        sample = val[index]
        grid = load_or_build_sdf(tiny_dataset / "rooms" / sample.scene_id / "mesh.ply",
                                 cache_dir=sdf)  # fmt: skip
        root_world = torch.as_tensor(sample.joints_world[0], dtype=torch.float64)
        c = nodes // 2
        assert float(crop[row, c, c, c]) == pytest.approx(float(grid.sample(root_world)),
                                                          abs=1e-3)  # fmt: skip

    # a fresh cache with --penetration: collected with the network, the same crops
    calls.clear()
    fresh = tmp_path / "fresh"
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--cache", str(fresh),
                      *ARGS, *pen]) == 0  # fmt: skip
    assert len(calls) == 2
    for name in ("train_4", "val_2"):
        a, b = (head_refit.HeadCache.load(f / f"{name}.pt") for f in (fresh, cache))
        torch.testing.assert_close(a.sdf_crop, b.sdf_crop, rtol=0, atol=1e-3)
        assert read_key(fresh / f"{name}.pt") == read_key(cache / f"{name}.pt")
    capsys.readouterr()


def test_default_crops_read_the_grid_the_generator_stored_with_each_room(
    shipped, tiny_dataset, tmp_path, monkeypatch
):
    """Without ``--crop-sdf``, crops read the grid stored in a room's folder (here the train
    room's exact grid + 0.5 m, so its source shows, joined with the room's declared ground
    as every room grid is), a room without one gets the evaluator's
    grid (built once), the key says so, and asking for exact crops re-crops without the
    network."""
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.scene.sdf import SDFGrid, load_or_build_sdf

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    rooms = data / "rooms"
    (office,) = [r for r in rooms.iterdir() if not r.name.startswith("bundled")]
    exact = {r.name: load_or_build_sdf(r / "mesh.ply", cache_dir=tmp_path / "prep")
             for r in rooms.iterdir()}  # fmt: skip
    g = exact[office.name]
    SDFGrid(g.origin, g.voxel_size, g.values + 0.5).save(office / "placer_sdf_0400.npz")

    tool = load_tool("refit_head")
    cache, sdf, out = tmp_path / "cache", tmp_path / "sdf", tmp_path / "refit.pt"
    calls = _counting(monkeypatch)
    assert tool.main([str(shipped), str(data), str(out), "--cache", str(cache), *ARGS,
                      "--penetration", "0.5", "--sdf-cache", str(sdf)]) == 0  # fmt: skip
    assert len(calls) == 2
    assert len(list(sdf.rglob("*.npz"))) == 1  # the bedroom's evaluator grid alone
    c = head_refit.SDF_CROP_NODES // 2
    for split, frames in (("train", 4), ("val", 2)):
        key = json.loads((cache / f"{split}_{frames}.json").read_text())
        assert key["sdf_crop"] == head_refit.sdf_crop_spec("stored")
        dataset = SyntheticDataset(data, split)
        crop = head_refit.HeadCache.load(cache / f"{split}_{frames}.pt").sdf_crop
        for row, index in enumerate(spread_indices(len(dataset), frames)):
            sample = dataset[index]
            root_world = torch.as_tensor(sample.joints_world[0], dtype=torch.float64)
            expected = float(exact[sample.scene_id].sample(root_world))
            if sample.scene_id == office.name:  # the stored grid, joined with the ground
                expected = min(expected + 0.5, float(root_world[2]))
            assert float(crop[row, c, c, c]) == pytest.approx(expected, abs=1e-3)

    calls.clear()  # the same caches with exact crops: crops replaced, no network run
    assert tool.main([str(shipped), str(data), str(out), "--cache", str(cache), *ARGS,
                      "--penetration", "0.5", "--sdf-cache", str(sdf),
                      "--crop-sdf", "exact"]) == 0  # fmt: skip
    assert calls == []
    assert json.loads((cache / "val_2.json").read_text())["sdf_crop"]["source"] == "exact"


def test_stored_or_built_sdf_prefers_the_finest_stored_grid(tmp_path, monkeypatch):
    """A room folder with two stored grids: the finer is read; with none, the evaluator's grid
    is built (`load_or_build_sdf`, here a stand-in that records its call)."""
    import numpy as np

    import sahmr.scene.sdf as sdf_mod
    from sahmr.scene.sdf import SDFGrid
    from sahmr.scene.sdf_store import stored_or_built_sdf

    room = tmp_path / "room"
    room.mkdir()
    mesh = room / "mesh.ply"
    mesh.write_bytes(b"")
    for pitch, value in ((0.04, 4.0), (0.025, 2.5)):
        grid = SDFGrid(np.zeros(3, np.float32), pitch, np.full((3, 3, 3), value, np.float32))
        grid.save(room / f"placer_sdf_{round(pitch * 1e4):04d}.npz")
    got = stored_or_built_sdf(mesh)
    assert got.voxel_size == pytest.approx(0.025) and float(got.values.max()) == 2.5

    bare = tmp_path / "bare"
    bare.mkdir()
    built = []
    monkeypatch.setattr(sdf_mod, "load_or_build_sdf",
                        lambda path, **kw: built.append((path, kw)) or "grid")  # fmt: skip
    assert stored_or_built_sdf(bare / "mesh.ply", voxel_size=0.02) == "grid"
    assert built == [(bare / "mesh.ply", {"voxel_size": 0.02, "cache_dir": None})]


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
