"""tools/build_body_model.py never overwrites the shipped body; it says how a rebuild differs.

The ~30 s build is replaced by the shipped arrays (or a copy changed on purpose), and the
shipped asset by a copy in tmp_path, so no test can touch the real file.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import sahmr

ROOT = Path(sahmr.__file__).resolve().parent.parent
REAL_SHIPPED = ROOT / "sahmr" / "body" / "assets" / "license_free_neutral.npz"


def _load_tool():
    path = ROOT / "tools" / "build_body_model.py"
    spec = importlib.util.spec_from_file_location("tool_build_body_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tool(tmp_path, monkeypatch):
    module = _load_tool()
    shipped = tmp_path / "assets" / "license_free_neutral.npz"
    shipped.parent.mkdir()
    shutil.copy(REAL_SHIPPED, shipped)
    monkeypatch.setattr(module, "SHIPPED", shipped)
    module.rebuilt = module.load_arrays(shipped)  # what the fake build returns
    monkeypatch.setattr(module, "build_license_free_body", lambda seed=0: module.rebuilt)
    monkeypatch.setattr(module, "to_storage", lambda body: dict(body))
    return module


def _moved(arrays: dict) -> dict:
    out = dict(arrays)
    v = arrays["v_template"].copy()
    v[:10, 2] += 0.004  # 4 mm
    out["v_template"] = v
    out["f"] = np.roll(arrays["f"], 1, axis=0)  # same triangles, other order
    return out


def test_identical_rebuild_onto_the_shipped_path_writes_nothing(tool, capsys):
    before = tool.SHIPPED.read_bytes()
    assert tool.main(["--out", str(tool.SHIPPED)]) == 0
    assert "identical to the shipped body" in capsys.readouterr().out
    assert tool.SHIPPED.read_bytes() == before


@pytest.mark.parametrize("alias", ["same path", "via a link", "via dot-dot"])
def test_differing_rebuild_never_replaces_the_shipped_body(alias, tool, tmp_path, capsys):
    tool.rebuilt = _moved(tool.rebuilt)
    before = tool.SHIPPED.read_bytes()
    out = {"same path": tool.SHIPPED,
           "via dot-dot": tool.SHIPPED.parent / ".." / "assets" / tool.SHIPPED.name}.get(alias)
    if out is None:
        (tmp_path / "link").symlink_to(tool.SHIPPED.parent)
        out = tmp_path / "link" / tool.SHIPPED.name
    assert tool.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not overwritten" in err[0]
    assert "f: 13776 of 13776 faces differ (the same triangles re-ordered)" in err[0]
    assert "v_template: 10 values moved, up to 4 mm" in err[0]
    assert tool.SHIPPED.read_bytes() == before
    assert sorted(p.name for p in tool.SHIPPED.parent.iterdir()) == [tool.SHIPPED.name]


def test_rebuild_elsewhere_is_written_and_compared(tool, tmp_path, capsys):
    tool.rebuilt = _moved(tool.rebuilt)
    out = tmp_path / "rebuilt" / "body.npz"
    assert tool.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "differs from the shipped body" in printed and "up to 4 mm" in printed
    again = tool.load_arrays(out)
    assert tool.describe_differences(again, tool.rebuilt) == []
    assert (out.stat().st_mode & 0o777) != 0o600


@pytest.mark.parametrize("case", ["folder", "under a file", "not npz", "negative seed"])
def test_bad_arguments_before_the_build(case, tool, tmp_path, capsys, monkeypatch):
    def no_build(seed=0):
        raise AssertionError("built despite bad arguments")

    monkeypatch.setattr(tool, "build_license_free_body", no_build)
    (tmp_path / "file").write_text("x")
    args, message = {
        "folder": (["--out", str(tmp_path)], "is a folder"),
        "under a file": (["--out", str(tmp_path / "file" / "b.npz")], "is not a folder"),
        "not npz": (["--out", str(tmp_path / "b.pkl")], "must end in .npz"),
        "negative seed": (["--out", str(tmp_path / "b.npz"), "--seed", "-1"], "--seed -1"),
    }[case]
    assert tool.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "b.npz").exists()


def test_describe_differences_by_hand():
    ref = {"v_template": np.zeros((3, 3)), "f": np.array([[0, 1, 2], [0, 2, 1]]),
           "names": np.array(["a", "b"]), "w": np.ones((2, 2), np.float32)}  # fmt: skip
    describe = _load_tool().describe_differences
    assert describe(ref, ref) == []
    new = {**ref, "v_template": np.array([[0.0, 0, 0.002], [0, 0, 0], [0, 0, 0]])}
    assert describe(new, ref) == ["v_template: 1 values moved, up to 2 mm"]
    new = {**ref, "f": np.array([[0, 1, 2], [1, 2, 0]])}  # second triangle, other corner first
    assert describe(new, ref) == ["f: 1 of 2 faces differ (the same triangles re-ordered)"]
    new = {**ref, "f": np.array([[0, 1, 2], [0, 2, 3]])}
    assert describe(new, ref) == ["f: 1 of 2 faces differ (different triangles)"]
    new = {k: v for k, v in ref.items() if k != "names"} | {"extra": np.zeros(1)}
    assert describe(new, ref) == ["names missing", "extra added"]
    new = {**ref, "w": np.ones((2, 3), np.float32)}
    assert describe(new, ref) == ["w shape (2, 3) (shipped (2, 2))"]
    new = {**ref, "w": np.ones((2, 2), np.float64)}
    assert describe(new, ref) == ["w dtype float64 (shipped float32)"]
    new = {**ref, "names": np.array(["a", "c"])}
    assert describe(new, ref) == ["names changed"]
