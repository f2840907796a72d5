"""The in-memory data path against the DataLoader path, and the device augmentation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from memory_dataset import write_tiny_dataset

from sahmr.body.model import BodyModel
from sahmr.data.augment import AugmentConfig, augment_crops, jitter_boxes
from sahmr.data.collate import collate_samples
from sahmr.data.memory import (
    MemoryDataConfig,
    PinnedStager,
    SampleCache,
    SceneStore,
    ShardStream,
    contact_gather_index,
    decode_shard,
    gather_batch,
    subsample_points,
)
from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.data import StepPreparer
from sahmr.engine.memory_data import MemoryLoader, MemoryStepPreparer
from sahmr.geometry.cameras import project
from sahmr.geometry.crops import square_bbox
from sahmr.scene.frontend import SceneBank, crop_intrinsics
from sahmr.scene.frustum import frustum_crop

F16_TOL_M = 1e-3  # float16 vertices relative to the pelvis: < 0.5 mm within 1 m


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("memsynth"))


@pytest.fixture(scope="module")
def body():
    return BodyModel()


def _old_step(root, body, indices, max_points=None):
    ds = SyntheticDataset(root, "train")
    bank = SceneBank(dict(ds.scene_points.items()), "cpu", max_points_per_scene=max_points)
    batch = collate_samples([ds[i] for i in indices], keep_images=False)
    return StepPreparer(body.topology, torch.device("cpu"), bank).step(batch, targets=True)


def test_same_inputs_and_targets_as_the_dataloader_path(root, body):
    stream = ShardStream(root, "train", "cpu", MemoryDataConfig(decode_workers=0), progress=False)
    stream.refresh()
    assert stream.complete and len(stream.cache) == len(SyntheticDataset(root, "train")) == 6
    indices = [3, 0, 2]
    old = _old_step(root, body, indices)
    new = MemoryStepPreparer(stream, body.topology, torch.device("cpu")).step(torch.tensor(indices))
    oi, ni = old.inputs, new.inputs
    assert torch.equal(oi.image, ni.image)
    for name in ("K_crop", "K", "bbox", "T_w2c"):
        assert torch.equal(getattr(oi, name), getattr(ni, name)), name
    assert oi.scene_points_cam.shape[0] > 100
    assert torch.equal(oi.scene_batch_idx, ni.scene_batch_idx)
    assert torch.equal(oi.scene_points_cam, ni.scene_points_cam)
    ot, nt = old.targets, new.targets
    for name in ("verts_cam", "joints14_cam"):
        torch.testing.assert_close(getattr(nt, name), getattr(ot, name), atol=F16_TOL_M, rtol=0)
    for a, b in zip(ot.verts_cam_levels, nt.verts_cam_levels, strict=True):
        torch.testing.assert_close(b, a, atol=F16_TOL_M, rtol=0)
    for name in ("joints_cam", "root_cam", "joints2d_crop", "contact_points_cam", "betas",
                 "global_orient_cam", "body_pose", "T_w2c"):  # fmt: skip
        torch.testing.assert_close(getattr(nt, name), getattr(ot, name), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(nt.joints14_2d_crop, ot.joints14_2d_crop, atol=0.05, rtol=0)
    for name in ("vertex_contact", "contact_point_region", "contact_batch_idx"):
        assert torch.equal(getattr(nt, name), getattr(ot, name)), name
    assert nt.vertex_contact.dtype == torch.int64 and nt.vertex_contact.max() > 0
    assert new.sample_keys == old.sample_keys
    assert new.frames.scene_id == old.frames.scene_id


def test_subsampled_scenes_crop_like_frustum_crop(root):
    """The per-room device crop equals `frustum_crop` over a bank of the same (subsampled)
    points, for frames of several rooms in one batch."""
    ds = SyntheticDataset(root, "train")
    test = SyntheticDataset(root, "val")
    scenes = SceneStore("cpu", chunk=5000)  # one or two frames per product
    raw = {**dict(ds.scene_points.items()), **dict(test.scene_points.items())}
    subs = {sid: subsample_points(p, 3000, sid, seed=1) for sid, p in raw.items()}
    for sid in sorted(subs):
        scenes.add(sid, subs[sid])
    frames = [ds[i] for i in range(len(ds))] + [test[i] for i in range(len(test))]
    batch = collate_samples(frames, keep_images=False)
    bank = SceneBank(subs, "cpu")
    fs = torch.tensor([scenes.index(s) for s in batch.scene_id])
    pts, idx = scenes.frustum(batch.K, batch.T_w2c, batch.bbox, fs)
    ref = frustum_crop(
        bank.points_world, batch.K, batch.T_w2c, batch.bbox, 0.5, 12.5,
        scene_idx=bank.point_scene, frame_scene=bank.frame_scene(batch.scene_id),
    )  # fmt: skip
    assert len(set(batch.scene_id)) == 3 and pts.shape[0] > 50
    assert torch.equal(idx, ref.batch_idx) and torch.equal(pts, ref.points_cam)
    whole = SceneStore("cpu")  # every frame of a room in one product
    for sid in sorted(subs):
        whole.add(sid, subs[sid])
    pts2, idx2 = whole.frustum(batch.K, batch.T_w2c, batch.bbox, fs)
    assert torch.equal(idx2, idx) and torch.equal(pts2, pts)
    # subsets: seeded per room, independent of the other rooms
    one = subsample_points(raw[batch.scene_id[0]], 3000, batch.scene_id[0], seed=1)
    assert np.array_equal(one, subs[batch.scene_id[0]]) and one.shape == (3000, 3)


def test_contact_gather_index_against_a_loop():
    offsets = torch.tensor([0, 3, 3, 7, 8])
    indices = torch.tensor([2, 1, 0, 2, 3])
    rows, bidx = contact_gather_index(offsets, indices)
    want_rows, want_b = [], []
    for b, i in enumerate(indices.tolist()):
        for r in range(int(offsets[i]), int(offsets[i + 1])):
            want_rows.append(r)
            want_b.append(b)
    assert rows.tolist() == want_rows and bidx.tolist() == want_b


def test_cache_grows_and_rejects_bad_indices(root):
    shards = sorted((root / "shards").glob("*.npz"))
    decoded = [decode_shard(p) for p in shards]
    cache = SampleCache(1, "cpu")  # too small: rows and contact storage grow by copying
    for d in decoded:
        cache.append(d, [0] * len(d))
    assert len(cache) == sum(len(d) for d in decoded) == 8
    b = gather_batch(cache, torch.arange(8), "cpu")
    want = np.concatenate([d.arrays["contact_points_world"] for d in decoded])
    assert np.array_equal(b.contact_points_world.numpy(), want)
    with pytest.raises(IndexError):
        gather_batch(cache, torch.tensor([8]), "cpu")


def test_loader_picks_up_shards_written_later(root, tmp_path):
    """A split whose shards appear between epochs: the loader grows at the next epoch."""
    part = tmp_path / "ds"
    shutil.copytree(root, part)
    plan = json.loads((part / "dataset.json").read_text())
    train = [part / e["file"] for e in plan["shards"] if e["split"] == "train"]
    late = train[-1].with_name("held_back.npz")
    train[-1].rename(late)
    cfg = MemoryDataConfig(decode_workers=0, poll_seconds=0.01)
    stream = ShardStream(part, "train", "cpu", cfg, progress=False)
    loader = MemoryLoader(stream, batch_size=2, seed=0)
    assert len(stream.cache) == 4 and not stream.complete
    loader.sampler.set_epoch(0)
    first = list(loader)
    assert len(first) == 2 and sorted(torch.cat(first).tolist()) == [0, 1, 2, 3]
    late.rename(train[-1])
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert stream.complete and len(batches) == 3 and len(loader.sampler) == 6
    assert sorted(torch.cat(batches).tolist()) == list(range(6))


def test_decode_workers_fill_the_cache_like_the_main_thread(root):
    """Spawned decode processes give the same cache (plan order) as decoding inline."""
    inline = ShardStream(root, "val", "cpu", MemoryDataConfig(decode_workers=0), progress=False)
    inline.refresh()
    pooled = ShardStream(
        root, "val", "cpu", MemoryDataConfig(decode_workers=2, poll_seconds=0.05), progress=False
    )
    try:
        pooled.refresh()
    finally:
        pooled.close()
    assert len(pooled.cache) == len(inline.cache) == 2
    for name, t in inline.cache.fields.items():
        assert torch.equal(t[:2], pooled.cache.fields[name][:2]), name
    assert pooled.cache.keys == inline.cache.keys


# ---------------------------------------------------------------------------- augmentation


def test_jittered_boxes_give_the_moved_square():
    bbox = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 30.0, 10.0]])
    scale = torch.tensor([1.1, 0.9])
    shift = torch.tensor([[0.05, -0.02], [0.0, 0.03]])
    cx, cy, side = square_bbox(bbox, 1.2)
    ncx, ncy, nside = square_bbox(jitter_boxes(bbox, scale, shift), 1.2)
    torch.testing.assert_close(nside, side * scale)
    torch.testing.assert_close(ncx, cx + shift[:, 0] * side)
    torch.testing.assert_close(ncy, cy + shift[:, 1] * side)


def test_augmented_crops_keep_2d_targets_on_the_image_content(root, body):
    """Dots drawn at projected joints move with the crop: after augmentation each dot's
    centroid lies where the new K_crop projects the (unchanged) 3-D joint."""
    stream = ShardStream(root, "train", "cpu", MemoryDataConfig(decode_workers=0), progress=False)
    stream.refresh()
    torch.manual_seed(0)
    aug = AugmentConfig(scale=0.15, shift=0.08, brightness=0.0, contrast=0.0, saturation=0.0,
                        occluder_prob=0.0)  # fmt: skip
    prep = MemoryStepPreparer(stream, body.topology, torch.device("cpu"))
    step = prep.step(torch.arange(4))
    S = step.frames.crop.shape[1]
    j2d = step.targets.joints2d_crop  # (B, 24, 2)
    picks = [0, 4, 5, 15]  # pelvis, knees, head
    crop = torch.zeros_like(step.frames.crop)
    for b in range(4):
        for j in picks:
            u, v = (round(float(x)) for x in j2d[b, j])
            if 4 <= u < S - 4 and 4 <= v < S - 4:
                crop[b, v - 3 : v + 4, u - 3 : u + 4, j % 3] = 255
    new_crop, new_bbox = augment_crops(crop, step.frames.bbox, aug)
    assert not torch.equal(new_bbox, step.frames.bbox)
    K_crop = crop_intrinsics(step.frames.K, new_bbox, S)
    joints_cam = step.targets.joints_cam
    proj = project(K_crop, joints_cam)
    checked = 0
    for b in range(4):
        for j in picks:
            u, v = (round(float(x)) for x in j2d[b, j])
            if not (4 <= u < S - 4 and 4 <= v < S - 4):
                continue
            ch = new_crop[b, ..., j % 3].float()
            pu, pv = (float(x) for x in proj[b, j])
            win = ch[max(0, int(pv) - 8) : int(pv) + 9, max(0, int(pu) - 8) : int(pu) + 9]
            ys, xs = torch.meshgrid(
                torch.arange(max(0, int(pv) - 8), max(0, int(pv) - 8) + win.shape[0]).float(),
                torch.arange(max(0, int(pu) - 8), max(0, int(pu) - 8) + win.shape[1]).float(),
                indexing="ij",
            )
            if win.sum() < 255:  # the dot left the crop
                continue
            cu = float((win * xs).sum() / win.sum())
            cv = float((win * ys).sum() / win.sum())
            # the dot was drawn at the rounded pixel: allow that rounding (scaled) + resampling
            assert abs(cu - pu) < 1.0 and abs(cv - pv) < 1.0, (b, j, cu, pu, cv, pv)
            checked += 1
    assert checked >= 6


def test_augmented_steps_are_consistent_through_k_crop(root, body):
    """In an augmented training step the 2-D targets are the 3-D joints reprojected with the
    step's K_crop, and the inputs' K_crop is the crop camera of the moved box."""
    stream = ShardStream(root, "train", "cpu", MemoryDataConfig(decode_workers=0), progress=False)
    stream.refresh()
    torch.manual_seed(1)
    prep = MemoryStepPreparer(stream, body.topology, torch.device("cpu"), augment=AugmentConfig())
    plain = MemoryStepPreparer(stream, body.topology, torch.device("cpu")).step(torch.arange(4))
    step = prep.step(torch.arange(4))
    t = step.targets
    torch.testing.assert_close(t.joints2d_crop, project(step.inputs.K_crop, t.joints_cam))
    torch.testing.assert_close(step.inputs.K_crop, crop_intrinsics(step.inputs.K, step.inputs.bbox))
    torch.testing.assert_close(t.joints_cam, plain.targets.joints_cam)  # 3-D unchanged
    assert not torch.allclose(t.joints2d_crop, plain.targets.joints2d_crop)
    assert step.inputs.image.shape == plain.inputs.image.shape
    assert not torch.equal(step.inputs.image, plain.inputs.image)


def test_colour_and_occluders_change_pixels_only():
    torch.manual_seed(0)
    crop = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    bbox = torch.tensor([[0.0, 0.0, 10.0, 20.0]]).repeat(8, 1)
    cfg = AugmentConfig(scale=0.0, shift=0.0, occluder_prob=1.0, occluder_size=(0.3, 0.3))
    out, new_bbox = augment_crops(crop, bbox, cfg)
    torch.testing.assert_close(new_bbox, bbox)
    assert out.dtype == torch.uint8 and out.shape == crop.shape
    # every crop holds one solid rectangle of side 0.3 * 32 = 9.6 px: >= 9 x 9 equal pixels
    for b in range(8):
        _, counts = torch.unique(out[b].reshape(-1, 3), dim=0, return_counts=True)
        assert counts.max() >= 81, b
    bright = AugmentConfig(scale=0.0, shift=0.0, brightness=0.5, contrast=0.0, saturation=0.0,
                           occluder_prob=0.0)  # fmt: skip
    grey = torch.full((64, 4, 4, 3), 100, dtype=torch.uint8)
    lit, _ = augment_crops(grey, bbox[:1].repeat(64, 1), bright)
    levels = lit[:, 0, 0, 0].float()  # 100 * U(0.5, 1.5), the same on every pixel
    assert levels.min() >= 50 and levels.max() <= 150 and levels.std() > 10
    assert (lit == lit[:, :1, :1]).all()
    plain = AugmentConfig(scale=0.0, shift=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                          occluder_prob=0.0)  # fmt: skip
    same, _ = augment_crops(crop, bbox, plain)
    assert torch.equal(same, crop)  # identity settings keep the pixels


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_pinned_stager_keeps_every_copy_intact():
    stage = PinnedStager(slots=2)  # buffers reused while earlier copies may be queued
    big = torch.empty(2**24, device="cuda")
    outs = []
    for i in range(12):
        big.mul_(1.0)  # queue work so copies wait behind it
        outs.append(stage(torch.arange(i, i + 5), "cuda"))
    torch.cuda.synchronize()
    assert [o.tolist() for o in outs] == [list(range(i, i + 5)) for i in range(12)]


@pytest.mark.gpu
def test_cuda_memory_step_matches_the_dataloader_path(root, body):
    cuda = torch.device("cuda")
    ds = SyntheticDataset(root, "train")
    bank = SceneBank(dict(ds.scene_points.items()), cuda)
    indices = [4, 1, 3, 0, 5]
    batch = collate_samples([ds[i] for i in indices], keep_images=False)
    old = StepPreparer(body.topology, cuda, bank).step(batch, targets=True)
    cfg = MemoryDataConfig(decode_workers=0, storage="pinned")
    stream = ShardStream(root, "train", cuda, cfg, progress=False)
    stream.refresh()
    assert stream.cache.pin and stream.cache.fields["crop"].is_pinned()
    new = MemoryStepPreparer(stream, body.topology, cuda).step(torch.tensor(indices))
    assert torch.equal(new.inputs.image, old.inputs.image)
    assert torch.equal(new.inputs.scene_batch_idx, old.inputs.scene_batch_idx)
    torch.testing.assert_close(new.inputs.scene_points_cam, old.inputs.scene_points_cam)
    torch.testing.assert_close(new.targets.verts_cam, old.targets.verts_cam, atol=F16_TOL_M, rtol=0)
    assert torch.equal(new.targets.contact_batch_idx, old.targets.contact_batch_idx)
    torch.testing.assert_close(new.targets.contact_points_cam, old.targets.contact_points_cam)


def test_ranks_append_only_the_shards_every_rank_has(root, monkeypatch):
    """Under a process group the loader appends the shards decoded on all ranks (faked here:
    the other rank lacks shard 1), in plan order, and the others on a later refresh."""
    import sahmr.engine.memory_data as md

    other = [{0, 2}]
    monkeypatch.setattr(md, "is_dist", lambda: True)
    monkeypatch.setattr(md, "all_gather_objects", lambda mine: [sorted(mine), sorted(other[0])])
    stream = ShardStream(root, "train", "cpu", MemoryDataConfig(decode_workers=0), progress=False)
    loader = MemoryLoader(stream, batch_size=2, world_size=1)
    assert stream.loaded == {0, 2} and len(stream.cache) == 4
    assert [k for k, _ in stream.cache.keys] == ["shard-000000.npz"] * 2 + ["shard-000002.npz"] * 2
    other[0] = {0, 1, 2}
    loader.sampler.set_epoch(1)
    assert len(list(loader)) == 3 and stream.complete and len(loader.sampler) == 6
