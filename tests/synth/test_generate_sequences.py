"""Motion sequences written into shards: consecutive frames of one body seen by one camera."""

from __future__ import annotations

import numpy as np
import pytest

from sahmr.data.synthetic import SyntheticDataset
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig


def _cfg(out, **kw):
    base = dict(
        out_dir=str(out), num_samples=16, samples_per_shard=16, seed=2, workers=0,
        sequence_fraction=1.0, sequence_frames=8, views_per_body=1,
        splits={"train": dict(fraction=1, bundled=["bedroom"])},
    )  # fmt: skip
    base.update(kw)
    return GenerationConfig.from_dict(base)


def test_sequences_are_consecutive_frames_from_one_camera(tmp_path):
    generate(_cfg(tmp_path), progress=False)
    data = SyntheticDataset(tmp_path, "train")
    assert len(data) == 16
    by_seq: dict[str, list] = {}
    for i in range(len(data)):
        s = data[i]
        by_seq.setdefault(s.sequence_id, []).append(s)
    assert len(by_seq) >= 2
    for frames in by_seq.values():
        assert [f.frame_index for f in frames] == list(range(len(frames)))
        assert all(f.action.startswith("seq_") for f in frames)
        for f in frames[1:]:
            np.testing.assert_array_equal(f.T_w2c, frames[0].T_w2c)
            np.testing.assert_array_equal(f.betas, frames[0].betas)
        pelvis = np.stack([f.joints_world[0] for f in frames])
        # smooth motion (8 frames: a walk moves 0.1-0.2 m per frame, sitting down <= 0.8 m
        # over 3 frames; 4 frames would force a 0.6 m walking step)
        assert np.linalg.norm(np.diff(pelvis, axis=0), axis=1).max() < 0.3


def test_sequence_config_is_checked(tmp_path):
    with pytest.raises(ValueError, match="contact placer"):
        _cfg(tmp_path, placer="standing")
    with pytest.raises(ValueError, match="sequence_fraction"):
        _cfg(tmp_path, sequence_fraction=1.5)
    # sequences off: the content hash of older datasets is unchanged
    off = _cfg(tmp_path, sequence_fraction=0.0)
    assert "sequence_fraction" not in off.content_dict()
