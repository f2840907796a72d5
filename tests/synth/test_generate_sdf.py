"""The generator's room SDFs: built once in the main process (CUDA there when available),
cached next to the room, loaded by workers; generation without open3d; sequences with
parallel workers and resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sahmr.data.shards import ShardReader, shard_name
from sahmr.scene.sdf import SDFGrid
from sahmr.synth import generate as gen
from sahmr.synth import placer_sdf, room_store, worker
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig, shard_scene_id
from sahmr.synth.room_store import sdf_cache_path


def _cfg(out: Path, **kw) -> GenerationConfig:
    base = dict(
        out_dir=str(out), num_samples=4, samples_per_shard=2, seed=3, workers=0,
        views_per_body=2, crop_size=48, crop_format="png", sdf_voxel_size=0.05,
        splits={"train": dict(fraction=1, bundled=["bedroom"])},
    )  # fmt: skip
    base.update(kw)
    return GenerationConfig.from_dict(base)


def _rows(root: Path) -> dict[str, list[dict]]:
    out = {}
    for p in sorted((root / "shards").glob("shard-*.npz")):
        r = ShardReader(p)
        out[p.name] = [r.row(i) for i in range(len(r))]
        r.close()
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert len(a[name]) == len(b[name])
        for ra, rb in zip(a[name], b[name]):
            for k in ra:
                if isinstance(ra[k], np.ndarray):
                    np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{name} {k}")
                else:
                    assert ra[k] == rb[k], (name, k)


@pytest.fixture
def build_log(tmp_path, monkeypatch):
    """Records the process id of every placer SDF build (forked workers inherit it)."""
    log = tmp_path / "sdf_builds.txt"
    real = placer_sdf.build_placer_sdf

    def logged(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {kwargs.get('device')}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(placer_sdf, "build_placer_sdf", logged)
    return log


def test_sdf_config_and_device():
    cfg = _cfg(Path("x"))
    assert cfg.content_dict()["sdf_voxel_size"] == 0.05
    assert "sdf_device" not in cfg.content_dict()
    assert "sdf_voxel_size" not in _cfg(Path("x"), sdf_voxel_size=0.025).content_dict()
    with pytest.raises(ValueError, match="sdf_device"):
        _cfg(Path("x"), sdf_device="tpu")
    assert room_store.resolve_sdf_device("cpu") == "cpu"
    assert room_store.resolve_sdf_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_sdf_built_once_in_the_main_process_and_loaded_by_workers(tmp_path, build_log):
    out = tmp_path / "par"
    summary = generate(_cfg(out, workers=2), progress=False)
    assert summary["samples_per_split"] == {"train": 4}
    builds = build_log.read_text().split()
    assert builds == [str(os.getpid()), "cpu"]  # one room, built here, on this machine's CPU
    path = sdf_cache_path(out, "bundled_bedroom", 0.05)
    grid = SDFGrid.load(path)
    assert abs(grid.voxel_size - 0.05) < 1e-6
    # a second run (resume) reuses the cached grid
    generate(_cfg(out, workers=2, resume=True), progress=False)
    assert len(build_log.read_text().split()) == 2


def test_generates_without_open3d(tmp_path, monkeypatch, build_log):
    monkeypatch.setitem(sys.modules, "open3d", None)  # as on the GPU machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the brute-force backend crawls on a busy machine's threads
    try:
        # A 10 cm grid keeps the brute-force build fast, but the placer lands a body on it
        # only for some draws (feet through the 5 cm floor slab): seed 1 places one at once.
        cfg = _cfg(tmp_path, num_samples=2, sdf_voxel_size=0.1, sdf_device="cpu",
                   actions={"stand": 1.0}, seed=1)  # fmt: skip
        summary = generate(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["samples_per_split"] == {"train": 2}
    assert sdf_cache_path(tmp_path, "bundled_bedroom", 0.1).is_file()
    assert build_log.read_text().split() == [str(os.getpid()), "cpu"]


def test_sequences_with_parallel_workers_and_resume(tmp_path):
    kw = dict(num_samples=8, samples_per_shard=4, sequence_fraction=1.0, sequence_frames=4)
    generate(_cfg(tmp_path, workers=2, **kw), progress=False)  # two shards, two workers
    ref = _rows(tmp_path)
    assert all(r["action"].startswith("seq_") for rows in ref.values() for r in rows)
    (tmp_path / "shards" / shard_name(1)).unlink()  # killed before it was written
    kept = (tmp_path / "shards" / shard_name(0)).stat().st_mtime_ns
    summary = generate(_cfg(tmp_path, resume=True, **kw), progress=False)  # in-process
    assert summary["this_run"]["shards_written"] == 1
    assert (tmp_path / "shards" / shard_name(0)).stat().st_mtime_ns == kept
    _assert_same(_rows(tmp_path), ref)  # the rewritten shard equals the worker's


def test_evaluation_splits_first_and_each_room_built_before_its_shards(tmp_path, monkeypatch):
    """Shards of val/test are written before training shards (a trainer streaming the set
    validates from its start); a room's SDF exists before any of its shards runs, and the
    parallel run writes what the serial run writes."""
    events: list[tuple[str, str]] = []
    real_sdf, real_run = gen.write_placer_sdf, gen.run_shard

    def sdf(root, sid, *a, **k):
        events.append(("sdf", sid))
        return real_sdf(root, sid, *a, **k)

    def run(plan):
        events.append(("shard", plan.split, shard_scene_id(worker.worker_state().cfg, plan)))
        return real_run(plan)

    monkeypatch.setattr(gen, "write_placer_sdf", sdf)
    monkeypatch.setattr(gen, "run_shard", run)
    splits = {
        "train": dict(fraction=2, bundled=["bedroom"]),
        "val": dict(fraction=1, bundled=["office"]),
        "test": dict(fraction=1, bundled=["gym"]),
    }
    serial = tmp_path / "serial"
    generate(_cfg(serial, num_samples=8, splits=splits, actions={"stand": 1.0}), progress=False)
    shards = [e for e in events if e[0] == "shard"]
    assert [e[1] for e in shards] == ["val", "test", "train", "train"]
    for k, e in enumerate(events):
        if e[0] == "shard":
            assert ("sdf", e[2]) in events[:k], e
    monkeypatch.setattr(gen, "run_shard", real_run)  # forked workers run the real one
    par = tmp_path / "par"
    generate(
        _cfg(par, num_samples=8, splits=splits, actions={"stand": 1.0}, workers=2),
        progress=False,
    )
    _assert_same(_rows(serial), _rows(par))
