"""Cameras chosen for how much of the body the room hides (``camera.hidden_fraction``)."""

from __future__ import annotations

import numpy as np
import pytest

from sahmr.data.shards import read_header
from sahmr.data.synthetic import SyntheticDataset
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig


def _raw(out, **camera):
    return dict(
        out_dir=str(out), num_samples=24, samples_per_shard=24, seed=5, workers=0,
        sequence_fraction=0.0, occluders={"fraction": 0.0}, camera=camera,
        splits={"train": dict(fraction=1, bundled=["living_room"])},
    )


def _cfg(out, **camera):
    return GenerationConfig.from_dict(_raw(out, **camera))


def test_hidden_draws_keep_views_the_room_hides_more(tmp_path):
    """With every view chosen among 6 draws, the written views' occlusion (the rendered
    person mask, not the vertex share that chose them) rises over the plain draws of the same
    seed, and every view stays within max_occlusion."""
    generate(_cfg(tmp_path / "plain"), progress=False)
    generate(_cfg(tmp_path / "hidden", hidden_fraction=1.0, hidden_candidates=6), progress=False)
    occ = {}
    for name in ("plain", "hidden"):
        data = SyntheticDataset(tmp_path / name, "train")
        occ[name] = np.asarray(data.columns(["occlusion"])["occlusion"], dtype=np.float64)
        assert len(occ[name]) == 24 and (occ[name] <= 0.6).all()
    assert occ["hidden"].mean() > occ["plain"].mean() + 0.05, occ


def test_hidden_config_is_checked_and_off_keeps_the_dataset_hash(tmp_path):
    off = _cfg(tmp_path)
    assert "hidden_fraction" not in off.content_dict()["camera"]  # datasets made before it
    on = _cfg(tmp_path, hidden_fraction=0.3)
    assert on.content_dict()["camera"]["hidden_fraction"] == 0.3
    assert on.content_hash() != off.content_hash()
    for bad in ({"hidden_fraction": 1.5}, {"hidden_fraction": -0.1}, {"hidden_candidates": 0},
                {"hidden_candidates": 2.5}):  # fmt: skip
        with pytest.raises(ValueError, match=r"camera\.hidden"):
            _cfg(tmp_path, **bad)


def test_a_split_sets_its_own_hidden_share(tmp_path):
    """``splits.<k>.hidden_fraction`` overrides the camera's for that split only: a train
    split drawing hidden cameras beside a val split of plain draws comes out the same, shard
    for shard, whether the camera's share says 1 and val says 0 or the camera's says 0 and
    train says 1; and only the train shards made hidden draws."""
    def cfg(name, camera_share, train, val):
        return GenerationConfig.from_dict(dict(
            out_dir=str(tmp_path / name), num_samples=12, samples_per_shard=6, seed=7,
            workers=0, sequence_fraction=0.0, occluders={"fraction": 0.0},
            camera={"hidden_fraction": camera_share, "hidden_candidates": 3},
            splits={"train": dict(fraction=1, bundled=["living_room"], hidden_fraction=train),
                    "val": dict(fraction=1, bundled=["office"], hidden_fraction=val)},
        ))  # fmt: skip

    a, b = cfg("a", 1.0, None, 0.0), cfg("b", 0.0, 1.0, None)
    assert a.hidden_fraction("train") == b.hidden_fraction("train") == 1.0
    assert a.hidden_fraction("val") == b.hidden_fraction("val") == 0.0
    for c in (a, b):
        generate(c, progress=False)
    for split in ("train", "val"):
        cols = [SyntheticDataset(tmp_path / n, split).columns(["occlusion", "K", "T_w2c"])
                for n in ("a", "b")]  # fmt: skip
        for key in cols[0]:
            np.testing.assert_array_equal(np.asarray(cols[0][key]), np.asarray(cols[1][key]))
    for shard in sorted((tmp_path / "b" / "shards").iterdir()):
        head = read_header(shard)
        drawn = sum(v for k, v in head["stats"]["camera_retries"].items()
                    if k.startswith("hidden_draw"))  # fmt: skip
        assert (drawn == 6) if head["split"] == "train" else (drawn == 0), (shard, head)


def test_split_hidden_share_is_checked_and_unset_keeps_the_hash(tmp_path):
    def with_share(share):
        splits = {"train": dict(fraction=1, bundled=["living_room"], hidden_fraction=share)}
        return GenerationConfig.from_dict({**_raw(tmp_path), "splits": splits})

    base = _cfg(tmp_path)
    assert with_share(None).content_hash() == base.content_hash()
    on = with_share(0.5)
    assert on.content_hash() != base.content_hash()
    assert on.content_dict()["camera"]["hidden_candidates"] == 4  # it counts now
    for bad in (1.5, -0.2, True):
        with pytest.raises(ValueError, match="hidden_fraction"):
            with_share(bad)
