"""tools/benchmark_train.py in its CPU smoke mode, its input checks, and the busy sampler."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

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


def test_smoke_run_beside_a_cpu_load_says_so(tool, dataset, tmp_path):
    out = tmp_path / "out"
    rc = tool.main(["--data", str(dataset), "--out", str(out), "--smoke", "--paths", "new",
                    "--methods", "metro_small", "--cpu-load", "1"])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "train_benchmark.json").read_text())
    assert report["settings"]["cpu_load"] == 1 and report["runs"][0]["error"] is None
    assert "1 memory-streaming processes at nice 15" in (out / "train_benchmark.md").read_text()


def test_smoke_profile_reports_time_per_part_and_top_ops(tool, dataset, tmp_path):
    out = tmp_path / "out"
    rc = tool.main(["--data", str(dataset), "--out", str(out), "--smoke", "--profile",
                    "--profile-steps", "1", "--methods", "sahmr_small_rcnet", "--paths", "new",
                    "--batch-size", "4"])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "train_benchmark.json").read_text())
    (run,) = report["runs"]
    assert run["error"] is None and run["batch_size"] == 2  # --smoke caps the batch
    p = run["profile"]
    assert p["steps"] == 1 and p["activities"] == ["cpu"] and p["trace"] is None
    ranges = p["ranges"]
    for part in ("train_step", "forward", "loss", "backward", "clip", "optimizer", "data",
                 "mesh_net", "mesh_net.backbone", "rcnet", "rcnet.backbone"):  # fmt: skip
        assert ranges[part]["calls"] >= 1 and ranges[part]["cpu_ms"] > 0, part
    step = ranges["train_step"]["cpu_ms"]
    assert ranges["train_step"]["share_pct"] == pytest.approx(100.0)
    phases = sum(ranges[k]["cpu_ms"] for k in ("forward", "loss", "backward", "clip", "optimizer"))
    assert ranges["forward"]["cpu_ms"] >= ranges["mesh_net"]["cpu_ms"]
    assert 0.5 * step < phases <= step * 1.001  # the phases fill most of the step, disjoint
    assert len(p["ops"]) == 25 and all(o["self_cpu_ms"] >= 0 for o in p["ops"])
    assert p["ops"][0]["self_cpu_ms"] > 0 and not p["ops"][0]["name"].startswith("bench:")
    md = (out / "train_benchmark.md").read_text()
    assert "### Profile: sahmr_small_rcnet / new" in md and "| `backward` |" in md


def test_step_ranges_time_a_compiled_submodule_from_outside_and_clean_up():
    from sahmr.benchmark.step_profile import StepRanges, summarize_profile

    class Trainer:
        def __init__(self) -> None:
            self.method = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(
                torch.nn.Linear(4, 4), torch.nn.ReLU()))  # fmt: skip
            self.method[1]._compiled_call_impl = self.method[1]._call_impl  # as compile() does
            self.loss = torch.nn.MSELoss()
            self.optimizer = torch.optim.SGD(self.method.parameters(), lr=0.1)

        def _clip(self, params):
            return torch.nn.utils.clip_grad_norm_(params, 1.0)

        def train_step(self, x):
            self.optimizer.zero_grad()
            self.loss(self.method(x), torch.zeros(len(x), 4)).backward()
            self._clip(list(self.method.parameters()))
            self.optimizer.step()

    trainer = Trainer()
    with StepRanges(trainer) as ranges, torch.profiler.profile() as prof:
        with ranges.range("train_step"):
            trainer.train_step(torch.randn(5, 3))
    assert ranges.parts == ["0", "1"] and ranges.wrapped_compiled == ["1"]
    assert ranges.skipped == ["1.0", "1.1"]  # inside the compiled one: no hooks
    assert not trainer.method[1]._forward_hooks and not trainer.method._forward_pre_hooks
    assert trainer.method[1]._compiled_call_impl == trainer.method[1]._call_impl  # restored
    assert "_clip" not in vars(trainer)
    got = summarize_profile(prof, 1, on_device=False, top_ops=5)["ranges"]
    assert {"train_step", "forward", "0", "1", "loss", "backward", "clip", "optimizer"} <= set(got)
    assert len(got["0"]) and got["1"]["calls"] == 1


def test_interval_attribution_against_a_plain_sum():
    from sahmr.benchmark.step_profile import _prefix_sums, attribute, merge_intervals

    gen = torch.Generator().manual_seed(0)
    events = [(float(t), float(v)) for t, v in zip(torch.rand(200, generator=gen) * 100,
                                                   torch.rand(200, generator=gen))]  # fmt: skip
    spans = [(10.0, 30.0), (25.0, 40.0), (70.0, 71.5), (90.0, 95.0)]
    merged = merge_intervals(spans)
    assert merged == [(10.0, 40.0), (70.0, 71.5), (90.0, 95.0)]
    times, cumulative = _prefix_sums(events)
    slow = sum(v for t, v in events if any(a <= t < b for a, b in merged))
    assert attribute(merged, times, cumulative) == pytest.approx(slow)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "nope"], "--methods"),
        (["--paths", "old,fast"], "--paths"),
        (["--batch-size", "0"], "--batch-size"),
        (["--seconds", "0"], "--seconds"),
        (["--device", "tpu"], "--device"),
        (["--cpu-load", "-1"], "--cpu-load"),
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


def test_the_e2e_method_is_the_leases_recipe(tool):
    """``sahmr_small_e2e`` times what the leases train: RCNet trained with the mesh network, no
    teacher forcing, its ROI refined twice; ``sahmr_small_rcnet`` keeps the teacher-forced ROI."""
    e2e = tool.compose(tool.METHODS["sahmr_small_e2e"])
    joint = tool.compose(tool.METHODS["sahmr_small_rcnet"])
    assert e2e.model.freeze_rcnet is False and "rcnet_loss" in e2e.loss
    assert e2e.model.rcnet.teacher_forcing is False
    assert e2e.model.rcnet.roi_refinements == 2
    assert joint.model.rcnet.teacher_forcing is True


def test_fill_store_fills_every_sample_once_at_the_steps_precision(tool):
    """``fill_store`` attaches the store with the trainer's precision and computes every
    cached sample once: the untimed warm-up batch first, the timed rest after it."""
    from types import SimpleNamespace

    calls: list[tuple[list[int], bool]] = []

    class Store:
        def given(self, indices, plain_inputs):
            calls.append((indices.tolist(), self.bf16))

    class Prepare:
        stream = SimpleNamespace(cache=list(range(10)))

        def plain_inputs(self, indices):  # never called by this fake store
            raise AssertionError

        def use_rcnet_store(self, model, *, bf16):
            self.store = Store()
            self.store.bf16 = bf16
            return self.store

    trainer = SimpleNamespace(method=object(), bf16=True, cfg=SimpleNamespace(batch_size=4))
    rate = tool.fill_store(trainer, None, Prepare(), torch.device("cpu"))
    assert rate > 0
    assert calls == [([0, 1, 2, 3], True), ([4, 5, 6, 7], True), ([8, 9], True)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
