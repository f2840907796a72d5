"""tools/results_table.py: markdown comparison tables from hand-written metrics.json files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUM_UNIT = "mm (sum over vertices per frame)"


def _tool():
    """tools/results_table.py as a module."""
    if "sahmr_results_table_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "sahmr_results_table_tool", REPO / "tools" / "results_table.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["sahmr_results_table_tool"] = module
        spec.loader.exec_module(module)
    return sys.modules["sahmr_results_table_tool"]


def _metric(value, unit="mm", count=10):
    return {"value": value, "unit": unit, "count": count}


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _report(frames: int, metrics: dict, **extra) -> dict:
    return {
        "protocol": "default",
        "frames": frames,
        "missing": 0,
        "failed": 0,
        "metrics": metrics,
        **extra,
    }


def _parse(text: str) -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    """(header cells, label -> {header: cell}, lines after the table)."""
    lines = text.rstrip("\n").split("\n")
    table = [ln for ln in lines if ln.startswith("|")]
    rest = lines[lines.index(table[-1]) + 1 :]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table]
    header, rows = split[0], split[2:]
    assert set(split[1][1:]) == {"---:"}
    return header, {row[0]: dict(zip(header, row)) for row in rows}, [ln for ln in rest if ln]


@pytest.fixture
def three_methods(tmp_path):
    """A metrics.json file, a folder holding one, and a tools/fit.py output folder."""
    metro = _write(
        tmp_path / "metro.metrics.json",
        _report(
            2400,
            {
                "contact_f1": _metric(0.16747, "fraction"),  # out of canonical order on purpose
                "mpjpe": _metric(181.7043),
                "pene": _metric(8461.752, SUM_UNIT),
                "confe": _metric(68998.46, SUM_UNIT),
                "contact_f1/left_foot": _metric(0.26, "fraction"),
            },
            seconds_per_frame=0.000358,
            method_metrics={},
        ),
    )
    sahmr = tmp_path / "sahmr_eval"
    _write(
        sahmr / "metrics.json",
        _report(
            2400,
            {
                "mpjpe": _metric(200.92),
                "pene": _metric(1438.546, SUM_UNIT),
                "confe": _metric(38241.25, SUM_UNIT),
                "contact_f1": _metric(0.2997, "fraction"),
                "pen_fraction": _metric(1.4748, "% of vertices"),
            },
            seconds_per_frame=0.0013,
        ),
    )
    prox = tmp_path / "prox_run"
    _write(
        prox / "eval" / "metrics.json",
        _report(
            100,
            {
                "mpjpe": _metric(150.04),
                "pene": _metric(None, SUM_UNIT),  # NaN written as null
                "contact_f1": _metric(0.2, "fraction"),
            },
        ),
    )
    _write(prox / "fit_log.json", {"frames": 100, "fit_seconds_per_frame": 2.53})
    return tmp_path, [f"METRO + PnP={metro}", f"SA-HMR={sahmr}", f"PROX={prox}"]


def test_table_cells_bold_dash_and_frames_note(three_methods, capsys):
    tmp_path, methods = three_methods
    out = tmp_path / "docs" / "table.md"
    argv = [a for m in methods for a in ("--method", m)]
    assert _tool().main([*argv, "--out", str(out), "--title", "Test split"]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("### Test split\n\n| method | frames |")
    header, rows, notes = _parse(text)
    # Evaluator order (contact_f1 last although first in the METRO file); per-region omitted.
    assert header == [
        "method",
        "frames",
        "MPJPE (mm)",
        "PenE (mm sum)",
        "pen. vertices (%)",
        "ConFE (mm sum)",
        "contact F1",
        "s / frame",
    ]
    metro, sahmr, prox = rows["METRO + PnP"], rows["SA-HMR"], rows["PROX"]
    assert list(rows) == ["METRO + PnP", "SA-HMR", "PROX"]
    assert (metro["frames"], sahmr["frames"], prox["frames"]) == ("2,400", "2,400", "100")
    # mm to 0.1, lower is better; PROX (100 frames, not the majority's 2,400) does not compete.
    assert (metro["MPJPE (mm)"], sahmr["MPJPE (mm)"]) == ("**181.7**", "200.9")
    assert prox["MPJPE (mm)"] == "150.0"
    # Sums as integers with separators; null -> dash, and the lower of the two others is bold.
    assert metro["PenE (mm sum)"] == "8,462"
    assert sahmr["PenE (mm sum)"] == "**1,439**"
    assert prox["PenE (mm sum)"] == "\u2013"
    assert (metro["ConFE (mm sum)"], sahmr["ConFE (mm sum)"]) == ("68,998", "**38,241**")
    assert prox["ConFE (mm sum)"] == "\u2013"
    # Only one method has it: shown, never bold.
    assert sahmr["pen. vertices (%)"] == "1.47"
    assert metro["pen. vertices (%)"] == prox["pen. vertices (%)"] == "\u2013"
    # Fractions to 0.001, higher is better.
    assert (metro["contact F1"], sahmr["contact F1"], prox["contact F1"]) == (
        "0.167",
        "**0.300**",
        "0.200",
    )
    # Seconds: from the file, and from fit_log.json for the fit folder.
    assert (metro["s / frame"], sahmr["s / frame"], prox["s / frame"]) == (
        "0.00036",
        "0.0013",
        "2.5",
    )
    assert notes == ["Note: frames scored differ from the other methods (2,400): PROX 100."]
    assert str(out) in capsys.readouterr().out


def test_chosen_metrics_seconds_override_and_stdout(three_methods, capsys):
    tmp_path, methods = three_methods
    rcnet = _write(
        tmp_path / "rcnet.json",
        {"frames": 2400, "method_metrics": {"root_error_mm": 143.0, "contact_f1": None}},
    )
    argv = [a for m in [*methods[:2], f"RCNet={rcnet}"] for a in ("--method", m)]
    metrics = "contact_f1/left_foot,mpjpe,method:root_error_mm,method:contact_f1"
    code = _tool().main([*argv, "--metrics", metrics, "--seconds", "SA-HMR=0.032"])
    assert code == 0
    header, rows, notes = _parse(capsys.readouterr().out)
    assert header[2:-1] == [
        "contact F1 left foot",
        "MPJPE (mm)",
        "method:root_error_mm",
        "method:contact_f1",
    ]
    assert rows["METRO + PnP"]["contact F1 left foot"] == "0.260"
    assert rows["SA-HMR"]["contact F1 left foot"] == "\u2013"
    assert rows["RCNet"]["method:root_error_mm"] == "143.0"  # one value: not bold
    assert rows["RCNet"]["method:contact_f1"] == "\u2013"
    assert rows["RCNet"]["MPJPE (mm)"] == "\u2013"
    assert rows["METRO + PnP"]["MPJPE (mm)"] == "**181.7**"
    assert rows["SA-HMR"]["s / frame"] == "0.032"
    assert rows["RCNet"]["s / frame"] == "\u2013"
    assert notes == []


def test_ties_as_displayed_are_all_bold_and_missing_frames_noted(tmp_path, capsys):
    a = _write(tmp_path / "a.json", _report(5, {"mpjpe": _metric(100.04)}))
    b = _report(5, {"mpjpe": _metric(99.96)}, missing=2, failed=1)
    b = _write(tmp_path / "b.json", b)
    c = _write(tmp_path / "c.json", _report(7, {"mpjpe": _metric(120.0)}))
    argv = ["--method", f"A={a}", "--method", f"B|x={b}", "--method", f"C={c}"]
    assert _tool().main(argv) == 0
    _, rows, notes = _parse(capsys.readouterr().out)
    assert rows["A"]["MPJPE (mm)"] == rows["B\\|x"]["MPJPE (mm)"] == "**100.0**"
    assert rows["C"]["MPJPE (mm)"] == "120.0"
    assert notes == [
        "Note: frames scored differ from the other methods (5): C 7.",
        "Note: frames not scored (no prediction / failed): B\\|x 2 missing, 1 failed.",
    ]


def test_formatting_helpers():
    tool = _tool()
    assert tool.format_seconds(0.000358) == "0.00036"
    assert tool.format_seconds(12.34) == "12"
    assert tool.format_seconds(1234.0) == "1,234"
    assert tool.format_value(1234.56, "mm") == "1,234.6"
    assert tool.format_value(None, "fraction") == "\u2013"
    assert tool.unit_kind(SUM_UNIT) == "mm_sum"
    assert tool.unit_kind("mm (per penetrating vertex)") == "mm"
    assert tool.better_direction("contact_recall/back") == "higher"
    assert tool.better_direction("root_coarse_error_mm") == "lower"
    assert tool.better_direction("steps") is None


def _bad_json(tmp_path: Path) -> list[str]:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    return ["--method", f"X={tmp_path / 'bad.json'}"]


def _no_frames(tmp_path: Path) -> list[str]:
    _write(tmp_path / "nf.json", {"metrics": {}})
    return ["--method", f"X={tmp_path / 'nf.json'}"]


def _bad_value(tmp_path: Path) -> list[str]:
    _write(tmp_path / "bv.json", _report(3, {"mpjpe": _metric("12")}))
    return ["--method", f"X={tmp_path / 'bv.json'}"]


def _unit_clash(tmp_path: Path) -> list[str]:
    _write(tmp_path / "u1.json", _report(3, {"mpjpe": _metric(1.0, "mm")}))
    _write(tmp_path / "u2.json", _report(3, {"mpjpe": _metric(1.0, "m")}))
    return ["--method", f"A={tmp_path / 'u1.json'}", "--method", f"B={tmp_path / 'u2.json'}"]


def _good(tmp_path: Path) -> str:
    return str(_write(tmp_path / "good.json", _report(3, {"mpjpe": _metric(1.0)})))


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda t: ["--method", f"X={t / 'nope.json'}"], "nope.json: no such file"),
        (lambda t: ["--method", f"X={t}"], "neither metrics.json nor eval/metrics.json"),
        (_bad_json, "bad.json: not valid JSON"),
        (_no_frames, "nf.json: no 'frames' count"),
        (_bad_value, "bv.json: metric 'mpjpe'"),
        (_unit_clash, "inputs disagree on its unit"),
        (lambda t: ["--method", _good(t)], "expected LABEL=VALUE"),
        (lambda t: ["--method", f"={_good(t)}"], "expected LABEL=VALUE"),
        (lambda t: ["--method", f"A={_good(t)}", "--method", f"A={_good(t)}"], "label used twice"),
        (lambda t: ["--method", f"A={_good(t)}", "--seconds", "B=1"], "no --method with label"),
        (lambda t: ["--method", f"A={_good(t)}", "--seconds", "A=fast"], "not a non-negative"),
        (lambda t: ["--method", f"A={_good(t)}", "--metrics", "mpjpe,pene"], "pene: in no input"),
        (lambda t: ["--method", f"A={_good(t)}", "--metrics", "method:x"], "method entry 'x'"),
        (lambda t: ["--method", f"A={_good(t)}", "--metrics", "mpjpe,,"], "empty name"),
    ],
)
def test_errors_exit_2_and_write_nothing(tmp_path, capsys, make_argv, message):
    out = tmp_path / "out" / "table.md"
    with pytest.raises(SystemExit) as exc:
        _tool().main([*make_argv(tmp_path), "--out", str(out)])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""
    assert not out.exists() and not out.parent.exists()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk that follows the signature."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_writes_png_with_table(three_methods, capsys):
    tmp_path, methods = three_methods
    out, plot = tmp_path / "out" / "table.md", tmp_path / "figs" / "methods.png"
    argv = [a for m in methods for a in ("--method", m)]
    assert _tool().main([*argv, "--out", str(out), "--plot", str(plot)]) == 0
    assert out.is_file()
    width, height = _png_size(plot.read_bytes())
    # Default panels present in some input: mpjpe, pene, confe, contact_f1 -> a wide row.
    assert width > 800 and height > 250 and width > 2 * height
    assert plot.stat().st_size > 10_000
    assert sorted(p.name for p in plot.parent.iterdir()) == ["methods.png"]  # no temp left
    assert str(plot) in capsys.readouterr().out
    tool = _tool()
    results = [tool.MethodResult(label=n, source=Path(n), frames=f) for n, f in
               [("A", 2400), ("B", 2400), ("C", 280)]]  # fmt: skip
    assert tool.plot_notes(results) == ["hatched: C scored on 280 frames; the others on 2,400."]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot-metrics", "mpjpe,nope"], "--plot-metrics nope: in no input"),
        (["--plot-metrics", "mpjpe,mpjpe"], "a name is repeated"),
    ],
)
def test_plot_metrics_unknown_exits_2_and_writes_nothing(three_methods, capsys, extra, message):
    tmp_path, methods = three_methods
    out, plot = tmp_path / "out" / "table.md", tmp_path / "figs" / "methods.png"
    argv = [a for m in methods for a in ("--method", m)]
    with pytest.raises(SystemExit) as exc:
        _tool().main([*argv, "--out", str(out), "--plot", str(plot), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.parent.exists() and not plot.parent.exists()


def test_plot_not_written_for_a_bad_input(three_methods, capsys):
    tmp_path, methods = three_methods
    plot = tmp_path / "figs" / "methods.png"
    argv = [a for m in methods for a in ("--method", m)] + _bad_json(tmp_path)
    with pytest.raises(SystemExit) as exc:
        _tool().main([*argv, "--plot", str(plot)])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "bad.json: not valid JSON" in captured.err and captured.out == ""
    assert not plot.parent.exists()


def test_edge_error_column_legacy_note_and_protocol_mix(tmp_path, capsys):
    tool = _tool()
    edge = "% (mean relative edge-length error)"
    new = _write(
        tmp_path / "a.json",
        _report(4, {"pa_mpve": _metric(60.0), "edge_error": _metric(41.06, edge)}),
    )
    param = _write(
        tmp_path / "b.json",
        _report(4, {"pa_mpve": _metric(55.0), "edge_error": _metric(3.5, edge)}),
    )
    old = _write(tmp_path / "c.json", _report(4, {"pa_mpve": _metric(70.0)}))
    json_old = json.loads(old.read_text())
    del json_old["protocol"]  # written before metrics.json named its protocol
    old.write_text(json.dumps(json_old))
    argv = ["--method", f"free-form={new}", "--method", f"parametric={param}",
            "--method", f"old={old}"]
    assert tool.main(argv) == 0
    header, rows, notes = _parse(capsys.readouterr().out)
    assert "edge-length error (%)" in header
    assert rows["parametric"]["edge-length error (%)"] == "**3.50**"  # lower is better
    assert rows["free-form"]["edge-length error (%)"] == "41.06"
    assert any("old definitions" in n and "old" in n for n in notes)
    sahmr = _write(
        tmp_path / "d.json", _report(4, {"pa_mpve": _metric(50.0)}, protocol="sahmr")
    )
    with pytest.raises(SystemExit) as exc:
        tool.main(["--method", f"a={new}", "--method", f"d={sahmr}"])
    assert exc.value.code == 2
    assert "different protocols" in capsys.readouterr().err
