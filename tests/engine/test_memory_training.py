"""Training through the in-memory data path (``loader=memory``) on the tiny generated dataset."""

from __future__ import annotations

import pytest
import torch
from engine_testkit import compose_train, run_hydra_tool, tiny_overrides

from sahmr.body.model import BodyModel
from sahmr.data.collate import collate_samples
from sahmr.data.memory import MemoryDataConfig, ShardStream
from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import load_checkpoint
from sahmr.engine.data import StepPreparer, build_scene_bank
from sahmr.engine.memory_data import MemoryLoader, MemoryStepPreparer

MEMORY = ["loader=memory", "loader.decode_workers=0"]


def test_generated_data_gives_the_same_step_as_the_dataloader_path(tiny_dataset):
    """On generator output (real renders, rooms): same inputs, targets within float16."""
    body = BodyModel()
    cpu = torch.device("cpu")
    ds = SyntheticDataset(tiny_dataset, "train")
    bank = build_scene_bank(ds.scene_points, cpu, max_points_per_scene=None)
    idx = [5, 1, 6, 2]
    old = StepPreparer(body.topology, cpu, bank).step(
        collate_samples([ds[i] for i in idx], keep_images=False), targets=True
    )
    stream = ShardStream(tiny_dataset, "train", cpu, MemoryDataConfig(decode_workers=0))
    stream.refresh()
    new = MemoryStepPreparer(stream, body.topology, cpu).step(torch.tensor(idx))
    assert torch.equal(new.inputs.image, old.inputs.image)
    assert torch.equal(new.inputs.K_crop, old.inputs.K_crop)
    assert old.inputs.scene_points_cam.shape[0] > 1000
    assert torch.equal(new.inputs.scene_batch_idx, old.inputs.scene_batch_idx)
    assert torch.equal(new.inputs.scene_points_cam, old.inputs.scene_points_cam)
    torch.testing.assert_close(new.targets.verts_cam, old.targets.verts_cam, atol=1e-3, rtol=0)
    torch.testing.assert_close(new.targets.joints2d_crop, old.targets.joints2d_crop)
    assert torch.equal(new.targets.vertex_contact, old.targets.vertex_contact)
    torch.testing.assert_close(new.targets.contact_points_cam, old.targets.contact_points_cam)


def test_two_steps_of_the_dummy_method_with_memory_data(tiny_dataset, test_configs, tmp_path):
    out = tmp_path / "run"
    seen = {}

    def grab(trainer):
        seen["loader"], seen["prepare"] = trainer.train_loader, trainer.prepare

    cfg = compose_train(
        [*tiny_overrides(tiny_dataset, out, **{"trainer.max_steps": 2}), *MEMORY], test_configs
    )
    result = train_from_config(cfg, on_trainer=grab)
    assert result.step == 2 and result.checkpoint.is_file()
    assert isinstance(seen["loader"], MemoryLoader)
    assert isinstance(seen["prepare"], MemoryStepPreparer)
    assert seen["prepare"].augment is not None  # configs/loader/memory.yaml augments
    assert len(seen["loader"].stream.cache) == 8 and seen["loader"].stream.complete


def test_resume_continues_the_same_memory_run(tiny_dataset, test_configs, tmp_path):
    """Interrupted after 2 steps and resumed to 4 gives the weights of 4 uninterrupted steps
    (order from (seed, epoch), augmentation from the checkpointed RNG)."""
    extra = {"trainer.max_steps": 4, "trainer.val_every_epochs": 0}
    full = tmp_path / "full"
    train_from_config(compose_train([*tiny_overrides(tiny_dataset, full, **extra), *MEMORY],
                                    test_configs))  # fmt: skip
    part = tmp_path / "part"
    over = [*tiny_overrides(tiny_dataset, part, **extra), *MEMORY]
    train_from_config(compose_train(over, test_configs), until_step=2)
    train_from_config(compose_train([*over, "resume=true"], test_configs))
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _with_placer_grids(dataset, out):
    """A copy of a dataset whose rooms hold a coarse (10 cm) placer SDF grid, as the contact
    placer leaves them (the tiny dataset's standing placer writes none)."""
    import shutil

    import trimesh

    from sahmr.scene.sdf import build_sdf_grid

    shutil.copytree(dataset, out)
    for room in sorted((out / "rooms").iterdir()):
        mesh = trimesh.load(room / "mesh.ply", force="mesh", process=False)
        build_sdf_grid(mesh, voxel_size=0.1).save(room / "placer_sdf_1000.npz")
    return out


def test_steps_carry_each_frames_room_sdf(tiny_dataset, tmp_path):
    """loader.scene_sdf: every step's targets name their frames' rooms; the one-pass lookup at
    the true vertices gives what each room's own grid (ground joined) gives."""
    from sahmr.geometry.cameras import camera_to_world
    from sahmr.scene.sdf_store import sample_frames, stored_or_built_sdf

    root = _with_placer_grids(tiny_dataset, tmp_path / "ds")
    body = BodyModel()
    cpu = torch.device("cpu")
    stream = ShardStream(root, "train", cpu, MemoryDataConfig(decode_workers=0, scene_sdf=True))
    stream.refresh()
    idx = torch.tensor([5, 1, 6, 2])
    step = MemoryStepPreparer(stream, body.topology, cpu).step(idx)
    t = step.targets
    assert t.scene_sdf is not None and len(stream.sdfs) == len(stream.scenes)
    verts_world = camera_to_world(t.T_w2c.double(), t.verts_cam.double())
    got = sample_frames(verts_world, t.scene_sdf)
    for i, k in enumerate(idx.tolist()):
        sid = stream.scenes.scene_ids[int(stream.cache.scene[k])]
        grid = stored_or_built_sdf(root / "rooms" / sid / "mesh.ply")
        torch.testing.assert_close(got[i], grid.sample(verts_world[i]), atol=2e-3, rtol=0)
    assert got.amin() > -0.1  # the generated bodies stand on the floor, not in it
    with pytest.raises(ValueError, match="needs_scene"):
        ShardStream(root, "train", cpu, MemoryDataConfig(decode_workers=0, scene_sdf=True),
                    needs_scene=False)  # fmt: skip


def test_train_tool_sahmr_small_with_memory_data(tiny_dataset, tmp_path, monkeypatch):
    """tools/train.py exp=sahmr_small ... loader=memory: two steps of the real method, with the
    scene penetration term on the rooms' grids (loader.scene_sdf)."""
    import json

    root = _with_placer_grids(tiny_dataset, tmp_path / "ds")
    run = tmp_path / "run"
    over = [
        "exp=sahmr_small", "trainer=tiny", "device=cpu", f"data.root={root}",
        f"paths.output_dir={run}", "max_points_per_scene=20000", "trainer.max_steps=2",
        "trainer.batch_size=2", "trainer.val_batch_size=2", *MEMORY,
        "loader.scene_sdf=true", "loss.param_terms.penetration=30",
    ]  # fmt: skip
    run_hydra_tool("train", over, monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["metrics"]["last"]["frames"] == 2
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if r["split"] == "train"]
    assert len(train) == 2 and all(r["scene_penetration"] >= 0 for r in train)


def test_memory_path_rejects_clip_mode(tiny_dataset, test_configs, tmp_path):
    over = [*tiny_overrides(tiny_dataset, tmp_path / "c", clip_length=2), *MEMORY]
    with pytest.raises(ValueError, match="frames only"):
        train_from_config(compose_train(over, test_configs))


@pytest.mark.gpu
def test_sync_free_steps_match_fused_steps_and_skip_non_finite_on_cuda(tiny_dataset, tmp_path):
    import dataclasses

    from engine_testkit import TinyLoss, TinyMethod

    from sahmr.engine.memory_data import build_memory_data
    from sahmr.engine.trainer import Trainer
    from sahmr.engine.trainer_config import TrainerConfig

    cuda = torch.device("cuda")
    body = BodyModel()
    loader, prepare = build_memory_data(
        MemoryDataConfig(decode_workers=0), root=str(tiny_dataset), split="train",
        topology=body.topology, device=cuda, batch_size=2, progress=False,
    )  # fmt: skip

    def make(sync_free: bool) -> Trainer:
        torch.manual_seed(0)
        cfg = TrainerConfig(fused_optimizer=True, sync_free_steps=sync_free, batch_size=2,
                            progress=False, val_every_epochs=0)  # fmt: skip
        return Trainer(method=TinyMethod(dropout=0.0).to(cuda), loss=TinyLoss().to(cuda),
                       config=cfg, train_loader=loader, prepare=prepare,
                       output_dir=tmp_path / str(sync_free))  # fmt: skip

    plain, free = make(False), make(True)
    assert free._sync_free and not plain._sync_free
    step = prepare.step(torch.tensor([0, 1]))
    plain.train_step(step)
    free.train_step(step)
    for a, b in zip(plain.method.parameters(), free.method.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    before = [p.detach().clone() for p in free.method.parameters()]
    nan_targets = dataclasses.replace(step.targets, verts_cam=step.targets.verts_cam * float("nan"))
    free.train_step(dataclasses.replace(step, targets=nan_targets))
    torch.cuda.synchronize()
    assert all(torch.equal(p, q) for p, q in zip(free.method.parameters(), before, strict=True))
    assert int(free._skipped.item()) == 1
