"""Each shared number has one home: `HOMES` names it, and no other file writes it again.

Every ``.py`` file under ``sahmr/`` and ``tools/`` is parsed with `ast`:

* a shared name (``CONTACT_THRESHOLD_M`` ...) is assigned only in its home module (aliases such
  as ``CONTACT_THRESHOLD = CONTACT_THRESHOLD_M`` count as assignments of the number);
* no upper-case module or class constant elsewhere is assigned a shared value;
* no parameter default or ``add_argument(..., default=...)`` whose name says what the number is
  (crop / image size, contact threshold, voxel / spacing, contact cap) retypes the value.

The YAML configs are read as text for the same keys. Contact regions are compared by name
(`ContactRegion`), not by bare integers.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sahmr.body.constants import CONTACT_REGION_NAMES, ContactRegion
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.scene.contact import CONTACT_THRESHOLD_M, MAX_CONTACTS_PER_FRAME
from sahmr.scene.points import SCENE_VOXEL_SIZE_M
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shared:
    """One shared number: its home module, its value, and the words of the names that carry
    it (a parameter or option of one of these words holding the value retypes it)."""

    home: str
    value: float
    words: tuple[str, ...]


HOMES: dict[str, Shared] = {
    "CONTACT_THRESHOLD_M": Shared("sahmr/scene/contact.py", CONTACT_THRESHOLD_M,
                                  ("threshold",)),
    "MAX_CONTACTS_PER_FRAME": Shared("sahmr/scene/contact.py", MAX_CONTACTS_PER_FRAME,
                                     ("contacts",)),
    "DEFAULT_CROP_SIZE": Shared("sahmr/geometry/crops.py", DEFAULT_CROP_SIZE,
                                ("crop", "image_size", "size")),
    "SCENE_VOXEL_SIZE_M": Shared("sahmr/scene/points.py", SCENE_VOXEL_SIZE_M,
                                 ("voxel", "spacing")),
    "SDF_VOXEL_SIZE_M": Shared("sahmr/scene/sdf.py", SDF_VOXEL_SIZE_M, ("voxel", "spacing")),
}  # fmt: skip

CONFIG_KEYS = re.compile(
    r"^\s*(image_size|crop_size|max_contacts\w*|contact_threshold\w*|\w*voxel_size\w*)"
    r"\s*:\s*([0-9.]+)\b"
)
"""YAML keys that would retype a shared number."""

CONFIG_EXCEPTIONS = {
    # The generator's config lists every setting it hashes (dataset.json); the key is checked
    # equal to the generator's default below.
    ("configs/make_dataset.yaml", "crop_size"),
    # Checked by the tool before anything runs (a number, finite, positive); equal below.
    ("configs/eval.yaml", "sdf_voxel_size"),
}


def _python_files() -> list[Path]:
    return sorted([*(ROOT / "sahmr").rglob("*.py"), *(ROOT / "tools").rglob("*.py")])


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _number(node: ast.AST | None) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _constant_assignments(tree: ast.Module):
    """``(name, value node, line)`` of module- and class-level assignments."""
    bodies = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body in bodies:
        for node in body:
            for name in _targets(node):
                yield name, node.value, node.lineno


def _defaults(tree: ast.Module):
    """``(parameter or option name, default node, line)`` of function parameters and
    ``add_argument`` options."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            positional = args.posonlyargs + args.args
            for arg, default in zip(positional[len(positional) - len(args.defaults):],
                                    args.defaults, strict=True):
                yield arg.arg, default, default.lineno
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                if default is not None:
                    yield arg.arg, default, default.lineno
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "add_argument" and node.args
              and isinstance(node.args[0], ast.Constant)):
            for kw in node.keywords:
                if kw.arg == "default":
                    yield str(node.args[0].value).lstrip("-").replace("-", "_"), kw.value, \
                        kw.value.lineno


def _violations() -> list[str]:
    found = []
    for path in _python_files():
        rel = _rel(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for name, value, line in _constant_assignments(tree):
            if name in HOMES and rel != HOMES[name].home:
                found.append(f"{rel}:{line}: {name} assigned outside {HOMES[name].home}")
            if isinstance(value, ast.Name) and value.id in HOMES and name.isupper():
                found.append(f"{rel}:{line}: {name} = {value.id} (an alias; import the name)")
            number = _number(value)
            for home_name, shared in HOMES.items():
                if (number is not None and number == shared.value and name.isupper()
                        and name not in HOMES and any(w in name.lower() for w in shared.words)):
                    found.append(f"{rel}:{line}: {name} = {number} retypes {home_name}")
        for name, default, line in _defaults(tree):
            number = _number(default)
            retyped = [home_name for home_name, shared in HOMES.items()
                       if number == shared.value and any(w in name.lower() for w in shared.words)]
            if retyped:
                found.append(f"{rel}:{line}: {name}={number} retypes {' or '.join(retyped)}")
    return found


def test_each_shared_number_is_written_once():
    found = _violations()
    assert not found, "shared numbers written again:\n" + "\n".join(found)


def test_every_home_defines_its_number():
    for name, shared in HOMES.items():
        tree = ast.parse((ROOT / shared.home).read_text(encoding="utf-8"))
        values = [_number(v) for n, v, _ in _constant_assignments(tree) if n == name]
        assert values == [shared.value], (name, shared.home, values)


def test_the_scan_catches_a_retyped_number(tmp_path, monkeypatch):
    """The scan is not vacuous: a file that retypes the numbers is caught."""
    bad = tmp_path / "sahmr" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from sahmr.scene.contact import CONTACT_THRESHOLD_M\n"
        "CONTACT_THRESHOLD = CONTACT_THRESHOLD_M\n"
        "MY_CROP_SIZE = 224\n"
        "def f(voxel_size: float = 0.02, *, max_contacts: int = 500): ...\n"
        "def g(p):\n    p.add_argument('--contact-threshold', type=float, default=0.07)\n"
    )
    (tmp_path / "tools").mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = _violations()
    assert len(found) == 5, found


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=str)
def test_configs_do_not_retype_shared_numbers(path):
    rel = _rel(path)
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = CONFIG_KEYS.match(line.split("#", 1)[0])
        if m is None or (rel, m.group(1)) in CONFIG_EXCEPTIONS:
            continue
        value = float(m.group(2))
        shared = [n for n, s in HOMES.items() if s.value == value]
        assert not shared, f"{rel}:{line_no}: {m.group(1)}: {m.group(2)} retypes {shared}"


def test_config_exceptions_hold_the_shared_value():
    from omegaconf import OmegaConf

    make_dataset = OmegaConf.load(ROOT / "configs" / "make_dataset.yaml")
    assert make_dataset.crop_size == DEFAULT_CROP_SIZE
    evaluation = OmegaConf.load(ROOT / "configs" / "eval.yaml")
    assert evaluation.sdf_voxel_size == SDF_VOXEL_SIZE_M


def test_contact_regions_are_named():
    assert [r.name.lower() for r in ContactRegion] == list(CONTACT_REGION_NAMES)
    assert [int(r) for r in ContactRegion] == list(range(len(CONTACT_REGION_NAMES)))


def test_no_bare_region_label_comparisons():
    """``labels == 7`` reads as nothing; ``labels == ContactRegion.THIGHS`` says it."""
    pattern = re.compile(r"\b(labels?|regions?)\s*(==|!=)\s*[1-7]\b")
    found = [f"{_rel(p)}:{i}: {line.strip()}" for p in _python_files()
             if _rel(p) != "sahmr/body/constants.py"  # ContactRegion's docstring example
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)
