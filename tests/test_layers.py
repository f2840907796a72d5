"""The packages of sahmr import each other in one direction only: down the order of `LAYERS`.

Every ``.py`` file under ``sahmr/`` is parsed with `ast`; every import in it counts (module level,
inside functions, under ``if TYPE_CHECKING:``, relative ``from . import``), and each import of
another unit (a subpackage such as ``sahmr.models`` or a top-level module such as
``sahmr.sparse``) is an edge of the package graph. The graph must have no cycle, and every edge
must point to a strictly lower layer (units of one layer do not import each other).

`LAYERS` is the one definition of the order; docs/design.md ("Layers") shows the same list and
`test_design_doc_shows_the_layers` keeps the two equal.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sahmr"
DESIGN = ROOT / "docs" / "design.md"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("atomic_write",),
    ("body", "geometry", "sparse"),
    ("records",),
    ("scene",),
    ("detect", "optim", "viz"),
    ("data",),
    ("evaluation", "synth"),
    ("models",),
    ("losses",),
    ("engine",),
    ("inference",),
    ("benchmark", "cli"),
)
"""Bottom to top. A unit may import units of lower layers only."""

RANK = {unit: k for k, layer in enumerate(LAYERS) for unit in layer}


@dataclass(frozen=True)
class Edge:
    """One import of unit ``target`` by a file of unit ``source``."""

    source: str
    target: str
    file: str
    line: int
    statement: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.statement}  ({self.source} -> {self.target})"


def unit_of(path: Path) -> str:
    """The unit a file belongs to: ``sahmr/models/hmr.py`` -> ``models``, ``sahmr/sparse.py`` ->
    ``sparse``, ``sahmr/__init__.py`` -> ``""`` (the root)."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) > 1:
        return parts[0]
    return "" if parts[0] == "__init__.py" else parts[0].removesuffix(".py")


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names an import statement of file ``path`` reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = _module_name(path)
        if path.name != "__init__.py":
            package = package[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    # ``from sahmr import x`` / ``from . import x`` may name a unit or a module in ``base``
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def unit_edges() -> list[Edge]:
    """Every import of one unit by another, with its file and line."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(path)
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = set()
            for name in imported_modules(path, node):
                parts = name.split(".")
                if parts[0] == "sahmr" and len(parts) > 1 and _is_unit(parts[1]):
                    targets.add(parts[1])
            for target in sorted(targets - {source}):
                statement = lines[node.lineno - 1].strip()
                edges.append(Edge(source, target, rel, node.lineno, statement))
    return edges


def _is_unit(name: str) -> bool:
    return (PACKAGE / name / "__init__.py").is_file() or (PACKAGE / f"{name}.py").is_file()


def all_units() -> set[str]:
    """Every subpackage and top-level module of sahmr."""
    units = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return units | {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of the unit graph as its edges (one example import each), or None."""
    first: dict[tuple[str, str], Edge] = {}
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        first.setdefault((e.source, e.target), e)
        graph[e.source].add(e.target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return [*stack[stack.index(v) :], v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return [first[(a, b)] for a, b in pairwise(cycle)]
    return None


def test_every_unit_has_a_layer():
    missing = sorted(all_units() - set(RANK))
    assert not missing, (
        f"sahmr units without a layer: {missing}; add each to LAYERS in tests/test_layers.py "
        "(and to the list in docs/design.md, 'Layers') at the height of what it imports"
    )
    stale = sorted(set(RANK) - all_units())
    assert not stale, f"LAYERS names units that no longer exist: {stale}"


def test_root_imports_no_unit():
    bad = [str(e) for e in unit_edges() if e.source == ""]
    assert not bad, "sahmr/__init__.py must import no subpackage:\n" + "\n".join(bad)


def test_package_graph_has_no_cycle():
    cycle = find_cycle([e for e in unit_edges() if e.source])
    assert cycle is None, "import cycle between sahmr units:\n" + "\n".join(map(str, cycle))


def test_imports_go_down_the_layers():
    upward = [
        e
        for e in unit_edges()
        if e.source in RANK and e.target in RANK and RANK[e.target] >= RANK[e.source]
    ]
    report = [
        f"{e}: layer {RANK[e.source]} imports layer {RANK[e.target]}"
        for e in sorted(upward, key=lambda e: (e.file, e.line))
    ]
    assert not upward, (
        "imports that do not go down the layers of tests/test_layers.py (move the imported "
        "code down, or the importing code up):\n" + "\n".join(report)
    )


def design_doc_layers() -> list[tuple[str, ...]]:
    """The layer list of docs/design.md ("## Layers", first fenced block), bottom to top."""
    text = DESIGN.read_text(encoding="utf-8")
    assert "\n## Layers" in text, "docs/design.md has no '## Layers' section"
    section = text.split("\n## Layers", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block, "docs/design.md: 'Layers' has no fenced block listing the layers"
    rows = []
    for line in block.group(1).splitlines():
        names = line.split("#", 1)[0].strip()
        if names:
            rows.append(tuple(sorted(n.strip() for n in names.split(","))))
    return rows[::-1]


def test_design_doc_shows_the_layers():
    assert design_doc_layers() == [tuple(sorted(layer)) for layer in LAYERS], (
        "docs/design.md ('Layers') lists other layers than LAYERS in tests/test_layers.py"
    )


def test_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The parser on a made-up package: function-local, TYPE_CHECKING and relative imports."""
    pkg = tmp_path / "sahmr"
    for unit in ("low", "high"):
        (pkg / unit).mkdir(parents=True)
        (pkg / unit / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "flat.py").write_text("")
    (pkg / "low" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sahmr.high import b\n"
        "def f():\n    import sahmr.flat\n"
    )
    (pkg / "high" / "b.py").write_text("from ..low import a\nfrom .. import flat\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    got = {(e.source, e.target, e.file, e.line) for e in unit_edges()}
    assert got == {
        ("low", "high", "sahmr/low/a.py", 3),
        ("low", "flat", "sahmr/low/a.py", 5),
        ("high", "low", "sahmr/high/b.py", 1),
        ("high", "flat", "sahmr/high/b.py", 2),
    }
    cycle = find_cycle([e for e in unit_edges() if e.source])
    assert cycle is not None and {(e.source, e.target) for e in cycle} == {
        ("high", "low"),
        ("low", "high"),
    }


def test_design_doc_names_existing_files():
    """Every file the Layers section of docs/design.md names (its stage table) exists."""
    section = DESIGN.read_text(encoding="utf-8").split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    assert named, "docs/design.md: the Layers section names no files"
    missing = sorted(p for p in named if not (PACKAGE / p).is_file() and not (ROOT / p).is_file())
    assert not missing, f"docs/design.md ('Layers') names files that do not exist: {missing}"
