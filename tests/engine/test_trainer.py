"""The training loop: schedule, bit-identical resume, time budget, validation scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from engine_testkit import TinyMethod, compose_train, tiny_overrides

from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import load_checkpoint
from sahmr.engine.data import (
    LoaderSettings,
    ResumableSampler,
    StepPreparer,
    build_loader,
    build_scene_bank,
    start_epoch,
)
from sahmr.engine.optimizers import WarmupCosine, clip_groups, lr_factor, parameter_groups
from sahmr.engine.trainer_config import TrainerConfig
from sahmr.engine.validation import run_validation


def test_warmup_cosine_matches_the_formula():
    f = WarmupCosine(total_steps=10, warmup=2, floor=0.1)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    for s in range(2, 14):
        t = min(1.0, (s - 2) / 8)
        assert f(s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    assert f(10) == pytest.approx(0.1)


def test_parameter_groups_skip_decay_on_biases_and_norms():
    model = TinyMethod()
    groups = parameter_groups(model, 0.5)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.5 and groups[1]["weight_decay"] == 0.0
    assert id(model.conv.weight) in decay and id(model.head.weight) in decay
    assert id(model.conv.bias) not in decay and id(model.norm.weight) not in decay


def test_parameter_groups_scale_the_lr_of_named_submodules():
    model = TinyMethod()
    groups = parameter_groups(model, 0.5, lr=1e-3, lr_multipliers={"head": 10.0})
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.head.weight)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.head.weight)]["weight_decay"] == 0.5
    assert by_param[id(model.head.bias)]["lr"] == pytest.approx(1e-2)
    assert by_param[id(model.head.bias)]["weight_decay"] == 0.0
    assert by_param[id(model.conv.weight)]["lr"] == pytest.approx(1e-3)
    assert by_param[id(model.norm.weight)]["weight_decay"] == 0.0
    # every trainable parameter exactly once
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert lr_factor("head.weight", {"head": 2.0, "head.weight": 3.0}) == 3.0
    assert lr_factor("header.weight", {"head": 2.0}) == 1.0  # a prefix of a name is not a path
    with pytest.raises(ValueError, match="no trainable parameters under"):
        parameter_groups(model, 0.5, lr=1e-3, lr_multipliers={"nothing": 2.0})


def test_grad_clip_groups_clip_each_submodule_on_its_own():
    """A large gradient in one submodule no longer shrinks the other's step: each group is
    clipped to grad_clip alone, the reported norm is the global one before clipping."""
    from types import SimpleNamespace

    from sahmr.engine.trainer import Trainer

    model = TinyMethod()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = clip_groups(model, params, ["head"])
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[0]} == head_ids
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in params)
    assert clip_groups(model, params, []) == [params]
    with pytest.raises(ValueError, match="grad_clip_groups"):
        clip_groups(model, params, ["nothing"])

    def grads(scale_head: float, scale_rest: float) -> dict[int, torch.Tensor]:
        torch.manual_seed(0)
        out = {}
        for p in params:
            g = torch.randn_like(p)
            g = g / g.norm() * (scale_head if id(p) in head_ids else scale_rest)
            out[id(p)] = g
        return out

    def clipped(paths: list[str]) -> tuple[float, dict[int, torch.Tensor]]:
        for p in params:
            p.grad = start[id(p)].clone()
        fake = SimpleNamespace(cfg=SimpleNamespace(grad_clip=1.0), device=torch.device("cpu"),
                               clip_groups=clip_groups(model, params, paths))  # fmt: skip
        norm = Trainer._clip(fake, params)
        return float(norm), {id(p): p.grad for p in params}

    start = grads(scale_head=0.01, scale_rest=50.0)  # each parameter: one norm
    rest = [p for p in params if id(p) not in head_ids]
    n_head = sum(1 for p in params if id(p) in head_ids)
    total = math.sqrt(n_head * 0.01**2 + len(rest) * 50.0**2)
    norm, g = clipped(["head"])
    assert norm == pytest.approx(total, rel=1e-5)
    for p in params:
        if id(p) in head_ids:  # under the limit: untouched
            assert torch.equal(g[id(p)], start[id(p)])
    rest_norm = torch.stack([g[id(p)].norm() for p in rest]).norm()
    assert rest_norm.item() == pytest.approx(1.0, rel=1e-4)
    norm, g = clipped([])  # one global norm: the head's step shrinks with the rest
    assert norm == pytest.approx(total, rel=1e-5)
    head_p = next(p for p in params if id(p) in head_ids)
    ratio = (g[id(head_p)].norm() / start[id(head_p)].norm()).item()
    assert ratio == pytest.approx(1.0 / total, rel=1e-3)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "x", True])
def test_lr_multipliers_must_be_positive_numbers(bad):
    with pytest.raises(ValueError, match="lr_multipliers"):
        TrainerConfig(lr_multipliers={"head": bad})


def test_lr_multipliers_follow_the_schedule(tmp_path):
    """A step's LR of a scaled group is the factor times the base group's, at every step."""
    model = TinyMethod()
    groups = parameter_groups(model, 0.0, lr=1e-2, lr_multipliers={"head": 4.0})
    opt = torch.optim.AdamW(groups, lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total_steps=10, warmup=3))
    for _ in range(6):
        opt.step()
        sched.step()
        lrs = sorted({g["lr"] for g in opt.param_groups})
        assert lrs[1] == pytest.approx(4.0 * lrs[0])


def test_sampler_order_depends_on_seed_and_epoch_and_skips():
    a = ResumableSampler(range(10), seed=1)
    a.set_epoch(3)
    full = list(a)
    a.set_epoch(3, skip=4)
    assert list(a) == full[4:] and len(a) == 6
    a.set_epoch(4)
    assert list(a) != full
    shards = [ResumableSampler(range(10), num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for s in shards:
        s.set_epoch(3)
    assert sorted(list(shards[0]) + list(shards[1])) == sorted(full)


def _state(path):
    return load_checkpoint(path)


def test_resume_is_bit_identical(tiny_dataset, test_configs, tmp_path):
    """8 steps over 2 epochs straight == 3 steps, stop, resume (2 workers), 5 steps."""
    extra = {"trainer.max_epochs": 2, "trainer.max_steps": 8, "trainer.ckpt_every": 0}
    straight = tmp_path / "straight"
    cfg = compose_train(tiny_overrides(tiny_dataset, straight, **extra), test_configs)
    done = train_from_config(cfg)
    assert (done.step, done.epoch, done.stopped) == (8, 2, "done")

    split = tmp_path / "split"
    cfg = compose_train(tiny_overrides(tiny_dataset, split, **extra), test_configs)
    first = train_from_config(cfg, until_step=3)
    assert (first.step, first.epoch, first.stopped) == (3, 0, "interrupted")
    ck = _state(split / "checkpoints" / "last.pt")
    assert (ck["step"], ck["epoch"], ck["batch_in_epoch"]) == (3, 0, 3)
    with pytest.raises(FileExistsError):
        train_from_config(cfg)
    cfg = compose_train(
        tiny_overrides(tiny_dataset, split, resume="true", **{"trainer.num_workers": 2, **extra}),
        test_configs,
    )
    second = train_from_config(cfg)
    assert (second.step, second.epoch, second.stopped) == (8, 2, "done")

    a, b = _state(straight / "checkpoints" / "last.pt"), _state(split / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    for name in ("g_mpve", "mpjpe", "root_error_mm"):
        assert a["metrics"]["last"][name] == b["metrics"]["last"][name]

    # logs: train scalars every step, validation at both epoch ends, TensorBoard events
    records = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))
    val = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2] and all("g_mpve" in r for r in val)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight / "tb"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/verts", "train/lr", "train/grad_norm", "train/samples_per_s",
                "val/g_mpve", "val/root_error_mm"):  # fmt: skip
        assert tag in tags["scalars"], tag
    assert "train/crops" in tags["images"]
    assert (straight / "config.yaml").read_text().startswith("paths:")


def test_time_budget_stop_is_validated(tiny_dataset, test_configs, tmp_path):
    """A run its time budget ends is scored where it stopped (its last weights can be the
    best), mid-epoch too."""
    extra = {"trainer.max_minutes": 1e-6, "trainer.max_steps": 3}
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **extra), test_configs)
    res = train_from_config(cfg)
    assert res.stopped == "time" and res.step == 1
    assert "g_mpve" in res.last_validation and np.isfinite(res.last_validation["g_mpve"])


def test_validation_every_n_steps(tiny_dataset, test_configs, tmp_path):
    """trainer.val_every_steps validates mid-epoch at each multiple and where the run ends,
    without epoch-end validations when val_every_epochs is 0."""
    extra = {"trainer.val_every_epochs": 0, "trainer.val_every_steps": 2, "trainer.max_steps": 5,
             "trainer.max_epochs": 3}  # fmt: skip
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **extra), test_configs)
    res = train_from_config(cfg)
    assert res.step == 5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    val_steps = [r["step"] for r in map(json.loads, lines) if r.get("split") == "val"]
    assert val_steps == [2, 4, 5]


def test_validation_at_start_scores_the_starting_weights_and_keeps_them_as_best(
    tiny_dataset, test_configs, tmp_path
):
    """trainer.val_at_start: a validation at step 0 (the weights before any step), tracked for
    best.pt; a resumed run (step > 0) does not validate again before training."""
    extra = {"trainer.val_every_epochs": 0, "trainer.val_every_steps": 2, "trainer.max_steps": 2,
             "trainer.val_at_start": True, "trainer.best_metric": "g_mpve",
             "trainer.best_mode": "max"}  # fmt: skip
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **extra), test_configs)
    res = train_from_config(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in val] == [0, 2]
    # best_mode max on an error: best.pt holds whichever step scored highest, step 0 included
    best = max(val, key=lambda r: r["g_mpve"])
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == best["step"]
    assert res.best == pytest.approx(best["g_mpve"])

    extra.update({"trainer.max_steps": 4})
    cfg = compose_train(
        tiny_overrides(tiny_dataset, tmp_path, resume="true", **extra), test_configs
    )
    train_from_config(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "val"] == [0, 2, 4]


def test_time_budget_stops_cleanly_and_resumes(tiny_dataset, test_configs, tmp_path):
    extra = {"trainer.max_minutes": 1e-6, "trainer.val_every_epochs": 0, "trainer.max_steps": 3}
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **extra), test_configs)
    res = train_from_config(cfg)
    assert res.stopped == "time" and res.step == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    # resumed with a longer run: the configured LR schedule replaces the stored one
    extra = {"trainer.val_every_epochs": 0, "trainer.max_steps": 4}
    cfg = compose_train(
        tiny_overrides(tiny_dataset, tmp_path, resume="true", **extra), test_configs
    )
    assert train_from_config(cfg).step == 4
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["scheduler"]["lr_lambdas"][0]["total_steps"] == 4


def test_validation_scores_match_a_naive_computation(tiny_dataset):
    from sahmr.body import BodyModel
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.evaluation.evaluator import Evaluator

    torch.manual_seed(0)
    body = BodyModel()
    val = SyntheticDataset(tiny_dataset, "val")
    device = torch.device("cpu")
    bank = build_scene_bank(val.scene_points, device, max_points_per_scene=20000)
    prepare = StepPreparer(body.topology, device, bank)
    loader = build_loader(val, LoaderSettings(batch_size=3), train=False)
    method = TinyMethod().train()
    res = run_validation(method, loader, prepare, split="val", evaluator=Evaluator(body))
    assert method.training  # modes restored
    assert res.frames == len(val) == 4
    assert [r["name"] for r in res.evaluation.per_frame] == [f"val-{i:06d}" for i in range(4)]

    # naive: the same predictions frame by frame
    errs_v, errs_root = [], []
    for i in range(len(val)):
        from sahmr.data.collate import collate_samples

        batch = collate_samples([val[i]])
        inputs, targets = prepare(batch)
        pred = method.predict(inputs)
        world = pred.vertices_world(batch.T_w2c)[0].double()
        gt = torch.as_tensor(val[i].vertices_world).double()
        errs_v.append((world - gt).norm(dim=-1).mean().item() * 1000)
        errs_root.append((pred.root_cam - targets.root_cam).norm().item() * 1000)
    method.train()
    scal = res.scalars()
    assert scal["g_mpve"] == pytest.approx(np.mean(errs_v), rel=1e-5)
    assert scal["root_error_mm"] == pytest.approx(np.mean(errs_root), rel=1e-4)
    tp = sum(e < 500 for e in errs_root)
    assert scal["near_tp"] == tp / 2  # two batches: (sum, count 1) each
    assert scal["near_precision"] == pytest.approx(tp / 4)
    assert scal["seconds_per_frame"] > 0


def test_epoch_order_is_reproducible_with_workers(tiny_dataset):
    from sahmr.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(tiny_dataset, "train")
    orders = []
    for workers in (0, 2):
        loader = build_loader(ds, LoaderSettings(batch_size=2, num_workers=workers), train=True)
        start_epoch(loader, seed=5, epoch=1, skip_batches=1)
        orders.append([tuple(b.frame_index.tolist()) + tuple(b.sequence_id) for b in loader])
    assert orders[0] == orders[1] and len(orders[0]) == len(ds) // 2 - 1


def test_crop_grid_draws_points_where_they_project():
    from sahmr.engine.summaries import crop_grid
    from sahmr.scene.frontend import normalize_crop
    from sahmr.viz.summaries import denormalize_images

    crops = torch.full((2, 32, 32, 3), 100, dtype=torch.uint8)
    image = normalize_crop(crops)
    np.testing.assert_allclose(denormalize_images(image).astype(int), crops.numpy(), atol=1)
    gt = torch.tensor([[[10.0, 20.0]], [[5.0, 5.0]]])
    pred = torch.tensor([[[25.0, 8.0]], [[30.0, 30.0]]])
    grid = crop_grid(image, gt, pred, columns=2)
    pad = 4  # sahmr.viz.grid.image_grid default
    assert grid.shape == (32 + 2 * pad, 2 * 32 + 3 * pad, 3)
    tile0 = grid[pad : pad + 32, pad : pad + 32]
    assert tuple(tile0[20, 10]) == (40, 200, 60)  # GT green at (u=10, v=20)
    assert tuple(tile0[8, 25]) == (230, 40, 40)  # prediction red at (u=25, v=8)
    assert tuple(tile0[0, 0]) == (100, 100, 100)


class SunkTinyMethod(TinyMethod):
    """TinyMethod with every body pushed 3 m down in the world (under the room's floor)."""

    def predict(self, inputs):
        pred = super().predict(inputs)
        down_world = torch.tensor([0.0, 0.0, -3.0]).expand(inputs.T_w2c.shape[0], 3)
        return pred.translated(torch.einsum("bij,bj->bi", inputs.T_w2c[:, :3, :3], down_world))


def _scored_val_split(tiny_dataset, tmp_path):
    """``(body, val dataset, its loader, step preparer, the rooms' SDFs)`` for validations
    scored against the rooms."""
    from sahmr.body import BodyModel
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.evaluation.evaluator import SceneSDFs

    body = BodyModel()
    val = SyntheticDataset(tiny_dataset, "val")
    device = torch.device("cpu")
    prepare = StepPreparer(body.topology, device,
                           build_scene_bank(val.scene_points, device, max_points_per_scene=20000))
    loader = build_loader(val, LoaderSettings(batch_size=3), train=False)
    scenes = SceneSDFs(scene_dir=tiny_dataset / "rooms", voxel_size=0.1, cache_dir=tmp_path)
    return body, val, loader, prepare, scenes


@pytest.mark.parametrize("settle", [False, True])
def test_validation_settles_bodies_under_the_ground(tiny_dataset, tmp_path, settle):
    """``settle_on_ground``: bodies under the rooms' declared ground are slid back onto it
    before they are scored and written (sahmr.scene.ground; tested in detail there)."""
    from sahmr.evaluation.evaluator import Evaluator

    body, _val, loader, prepare, scenes = _scored_val_split(tiny_dataset, tmp_path)
    lowest = {}
    res = run_validation(SunkTinyMethod().eval(), loader, prepare, split="val",
                         evaluator=Evaluator(body, scenes), settle_on_ground=settle,
                         on_prediction=lambda name, frame, *_: lowest.update(
                             {name: float(frame.vertices[:, 2].min())}))  # fmt: skip
    assert len(lowest) == 4
    if settle:
        assert res.settled_frames == 4
        assert max(abs(z) for z in lowest.values()) < 1e-4  # resting on the floor top, z = 0
        # what is left is furniture or walls where it landed, not metres under the floor
        assert all(r["pene"] < 1e5 for r in res.evaluation.per_frame)
    else:
        assert res.settled_frames == 0 and max(lowest.values()) < -1.0
        assert all(r["pene"] > 1e6 for r in res.evaluation.per_frame)  # 6,890 vertices, ~2.5 m


class SlightlySunkTinyMethod(SunkTinyMethod):
    """TinyMethod with every body pushed 15 cm down in the world (partly into the floor)."""

    def predict(self, inputs):
        pred = TinyMethod.predict(self, inputs)
        down_world = torch.tensor([0.0, 0.0, -0.15]).expand(inputs.T_w2c.shape[0], 3)
        return pred.translated(torch.einsum("bij,bj->bi", inputs.T_w2c[:, :3, :3], down_world))


def test_validation_slides_bodies_out_of_the_scene(tiny_dataset, tmp_path):
    """``scene_slide_cost``: each body is slid along its camera ray by
    `sahmr.scene.ray_slide.ray_slide` (tested in detail there) on its scene's SDF before it is
    scored and written; the slide never adds penetration; off, nothing moves."""
    from sahmr.evaluation.evaluator import Evaluator
    from sahmr.scene.ray_slide import ray_slide, sampler_sdf

    body, val, loader, prepare, scenes = _scored_val_split(tiny_dataset, tmp_path)
    runs, method = {}, SlightlySunkTinyMethod().eval()  # one set of random weights for both
    for cost in (None, 1.0):
        frames = {}
        res = run_validation(method, loader, prepare, split="val",
                             evaluator=Evaluator(body, scenes), scene_slide_cost=cost,
                             on_prediction=lambda name, frame, *_, f=frames: f.update(
                                 {name: frame.vertices.copy()}))  # fmt: skip
        runs[cost] = (res, frames)
    (kept, kept_frames), (slid, slid_frames) = runs[None], runs[1.0]
    assert kept.slid_frames == 0 and 1 <= slid.slid_frames <= 4
    moved = 0
    for i, name in enumerate(sorted(kept_frames)):
        v = torch.as_tensor(kept_frames[name], dtype=torch.float64)
        sample = val[i]
        T = torch.as_tensor(np.asarray(sample.T_w2c), dtype=torch.float64)
        camera = -T[:3, :3].T @ T[:3, 3]
        expected = ray_slide(v, camera, sampler_sdf(scenes.get(sample.scene_id)), slide_cost=1.0)
        shift = torch.as_tensor(slid_frames[name], dtype=torch.float64) - v
        torch.testing.assert_close(shift, expected.shift_world.expand_as(shift), atol=1e-5, rtol=0)
        moved += expected.slide_m != 0
    assert moved == slid.slid_frames
    pene = {k: [r["pene"] for r in runs[k][0].evaluation.per_frame] for k in runs}
    assert all(after <= before + 1e-6 for before, after in zip(pene[None], pene[1.0], strict=True))
    assert sum(pene[1.0]) < sum(pene[None])


class _SlowLoader:
    """A train loader that sleeps before each batch: a stand-in for a starved input path."""

    def __init__(self, loader, delay_s: float) -> None:
        self._loader, self._delay_s = loader, delay_s

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        import time

        for batch in self._loader:
            time.sleep(self._delay_s)
            yield batch


def test_the_train_log_says_how_long_the_steps_waited_for_data(
    tiny_dataset, test_configs, tmp_path, monkeypatch
):
    """``data_wait`` is the fraction of a log window spent waiting for the next batch. The same
    run twice, the second with the loader sleeping 0.25 s before each batch: every window of
    the slowed run waits for most of its time, and more than the same window of the plain
    run. (The plain run's own share is not bounded: decoding a tiny batch may take as long as
    a tiny step, and a busy machine once put it at 0.5006.)"""
    from sahmr.engine import trainer as trainer_mod

    init = trainer_mod.Trainer.__init__
    waits = {}
    for delay_s in (0.0, 0.25):

        def slowed(self, *args, delay_s=delay_s, **kwargs):
            init(self, *args, **kwargs)
            self.train_loader = _SlowLoader(self.train_loader, delay_s)

        monkeypatch.setattr(trainer_mod.Trainer, "__init__", slowed)
        out = tmp_path / f"delay{delay_s}"
        extra = {"trainer.max_steps": 4, "trainer.log_every": 2, "trainer.val_every_epochs": 0}
        cfg = compose_train(tiny_overrides(tiny_dataset, out, **extra), test_configs)
        train_from_config(cfg)
        lines = (out / "metrics.jsonl").read_text().splitlines()
        train = [r for r in map(json.loads, lines) if r.get("split") == "train"]
        assert [r["step"] for r in train] == [2, 4]
        assert all(0.0 <= r["data_wait"] <= 1.0 for r in train)
        waits[delay_s] = [r["data_wait"] for r in train]
    for plain, slow in zip(waits[0.0], waits[0.25], strict=True):
        assert slow > 0.5 and slow > plain, waits  # two sleeps of 0.25 s in a window


def test_validation_depenetrates_last_and_counts_the_bodies(tiny_dataset, tmp_path):
    """``depenetrator``: called after the slide with each frame's differentiable scene SDF;
    what it returns is what is scored and written, and the bodies it changed are counted."""
    from sahmr.evaluation.evaluator import Evaluator

    body, _val, loader, prepare, scenes = _scored_val_split(tiny_dataset, tmp_path)
    method = SlightlySunkTinyMethod().eval()
    calls = []

    def lift(pred, T_w2c, sdfs):
        calls.append(len(sdfs))
        for s in sdfs:  # points -> metres, with a gradient (validation runs without grad)
            pts = torch.zeros(5, 3, requires_grad=True)
            with torch.enable_grad():
                s(pts).sum().backward()
            assert pts.grad is not None
        up_world = torch.tensor([0.0, 0.0, 0.05]).expand(T_w2c.shape[0], 3)
        shifted = pred.translated(torch.einsum("bij,bj->bi", T_w2c[:, :3, :3].to(pred.verts_cam),
                                               up_world.to(pred.verts_cam)))  # fmt: skip
        return shifted, torch.ones(T_w2c.shape[0], dtype=torch.bool)

    runs = {}
    for dep in (None, lift):
        frames = {}
        res = run_validation(method, loader, prepare, split="val",
                             evaluator=Evaluator(body, scenes), scene_slide_cost=1.0,
                             depenetrator=dep,
                             on_prediction=lambda name, frame, *_, f=frames: f.update(
                                 {name: frame.vertices.copy()}))  # fmt: skip
        runs[dep is not None] = (res, frames)
    (plain, plain_frames), (lifted, lifted_frames) = runs[False], runs[True]
    assert plain.depenetrated_frames == 0 and lifted.depenetrated_frames == 4
    assert sum(calls) == 4 and plain.slid_frames == lifted.slid_frames
    for name, v in plain_frames.items():
        np.testing.assert_allclose(lifted_frames[name] - v, np.broadcast_to([0, 0, 0.05], v.shape),
                                   atol=1e-5)  # fmt: skip
