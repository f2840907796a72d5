"""The demo's output folder: never deletes a file it did not write, leaves no staging folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sahmr.inference.errors import InputError
from sahmr.inference.outputs import (
    OUTPUT_FILES_KEY,
    SUMMARY_FORMAT,
    check_output_folder,
    staged_output,
)


def _demo_run(out: Path, *, frames: tuple[str, ...] = ("a",), overwrite: bool = False) -> None:
    """What the demo does: files (and frame subfolders) plus a summary.json, staged."""
    with staged_output(out, overwrite=overwrite) as tmp:
        for name in frames:
            (tmp / name).mkdir()
            (tmp / name / "body_world.ply").write_text(f"mesh {name}")
        (tmp / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rerun_replaces_its_own_output_and_lists_the_files(tmp_path):
    out = tmp_path / "out"
    _demo_run(out, frames=("a", "b"))
    listed = json.loads((out / "summary.json").read_text())[OUTPUT_FILES_KEY]
    assert listed == {"a/body_world.ply": len("mesh a"), "b/body_world.ply": len("mesh b")}
    _demo_run(out, frames=("c",))  # its own files only: replaced, old frames gone
    assert sorted(p.name for p in out.iterdir()) == ["c", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left


def _add_file(out: Path) -> Path:
    (out / "notes.txt").write_text("mine")
    return out / "notes.txt"


def _add_nested_file(out: Path) -> Path:
    (out / "a" / "fix.obj").write_text("my edit")
    return out / "a" / "fix.obj"


def _change_a_file(out: Path) -> Path:
    (out / "a" / "body_world.ply").write_text("mesh a, hand-edited")
    return out / "a" / "body_world.ply"


def _add_link(out: Path) -> Path:
    os.symlink(out.parent, out / "link")
    return out / "link"


def _add_empty_folder(out: Path) -> Path:
    (out / "keep").mkdir()
    return out / "keep"


def _old_demo_output(out: Path) -> Path:
    """An output of a demo that did not list its files: cannot tell user files apart."""
    summary = json.loads((out / "summary.json").read_text())
    del summary[OUTPUT_FILES_KEY]
    (out / "summary.json").write_text(json.dumps(summary))
    return out / "a" / "body_world.ply"


USER_CHANGES = {
    "added file": _add_file,
    "added nested file": _add_nested_file,
    "changed file": _change_a_file,
    "added link": _add_link,
    "added empty folder": _add_empty_folder,
    "older demo output": _old_demo_output,
}


@pytest.mark.parametrize("change", sorted(USER_CHANGES))
def test_user_files_in_an_earlier_output_are_never_deleted(change, tmp_path):
    out = tmp_path / "out"
    _demo_run(out)
    kept = USER_CHANGES[change](out)
    with pytest.raises(InputError, match="--overwrite"):
        _demo_run(out)
    assert kept.exists() or kept.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    _demo_run(out, overwrite=True)  # asked for: replaced by exactly the new run
    assert sorted(p.name for p in out.iterdir()) == ["a", "summary.json"]
    assert [p.name for p in (out / "a").iterdir()] == ["body_world.ply"]
    assert (out / "a" / "body_world.ply").read_text() == "mesh a"


def test_file_added_while_the_demo_runs_is_kept(tmp_path):
    out = tmp_path / "out"
    _demo_run(out)
    with pytest.raises(InputError, match=r"notes\.txt"):
        with staged_output(out) as tmp:
            (tmp / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT}))
            (out / "notes.txt").write_text("written meanwhile")
    assert (out / "notes.txt").read_text() == "written meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unwritable_location_is_refused_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(blocker / "deeper" / "out")
    with pytest.raises(InputError, match="not a folder"):
        check_output_folder(blocker)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(InputError, match="cannot write"):
                check_output_folder(ro / "out")
        finally:
            ro.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] + (
        ["ro"] if os.geteuid() != 0 else [])  # fmt: skip


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "out"
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f".out.tmp-{dead}-123", tmp_path / f".out.old-{dead}-456"]
    live = tmp_path / f".out.tmp-{alive}-789"
    other = tmp_path / f".other.tmp-{dead}-1"  # another output's: not ours
    for folder in [*stale, live, other]:
        folder.mkdir()
        (folder / "x").write_text("half")
    _demo_run(out)
    assert not any(p.exists() for p in stale)
    assert live.is_dir() and other.is_dir()
