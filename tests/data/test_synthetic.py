"""SyntheticDataset over generated shards: Samples, scene points, collate into batches."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sahmr.data.collate import collate_samples
from sahmr.data.sample import Sample
from sahmr.data.shards import ShardReader
from sahmr.data.synthetic import SyntheticDataset
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=6, samples_per_shard=2, seed=3, workers=0,
            placer="standing", views_per_body=2, crop_size=224, full_frame_scale=0.1,
            splits={"train": dict(fraction=2, kinds=["office"], seeds=[100]),
                    "test": dict(fraction=1, bundled=["gym"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


def test_dataset_returns_samples_matching_shards(root):
    train = SyntheticDataset(root, "train", load_image=True, load_mask_depth=True)
    test = SyntheticDataset(root, "test")
    assert len(train) == 4 and len(test) == 2
    s = train[3]
    assert isinstance(s, Sample)
    assert s.crop.shape == (224, 224, 3) and s.crop.dtype == np.uint8
    assert s.source == "synth" and s.scene_id == "gen_office_00100"
    assert s.has_body_params and s.vertices_world.shape[1] == 3
    assert 0.0 <= s.occlusion <= 1.0 and s.action
    w, h = s.image_size
    assert 0 <= s.bbox[0] < s.bbox[2] <= w and 0 <= s.bbox[1] < s.bbox[3] <= h
    assert s.image is None and s.extra["image_small"].shape == (round(h * 0.1), round(w * 0.1), 3)
    assert set(np.unique(s.extra["mask"])) <= {0, 1, 2} and (s.extra["mask"] == 1).any()
    assert np.isfinite(s.extra["depth"][s.extra["mask"] == 1]).all()
    reader = ShardReader(root / "shards" / s.extra["shard"])
    row = reader.row(s.extra["row"])
    np.testing.assert_array_equal(s.vertices_world, row["vertices_world"])
    np.testing.assert_array_equal(s.contact_points_world, row["contact_points_world"])
    assert s.sequence_id == row["sequence_id"] and s.frame_index == row["frame_index"]
    # the crop camera projects the pelvis inside the crop
    p = s.T_w2c[:3, :3] @ s.joints_world[0] + s.T_w2c[:3, 3]
    uv = s.extra["K_crop"][:2, :2] @ (p[:2] / p[2]) + s.extra["K_crop"][:2, 2]
    assert np.all((uv > 0) & (uv < 224))
    assert test[0].scene_id == "bundled_gym"


def test_scene_points_and_collate(root):
    ds = SyntheticDataset(root, "train")
    pts = ds.scene_points["gen_office_00100"]
    assert pts.dtype == np.float32 and pts.shape[1] == 3 and len(pts) > 10_000
    cells = np.unique(np.floor(pts / 0.02).astype(np.int64), axis=0)
    assert len(cells) > 0.99 * len(pts)  # one point per 2 cm voxel (float32 rounding)
    assert list(ds.scene_points) == ["gen_office_00100"]
    loader = DataLoader(
        ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0),
        collate_fn=functools.partial(collate_samples, scene_points=ds.scene_points),
    )  # fmt: skip
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b.crop.shape == (2, 224, 224, 3) and b.betas.shape == (2, 10)
    assert b.scene_points.shape[0] == 2 * len(pts)
    assert b.contact_points_world.shape[0] == b.contact_batch_idx.shape[0]


def test_contact_sheet_draws_labelled_tiles(root):
    from sahmr.synth.contact_sheet import annotate_crop, dataset_contact_sheet

    sheet = dataset_contact_sheet(root, "train", num=3, columns=2)
    assert sheet.shape == (2 * 228 + 4, 2 * 228 + 4, 3)
    s = SyntheticDataset(root, "train")[0]
    tile = annotate_crop(s)
    # the standing stand-in has its soles labelled (regions 1, 2): coloured dots appear
    assert (s.vertex_contact > 0).any()
    assert (tile != s.crop).any()
    with pytest.raises(ValueError):
        dataset_contact_sheet(root, "val")


def test_columns_and_strings_match_the_samples_row_by_row(root):
    """The whole-column read (no image decoded) against the slow reference: every sample."""
    train = SyntheticDataset(root, "train")
    names = ["T_w2c", "betas", "joints_world", "bbox", "occlusion", "height", "occluder"]
    cols = train.columns(names)
    assert all(cols[n].shape[0] == len(train) for n in names)
    actions = train.strings("action")
    scenes = train.strings("scene_id")
    for i in range(len(train)):
        s = train[i]
        np.testing.assert_array_equal(cols["T_w2c"][i], s.T_w2c)
        np.testing.assert_array_equal(cols["betas"][i], s.betas)
        np.testing.assert_array_equal(cols["joints_world"][i], s.joints_world)
        np.testing.assert_array_equal(cols["bbox"][i], s.bbox)
        assert cols["occlusion"][i] == pytest.approx(s.occlusion)
        assert actions[i] == s.action and scenes[i] == s.scene_id
        row = ShardReader(root / "shards" / s.extra["shard"]).row(s.extra["row"])
        assert cols["height"][i] == row["height"] and cols["occluder"][i] == row["occluder"]
    with pytest.raises(KeyError, match="not a per-row column"):
        train.columns(["crop"])
    with pytest.raises(KeyError, match="not a string column"):
        train.strings("betas")
