"""Clips of consecutive frames (sahmr.data.sequences) for temporal methods."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from sahmr.data.sequences import ClipDataset, collate_clips, frame_keys
from sahmr.data.synthetic import SyntheticDataset
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig


class _Rows(list):
    """A dataset of bare rows with the fields `frame_keys` reads."""


def _row(seq: str, frame: int, action: str = "seq_reach"):
    return types.SimpleNamespace(sequence_id=seq, frame_index=frame, action=action)


def test_windows_follow_consecutive_frames_of_motion_sequences():
    rows = _Rows(
        [_row("a", f) for f in (2, 0, 1, 3, 4, 6, 7, 8)]  # gap between 4 and 6
        + [_row("b", f, "sit_chair") for f in range(5)]  # views of one body: not a motion
        + [_row("c", f) for f in range(2)]  # too short
    )
    clips = ClipDataset(rows, clip_length=3)
    # runs of "a": frames 0-4 -> one window (0, 1, 2) at stride 3; 6-8 -> (6, 7, 8)
    got = [[rows[i].frame_index for i in c] for c in clips.clips]
    assert got == [[0, 1, 2], [6, 7, 8]]
    assert all(rows[i].sequence_id == "a" for c in clips.clips for i in c)
    overlapping = ClipDataset(rows, clip_length=3, stride=1)
    assert [[rows[i].frame_index for i in c] for c in overlapping.clips] == [
        [0, 1, 2], [1, 2, 3], [2, 3, 4], [6, 7, 8]]  # fmt: skip
    everything = ClipDataset(rows, clip_length=3, motion_prefix=None)
    assert len(everything) == 2 + 1  # "b" joins with one window
    assert [r.frame_index for r in clips[1]] == [6, 7, 8]
    with pytest.raises(ValueError):
        ClipDataset(rows, clip_length=0)


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("motions")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=6, samples_per_shard=6, seed=2, workers=0,
            sequence_fraction=1.0, sequence_frames=6, views_per_body=1,
            splits={"train": dict(fraction=1, bundled=["bedroom"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


def test_synthetic_clips_collate_into_model_inputs(motion_root):
    from sahmr.body import BodyModel
    from sahmr.models.vibe import prepare_clip_inputs, prepare_clip_targets

    data = SyntheticDataset(motion_root, "train")
    fast = frame_keys(data)
    slow = [(s.sequence_id, s.frame_index, s.action) for s in (data[i] for i in range(len(data)))]
    assert [(k.sequence_id, k.frame_index, k.action) for k in fast] == slow
    clips = ClipDataset(data, clip_length=3, stride=1)
    assert len(clips) >= 2
    for clip in clips.clips:
        keys = [fast[i] for i in clip]
        assert len({k.sequence_id for k in keys}) == 1
        assert [k.frame_index for k in keys] == list(range(keys[0].frame_index,
                                                           keys[0].frame_index + 3))  # fmt: skip
    batch = collate_clips([clips[0], clips[1]])
    assert batch.num_clips == 2 and batch.clip_length == 3 and len(batch.frames) == 6
    assert batch.frames.sequence_id[:3] == [fast[i].sequence_id for i in clips.clips[0]]
    topology = BodyModel().topology
    inputs = prepare_clip_inputs(batch)
    targets = prepare_clip_targets(batch, topology, torch.as_tensor(topology.j_regressor_j14))
    assert inputs.batch_size == 2 and inputs.frames.image.shape == (6, 3, 224, 224)
    assert targets.batch_size == 2 and targets.frames.joints_cam.shape == (6, 24, 3)
    # frames of a clip are close in time: the pelvis moves little between consecutive frames
    # (six frames: a walk to a chair takes at least three steps of its >= 0.6 m; with four
    # frames one step covers it all)
    pelvis = targets.frames.root_cam.reshape(2, 3, 3)
    assert (pelvis[:, 1:] - pelvis[:, :-1]).norm(dim=-1).max() < 0.3
    with pytest.raises(ValueError):
        collate_clips([clips[0], clips[0][:2]])


def test_rows_record_the_side_drawn(motion_root):
    """The contact placer's frames carry ``mirrored`` (0 or 1, never the unknown 255); a walk's
    gait holds both sides and is recorded 0; `dataset_factors` reads the column."""
    from sahmr.evaluation.factors import dataset_factors

    data = SyntheticDataset(motion_root, "train")
    side = data.columns(["mirrored"])["mirrored"]
    assert side.dtype == np.uint8 and len(side) == len(data)
    assert set(side.tolist()) <= {0, 1}
    keys = frame_keys(data)
    walking = [v for k, v in zip(keys, side.tolist())
               if k.action == "seq_walk_to_sit" and k.frame_index < 3]  # fmt: skip
    assert all(v == 0 for v in walking)
    np.testing.assert_array_equal(dataset_factors(data)["mirrored"], side)
