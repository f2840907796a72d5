"""Benchmark machinery: timers, summaries, markdown sections, frame batching, stage captures,
and a tiny end-to-end run of tools/benchmark.py on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sahmr.benchmark.frames import concat_inputs, take_frames
from sahmr.benchmark.stages import (
    CudaGraphModule,
    ModuleSwaps,
    capture_calls,
    compile_modules,
    graph_modules,
    module_stage,
    parameter_megabytes,
)
from sahmr.benchmark.timing import (
    TimingSummary,
    markdown_table,
    peak_memory_mb,
    percentile,
    replace_marked_section,
    time_callable,
    write_marked_section,
)
from sahmr.records import FrameInputs

REPO = Path(__file__).resolve().parents[2]


def _tool():
    """tools/benchmark.py as a module (in-process: the heavy imports are shared)."""
    if "sahmr_benchmark_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "sahmr_benchmark_tool", REPO / "tools" / "benchmark.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["sahmr_benchmark_tool"] = module
        spec.loader.exec_module(module)
    return sys.modules["sahmr_benchmark_tool"]


# ---------------------------------------------------------------------------- timing


@pytest.mark.parametrize("q", [0, 10, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        x = rng.exponential(size=n).tolist()
        assert percentile(x, q) == pytest.approx(float(np.percentile(x, q)), rel=1e-12)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_in_milliseconds():
    s = TimingSummary.from_seconds([0.004, 0.001, 0.002, 0.003, 0.010])
    assert s.n == 5 and s.median_ms == pytest.approx(3.0) and s.min_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(10.0) and s.mean_ms == pytest.approx(4.0)
    assert s.p90_ms == pytest.approx(float(np.percentile([4, 1, 2, 3, 10], 90)))
    assert s.throughput(6) == pytest.approx(2000.0)
    assert set(s.to_dict()) == {"n", "median_ms", "p90_ms", "mean_ms", "min_ms", "max_ms"}
    with pytest.raises(ValueError):
        TimingSummary.from_seconds([])


def test_time_callable_counts_calls_and_measures_sleep():
    calls = []
    seconds = time_callable(lambda: calls.append(1), warmup=2, iters=5)
    assert len(seconds) == 5 and len(calls) == 7 and all(s >= 0 for s in seconds)
    import time

    out = time_callable(lambda: time.sleep(0.01), warmup=0, iters=3)
    assert all(0.009 < s < 0.5 for s in out)


def test_time_callable_stops_at_the_time_budget():
    import time

    out = time_callable(lambda: time.sleep(0.02), warmup=0, iters=100, max_seconds=0.05,
                        min_iters=2)  # fmt: skip
    assert 2 <= len(out) <= 4
    calls = []
    out = time_callable(lambda: (calls.append(1), time.sleep(0.02)), warmup=20, iters=1,
                        max_seconds=0.05)  # fmt: skip
    assert len(out) == 1 and 2 <= len(calls) <= 5  # warm-up cut short too


def test_peak_memory_is_none_on_cpu():
    assert peak_memory_mb("cpu") is None


# ---------------------------------------------------------------------------- markdown


def test_markdown_table():
    text = markdown_table(["a", "b|c"], [[1, None], ["x|y", 2.5]], align=["l", "r"])
    assert text.splitlines() == [
        "| a | b\\|c |",
        "| --- | ---: |",
        "| 1 |  |",
        "| x\\|y | 2.5 |",
    ]
    with pytest.raises(ValueError):
        markdown_table(["a"], [[1, 2]])


def test_replace_marked_section_keeps_the_rest():
    doc = ("# T\n\nbefore\n<!-- benchmark:models -->\nold\ntable\n"
           "<!-- /benchmark:models -->\nafter\n")
    new = replace_marked_section(doc, "models", "\nnew body\n\n")
    assert new == (
        "# T\n\nbefore\n<!-- benchmark:models -->\nnew body\n<!-- /benchmark:models -->\nafter\n"
    )
    assert replace_marked_section(new, "models", "new body") == new  # idempotent
    other = replace_marked_section(new, "other", "x")  # absent: appended
    assert other.startswith(new) and other.endswith(
        "\n\n<!-- benchmark:other -->\nx\n<!-- /benchmark:other -->\n"
    )
    empty = replace_marked_section("", "m", "x")
    assert empty == "<!-- benchmark:m -->\nx\n<!-- /benchmark:m -->\n"


@pytest.mark.parametrize(
    "doc",
    [
        "<!-- benchmark:models -->\nonly the start\n",
        "<!-- /benchmark:models -->\n<!-- benchmark:models -->\n",
        "<!-- benchmark:models -->\n<!-- benchmark:models -->\n<!-- /benchmark:models -->\n",
    ],
)
def test_replace_marked_section_rejects_broken_markers(doc):
    with pytest.raises(ValueError):
        replace_marked_section(doc, "models", "x")


def test_write_marked_section(tmp_path):
    path = tmp_path / "docs" / "bench.md"
    write_marked_section(path, "models", "first")
    write_marked_section(path, "models", "second")
    text = path.read_text()
    assert text.count("<!-- benchmark:models -->") == 1 and "second" in text
    assert "first" not in text


# ---------------------------------------------------------------------------- frames


def _inputs(counts: list[int], seed: int = 0) -> FrameInputs:
    g = torch.Generator().manual_seed(seed)
    B = len(counts)
    bidx = torch.cat([torch.full((c,), b) for b, c in enumerate(counts)]).long()
    perm = torch.randperm(bidx.numel(), generator=g)  # packed in any order
    return FrameInputs(
        image=torch.randn(B, 3, 4, 4, generator=g),
        K_crop=torch.randn(B, 3, 3, generator=g),
        K=torch.randn(B, 3, 3, generator=g),
        bbox=torch.randn(B, 4, generator=g),
        T_w2c=torch.randn(B, 4, 4, generator=g),
        scene_points_cam=torch.randn(bidx.numel(), 3, generator=g),
        scene_batch_idx=bidx[perm],
    )


def _slow_take(inputs: FrameInputs, indices: list[int]):
    pts, idx = [], []
    for j, i in enumerate(indices):
        rows = [n for n in range(inputs.scene_batch_idx.numel())
                if int(inputs.scene_batch_idx[n]) == i]  # fmt: skip
        pts += [inputs.scene_points_cam[n] for n in rows]
        idx += [j] * len(rows)
    return torch.stack(pts) if pts else torch.zeros(0, 3), torch.tensor(idx, dtype=torch.long)


@pytest.mark.parametrize("indices", [[0, 1, 2], [2, 2, 0, 1, 0], [1], [3, 1]])
def test_take_frames_matches_a_slow_reference(indices):
    inputs = _inputs([5, 0, 3, 7])
    out = take_frames(inputs, indices)
    pts, idx = _slow_take(inputs, indices)
    assert torch.equal(out.scene_points_cam, pts) and torch.equal(out.scene_batch_idx, idx)
    assert torch.equal(out.image, inputs.image[indices]) and out.batch_size == len(indices)
    assert torch.equal(out.T_w2c, inputs.T_w2c[indices])


def test_concat_inputs_repacks_scene_points():
    a, b = _inputs([2, 3], seed=1), _inputs([4], seed=2)
    out = concat_inputs([a, b])
    assert out.batch_size == 3
    assert torch.equal(out.scene_batch_idx, torch.cat([a.scene_batch_idx, b.scene_batch_idx + 2]))
    assert torch.equal(take_frames(out, [2]).scene_points_cam, b.scene_points_cam)
    with pytest.raises(ValueError):
        concat_inputs([])


def test_dataset_frames(tmp_path):
    from sahmr.benchmark.frames import dataset_frames
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    split = {"test": dict(fraction=1, bundled=["bedroom"])}
    cfg = GenerationConfig.from_dict(dict(
        out_dir=str(tmp_path / "ds"), num_samples=2, samples_per_shard=2, seed=3, workers=0,
        placer="standing", views_per_body=2, splits=split))  # fmt: skip
    generate(cfg, progress=False)
    frames = dataset_frames(tmp_path / "ds", "test", max_frames=8)
    assert frames.num_frames == 2 and frames.scene_ids == ["bundled_bedroom"] * 2
    assert (frames.scene_dir / "bundled_bedroom" / "mesh.ply").is_file()
    assert frames.keypoints2d_crop.shape == (2, 24, 2)
    inside = (frames.keypoints2d_crop > 0) & (frames.keypoints2d_crop < 224)
    assert inside.float().mean() > 0.9  # the body is in its crop
    assert min(frames.frustum_points()) > 0
    batch = frames.batch(5)
    assert batch.batch_size == 5 and frames.frame_scene(3) == ["bundled_bedroom"] * 3
    assert torch.equal(batch.image[2], frames.inputs.image[0])


# ---------------------------------------------------------------------------- stages


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Sequential(nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x, *, scale: float = 1.0):
        return self.b(self.a(x) * scale)


def test_capture_and_module_stage_replay_the_submodules():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(3, 4)
    with capture_calls(net, ["a", "b"]) as calls:
        y = net(x, scale=2.0)
        net(torch.randn(5, 4))  # only the first call is kept
    assert torch.equal(calls["a"].args[0], x)
    assert torch.equal(calls["b"].output, y)
    assert not net.a._forward_hooks  # hooks removed
    seen = []
    net.b.register_forward_hook(lambda m, a, o: seen.append(o))
    stage = module_stage("head", net, ["b"], calls)
    stage.run()
    assert torch.equal(seen[0], y) and stage.note == "b"
    with pytest.raises(KeyError):
        module_stage("x", net, ["missing"], calls)
    assert parameter_megabytes(net) == pytest.approx((4 * 8 + 8 + 8 * 2 + 2) * 4 / 2**20)


def test_module_swaps_restore_the_originals():
    net = _Net()
    orig = net.b
    head = net.b[1]
    swaps = ModuleSwaps(net)
    swaps.replace("b", lambda m: nn.Sequential(m))
    swaps.replace("b", lambda m: nn.Sequential(m))  # twice: the first original is kept
    swaps.replace("a", lambda m: nn.Identity())
    assert isinstance(net.b, nn.Sequential) and net.b[0][0] is orig
    with swaps.originals():
        assert net.b is orig and isinstance(net.a, nn.Linear)
    assert net.b[0][0] is orig and isinstance(net.a, nn.Identity)
    with pytest.raises(ValueError):
        swaps.replace("b.1", lambda m: nn.Identity())  # nested in a replaced path
    swaps.restore()
    assert net.b is orig and net.b[1] is head and isinstance(net.a, nn.Linear)
    assert not swaps.swaps


def test_compile_modules_plumbing_with_the_eager_backend():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(3, 4)
    ref = net(x)
    swaps = ModuleSwaps(net)
    done = compile_modules(swaps, ["a", "absent.path"], backend="eager")
    assert done == ["a"] and net.a is not swaps.swaps["a"][0]
    torch.testing.assert_close(net(x), ref)
    swaps.restore()
    assert isinstance(net.a, nn.Linear)


def test_graph_modules_wraps_static_submodules():
    net = _Net()
    swaps = ModuleSwaps(net)
    assert graph_modules(swaps, ["a", "nope"]) == ["a"]
    assert isinstance(net.a, CudaGraphModule) and net.a.module is swaps.swaps["a"][0]
    swaps.restore()


@pytest.mark.gpu
def test_cuda_graph_module_matches_eager():
    torch.manual_seed(0)
    net = _Net().cuda().eval()
    graphed = CudaGraphModule(net)
    with torch.no_grad():
        for n in (3, 5, 3):
            x = torch.randn(n, 4, device="cuda")
            torch.testing.assert_close(graphed(x, scale=0.5), net(x, scale=0.5))
    assert graphed.num_graphs == 2 and not graphed.failures


# ---------------------------------------------------------------------------- the tool


def test_variants_and_cpu_tool_summaries():
    from sahmr.benchmark.cpu_tools import summarise_cpu_tool
    from sahmr.benchmark.methods import Variant

    assert Variant.parse("eager").name == "eager"
    v = Variant.parse("graphs+bf16")
    assert v.bf16 and v.graphs and not v.compile and v.name == "bf16+graphs"
    with pytest.raises(ValueError):
        Variant.parse("fp8")
    metrics_out = "grid: x\nbest: total 2.32 s (SDF sampling 1.57 s), 29.7 M vertices/s\nvalues"
    assert summarise_cpu_tool("metrics", metrics_out)["headline"].startswith("best: total")
    gen_out = "progress\n" + json.dumps({
        "samples_per_second_end_to_end": 21.5,
        "steady_state_one_process": {"projected_samples_per_second_on_free_cores": 40.1},
    })  # fmt: skip
    gen = summarise_cpu_tool("generator", gen_out)
    assert gen["samples_per_second_end_to_end"] == 21.5
    assert gen["projected_samples_per_second"] == 40.1
    new_layout = "x {y}\n" + json.dumps({
        "end_to_end": {"samples_per_second": 30.0}, "projected_samples_per_second": 55.5,
        "cpu_ms_per_sample": 36.0}, indent=1)  # fmt: skip
    gen = summarise_cpu_tool("generator", new_layout)
    assert gen["samples_per_second_end_to_end"] == 30.0
    assert gen["projected_samples_per_second"] == 55.5 and "36.0 CPU ms" in gen["headline"]
    assert summarise_cpu_tool("generator", "no json") == {}


def test_tool_end_to_end_on_cpu(tmp_path):
    """Tiny SA-HMR + HMR + the optimisation baseline on two bundled frames, batch 1 and 2."""
    tool = _tool()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n<!-- benchmark:models -->\nstale\n"
                   "<!-- /benchmark:models -->\n\n## Later section\n")  # fmt: skip
    out_json = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    # One thread: on a shared 2-core machine, OpenMP threads spin against other jobs.
    try:
        rc = tool.main([
            "--device", "cpu", "--tiny", "--methods", "sahmr_small,hmr,optimisation",
            "--frames", "living_room/stand,living_room/sit_sofa", "--batch-sizes", "1,2",
            "--iters", "1", "--warmup", "0", "--fit-iterations", "1", "--fit-batch-sizes", "2",
            "--fit-repeats", "1", "--scene-voxel", "0.1", "--sdf-voxel-size", "0.2",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(doc), "--json", str(out_json),
            "--threads", "1", "-q",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads(out_json.read_text())
    assert res["format"] == "sahmr.benchmark" and res["environment"]["device"] == "cpu"
    assert len(res["frames"]["frustum_points"]) == 2 and min(res["frames"]["frustum_points"]) > 0
    sahmr = res["methods"]["sahmr_small"]["variants"]["eager"]
    b2 = sahmr["batches"]["2"]
    assert set(b2["stages"]) == {"frustum", "rcnet_2d", "sparse", "sparse_unet",
                                 "mesh_backbone", "transformer", "upsampling"}  # fmt: skip
    assert all(s["median_ms"] > 0 for s in b2["stages"].values())
    assert b2["sizes"]["roi_voxels"] > 0 and b2["end_to_end"]["n"] == 1
    assert sahmr["best_batch"] in (1, 2) and sahmr["latency_b1"]["median_ms"] > 0
    assert sahmr["peak_mb_b1"] is None  # CPU: no GPU memory figures
    hmr = res["methods"]["hmr"]["variants"]["eager"]["batches"]["1"]
    assert set(hmr["stages"]) == {"backbone", "regressor", "body_model"}
    opt = res["methods"]["optimisation"]
    assert opt["batches"]["2"]["seconds_per_frame"] > 0 and opt["scene_terms"]
    assert opt["iterations_per_frame"] == opt["start_orientations"] * 2 + 2
    goal = res["goals"][0]
    assert goal["variant"] == "eager" and goal["speedup_batched"] > 0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n<!-- benchmark:models -->\nMeasured ")
    assert text.endswith("<!-- /benchmark:models -->\n\n## Later section\n")
    assert "stale" not in text and "| sahmr_small | eager |" in text
    assert "Optimisation baseline" in text and "Goals for SA-HMR small" in text
    # Re-render from the JSON alone (another machine), merged with a renamed copy.
    other = json.loads(out_json.read_text())
    other["methods"] = {"metro_small": other["methods"]["hmr"]}
    other["run"]["command"] = "python tools/benchmark.py --methods metro_small"
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert tool.main(["--methods", "none", "--merge", str(out_json), str(tmp_path / "other.json"),
                      "--out", str(doc), "--section", "again", "-q"]) == 0  # fmt: skip
    again = doc.read_text().split("<!-- benchmark:again -->")[1]
    assert "| sahmr_small | eager |" in again and "| metro_small | eager |" in again
    assert "`python tools/benchmark.py --methods metro_small`" in again
    assert text in doc.read_text()  # the first section is untouched


def _image_inputs(batch: int, device: str) -> FrameInputs:
    """Random crops with a plausible crop camera (image-only methods)."""
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[300.0, 0.0, 112.0], [0.0, 300.0, 112.0], [0.0, 0.0, 1.0]])
    return FrameInputs(
        image=torch.randn(batch, 3, 224, 224, generator=g),
        K_crop=K.expand(batch, 3, 3).clone(),
        K=K.expand(batch, 3, 3).clone(),
        bbox=torch.tensor([[50.0, 20.0, 170.0, 210.0]]).expand(batch, 4).clone(),
        T_w2c=torch.eye(4).expand(batch, 4, 4).clone(),
    ).to(device)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["metro_small", "hmr"])
def test_graphed_predict_matches_eager(name):
    from sahmr.benchmark.methods import METHODS, build_method
    from sahmr.benchmark.stages import LAYOUTS

    torch.manual_seed(0)
    model = build_method(name, tiny=True, extra=(), checkpoint=None,
                         device=torch.device("cuda"), config_dir=REPO / "configs")  # fmt: skip
    inputs = _image_inputs(2, "cuda")
    ref = model.predict(inputs).verts_cam
    swaps = ModuleSwaps(model)
    done = graph_modules(swaps, LAYOUTS[METHODS[name].family].graphable)
    first = model.predict(inputs).verts_cam  # capture
    again = model.predict(_image_inputs(2, "cuda")).verts_cam  # replay, fresh input tensors
    failures = [f for _, m in swaps.swaps.values() for f in m.failures]
    swaps.restore()
    assert done and not failures
    torch.testing.assert_close(first, ref, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(again, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_tool_variants_on_cuda(tmp_path):
    """Every speed-up together (compile with the eager backend: plumbing, not speed)."""
    tool = _tool()
    out_json = tmp_path / "bench.json"
    rc = tool.main([
        "--device", "cuda", "--tiny", "--methods", "sahmr_small,metro_small,hmr",
        "--variants", "eager,bf16+compile+graphs", "--compile-backend", "eager",
        "--frames", "living_room/stand", "--batch-sizes", "1,2", "--iters", "2",
        "--warmup", "1", "--scene-voxel", "0.05", "--cache-dir", str(tmp_path / "cache"),
        "--json", str(out_json), "-q",
    ])  # fmt: skip
    assert rc == 0
    res = json.loads(out_json.read_text())
    for name, m in res["methods"].items():
        fast = m["variants"]["bf16+compile+graphs"]
        assert fast["applied"]["graphed"] and fast["applied"]["compiled"], name
        assert fast["peak_mb_b1"] > m["weights_mb"] > 0, name
        assert fast["batches"]["2"]["stages"], name
        assert m["variants"]["eager"]["latency_b1"]["median_ms"] > 0, name


def test_layouts_graph_only_capturable_submodules():
    from sahmr.benchmark.stages import LAYOUTS

    assert LAYOUTS["hmr"].graphable == ("backbone", "regressor")
    assert "body_model" in LAYOUTS["hmr"].static  # still compiled
    assert LAYOUTS["metro"].graphable == LAYOUTS["metro"].static


def test_graph_wrapper_exposes_the_wrapped_modules_attributes():
    """A graphed submodule stands in for the original: callers read its attributes (HMR reads
    its regressor's ``rotation``); the wrapper's own attributes win."""
    inner = nn.Linear(2, 3)
    inner.rotation = "rot6d"
    wrapped = CudaGraphModule(inner, warmup=1)
    assert wrapped.rotation == "rot6d" and wrapped.out_features == 3
    assert wrapped.warmup == 1 and wrapped.module is inner
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_attribute


def test_tool_restores_the_callers_math_settings():
    tool = _tool()
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    with tool._fast_cuda_math(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark) == before
