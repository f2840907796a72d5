"""sahmr.atomic_write: the one atomic writer, checked against plain (non-atomic) writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sahmr.atomic_write import (
    atomic_open,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": np.arange(4)}


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_same_bytes_as_plain_savez(tmp_path, compressed):
    save = np.savez_compressed if compressed else np.savez
    with open(tmp_path / "plain.npz", "wb") as fh:
        save(fh, **_arrays())
    out = atomic_save_npz(tmp_path / "atomic.npz", _arrays(), compressed=compressed)
    assert out.read_bytes() == (tmp_path / "plain.npz").read_bytes()
    with np.load(out) as z:
        np.testing.assert_array_equal(z["a"], _arrays()["a"])


def test_npz_keeps_the_exact_name(tmp_path):
    atomic_save_npz(tmp_path / "points", {"p": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points"]


def test_text_json_bytes(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    obj = {"x": 1.5, "y": [1, 2]}
    atomic_write_json(tmp_path / "m.json", obj, indent=2)
    assert (tmp_path / "m.json").read_text() == json.dumps(obj, indent=2) + "\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_mode_of_a_plain_open(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    atomic_write_bytes(tmp_path / "atomic", b"")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode
    assert os.stat(tmp_path / "atomic").st_mode & 0o777 == 0o666 & ~current_umask()


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_make_parents_and_prefix(tmp_path):
    target = tmp_path / "a" / "b" / "c.bin"
    with atomic_open(target, make_parents=True, prefix=".c.bin.host.1.") as fh:
        fh.write(b"x")
        (temp,) = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
        assert temp.name.startswith(".c.bin.host.1.")
    assert target.read_bytes() == b"x"
