"""What killed runs leave (temporaries named after their pid) is removed by the next run, and
checkpoints get an ordinary file mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sahmr
from sahmr.cli.leftovers import remove_dead_temporaries
from sahmr.engine.checkpoint import atomic_torch_save

ROOT = Path(sahmr.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make(path: Path, folder: bool = False) -> Path:
    if folder:
        path.mkdir(parents=True)
        (path / "mesh.ply").write_text("half a room")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    return path


def test_dead_writers_temporaries_go_live_ones_stay(tmp_path, dead_pid):
    live = os.getpid()
    gone = [_make(tmp_path / f".room_003.tmp.{dead_pid}", folder=True),
            _make(tmp_path / f".dataset.json.tmp.{dead_pid}"),
            _make(tmp_path / f".placer_sdf_0250.tmp.{dead_pid}.npz")]  # fmt: skip
    kept = [_make(tmp_path / f".room_004.tmp.{live}", folder=True),
            _make(tmp_path / f"room.tmp.{dead_pid}"),  # not hidden: not a sahmr temporary
            _make(tmp_path / ".hidden"), _make(tmp_path / f".x.tmp.{dead_pid}a"),
            _make(tmp_path / "room_005" / "mesh.ply")]  # fmt: skip
    removed = remove_dead_temporaries([tmp_path, tmp_path / "missing"])
    assert sorted(removed) == sorted(gone)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)


def test_min_age_keeps_fresh_entries_of_unknown_machines(tmp_path, dead_pid):
    entry = _make(tmp_path / f".shard.tmp.{dead_pid}")
    assert remove_dead_temporaries([tmp_path], min_age_s=900) == []
    assert remove_dead_temporaries([tmp_path], min_age_s=900, now=time.time() + 901) == [entry]


@pytest.mark.parametrize("shard, removed", [("0/1", True), ("1/4", False)])
def test_make_dataset_cleans_its_folder(shard, removed, tmp_path, dead_pid):
    spec = importlib.util.spec_from_file_location("tool_make_dataset_l",
                                                  ROOT / "tools" / "make_dataset.py")  # fmt: skip
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = tmp_path / "data"
    stale = [_make(root / "rooms" / f".gen_office_101.tmp.{dead_pid}", folder=True),
             _make(root / "rooms" / "gen_office_100" / f".placer_sdf_0250.tmp.{dead_pid}.npz"),
             _make(root / "shards" / f".train-000003.tar.tmp.{dead_pid}"),
             _make(root / f".dataset.json.tmp.{dead_pid}")]  # fmt: skip
    live = _make(root / "rooms" / f".gen_office_102.tmp.{os.getpid()}", folder=True)
    done = _make(root / "rooms" / "gen_office_100" / "mesh.ply")
    tool.remove_leftovers(root, shard)
    assert all(p.exists() != removed for p in stale)  # sharded: fresh entries may be alive
    assert live.exists() and done.exists()


def test_checkpoint_temporaries_of_killed_saves_are_removed(tmp_path, dead_pid):
    from sahmr.engine.checkpoint import _temp_prefix

    target = tmp_path / "last.pt"
    stale = _make(tmp_path / f"{_temp_prefix(target, dead_pid)}abc123.tmp")
    live = _make(tmp_path / f"{_temp_prefix(target)}def456.tmp")  # this process: writing
    other = _make(tmp_path / f".best.pt.{_temp_prefix(target, dead_pid)[9:]}x.tmp")
    atomic_torch_save({"a": torch.ones(1)}, target)
    assert not stale.exists() and live.exists() and other.exists()
    assert torch.load(target, weights_only=True)["a"].item() == 1.0


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_checkpoint_mode_follows_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        path = atomic_torch_save({"a": torch.ones(1)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
