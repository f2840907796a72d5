"""tools/benchmark_train.py in its CPU smoke mode, its input checks, and the busy sampler."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from sahmr.benchmark.utilization import BusySampler, parse_smi_percent, read_gpu_busy

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _load("tool_benchmark_train", REPO / "tools" / "benchmark_train.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    helper = _load("memory_dataset", REPO / "tests" / "data" / "memory_dataset.py")
    return helper.write_tiny_dataset(tmp_path_factory.mktemp("bt_ds"))


def test_smoke_run_writes_json_markdown_and_the_docs_section(tool, dataset, tmp_path, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# B\n\n<!-- benchmark:train-throughput -->\nold\n"
                    "<!-- /benchmark:train-throughput -->\n\nafter\n")  # fmt: skip
    out = tmp_path / "out"
    rc = tool.main(["--data", str(dataset), "--out", str(out), "--smoke",
                    "--methods", "rcnet_small", "--docs", str(docs)])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "train_benchmark.json").read_text())
    runs = {(r["method"], r["path"]): r for r in report["runs"]}
    assert set(runs) == {("rcnet_small", "old"), ("rcnet_small", "new")}
    for r in runs.values():
        assert r["error"] is None and r["steps"] >= 2 and r["samples_per_s"] > 0
        assert r["step_ms"] == pytest.approx(1000 * r["seconds"] / r["steps"])
        assert r["data_samples_per_s"] > 0 and r["gpu_busy_pct"] is None  # CPU: no reading
    assert report["dataset"]["train_samples"] == 6
    assert report["environment"]["torch"]
    md = (out / "train_benchmark.md").read_text()
    assert "| rcnet_small | new | 2 |" in md and "vs old" in md
    text = docs.read_text()
    assert "old\n" not in text and "| rcnet_small | old |" in text and text.endswith("after\n")
    assert "rcnet_small" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "nope"], "--methods"),
        (["--paths", "old,fast"], "--paths"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seconds", "0"], "--seconds"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tool, dataset, tmp_path, capsys, args, words):
    out = tmp_path / "o"
    assert tool.main(["--data", str(dataset), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not out.exists()  # nothing written


def test_missing_dataset_exits_2(tool, tmp_path, capsys):
    assert tool.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_busy_sampler_averages_its_readings():
    values = iter([10.0, None, 30.0, 50.0] + [50.0] * 1000)
    with BusySampler(lambda: next(values), interval_s=0.01) as s:
        while len(s.samples) < 3:
            time.sleep(0.01)
    assert s.samples[:3] == [10.0, 30.0, 50.0]
    assert s.mean == pytest.approx(sum(s.samples) / len(s.samples))
    assert BusySampler(lambda: None).mean is None


def test_smi_parsing_and_cpu_reading():
    assert parse_smi_percent("87\n") == 87.0
    assert parse_smi_percent(" [N/A]\n") is None
    assert read_gpu_busy("cpu") is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
