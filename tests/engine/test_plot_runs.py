"""tools/plot_runs.py: validation curves read from trainers' metrics.jsonl, one PNG, and one
line and exit 2 (nothing written) for what it cannot use."""

from __future__ import annotations

import json

import pytest
from engine_testkit import load_tool

plot_runs = load_tool("plot_runs")


def _write_run(folder, rows):
    folder.mkdir(parents=True)
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _val(step, g, root):
    return {"split": "val", "epoch": 0, "step": step, "g_mpjpe": g, "root_error": root}


def _train(step, loss):
    return {"split": "train", "epoch": 0, "step": step, "loss": loss, "g_mpjpe": 999.0}


def test_reads_only_validation_lines_in_step_order(tmp_path):
    path = _write_run(tmp_path / "runA", [
        _val(0, 130.0, 90.0), _train(50, 1.9), _val(500, 140.0, 95.0), _val(250, 150.0, 99.0),
        {"split": "val", "step": 600, "g_mpjpe": float("nan")},  # not finite: skipped
        {"split": "val", "step": 700, "root_error": 1.0},  # no g_mpjpe: skipped
    ])  # fmt: skip
    assert plot_runs.read_val_curve(path, "g_mpjpe") == [(0, 130.0), (250, 150.0), (500, 140.0)]
    assert plot_runs.read_val_curve(path, "root_error") == [
        (0, 90.0), (250, 99.0), (500, 95.0), (700, 1.0)
    ]


def test_labels_default_to_the_run_folder(tmp_path):
    assert plot_runs.parse_run(str(tmp_path / "run25" / "metrics.jsonl")) == (
        tmp_path / "run25" / "metrics.jsonl", "run25"
    )
    assert plot_runs.parse_run("a/metrics.jsonl=run 26 (e2e)") == (
        plot_runs.Path("a/metrics.jsonl"), "run 26 (e2e)"
    )


def test_writes_a_png_and_prints_each_run(tmp_path, capsys):
    a = _write_run(tmp_path / "run25", [_val(0, 132.5, 94.9), _val(250, 162.4, 117.0)])
    b = _write_run(tmp_path / "run26", [_val(0, 126.9, 89.6), _val(566, 141.6, 98.7)])
    out = tmp_path / "curves.png"
    rc = plot_runs.main([str(a), f"{b}=e2e", "--metrics", "g_mpjpe", "root_error",
                         "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "run25: g_mpjpe 132.5 (step 0) -> 162.4 (step 250), lowest 132.5" in text
    assert "e2e: g_mpjpe 126.9 (step 0) -> 141.6 (step 566), lowest 126.9" in text
    assert "root_error 89.6 (step 0) -> 98.7 (step 566)" in text


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "cannot read"),
        ("not_json", ":2: not a JSON line"),
        ("no_metric", "no validation line with a finite 'g_mpjpe'"),
        ("same_label", "share a label"),
        ("not_png", "must end in .png"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, case, message):
    good = _write_run(tmp_path / "good", [_val(0, 1.0, 1.0)])
    out = tmp_path / "out.png"
    runs = [str(good)]
    if case == "missing":
        runs = [str(tmp_path / "nowhere" / "metrics.jsonl")]
    elif case == "not_json":
        bad = tmp_path / "bad" / "metrics.jsonl"
        bad.parent.mkdir()
        bad.write_text(json.dumps(_val(0, 1.0, 1.0)) + "\n{truncated\n")
        runs = [str(bad)]
    elif case == "no_metric":
        runs = [str(_write_run(tmp_path / "trainonly", [_train(10, 1.0)]))]
    elif case == "same_label":
        runs = [f"{good}=x", f"{good}=x"]
    elif case == "not_png":
        out = tmp_path / "out.jpg"
    assert plot_runs.main([*runs, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()
