"""Cameras chosen for how much of the body the room hides (``camera.hidden_fraction``)."""

from __future__ import annotations

import numpy as np
import pytest

from sahmr.data.synthetic import SyntheticDataset
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig


def _cfg(out, **camera):
    return GenerationConfig.from_dict(dict(
        out_dir=str(out), num_samples=24, samples_per_shard=24, seed=5, workers=0,
        sequence_fraction=0.0, occluders={"fraction": 0.0}, camera=camera,
        splits={"train": dict(fraction=1, bundled=["living_room"])},
    ))  # fmt: skip


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
