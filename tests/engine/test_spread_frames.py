"""Evaluation frames spread over a split (`spread_indices`): every room counts in a short val."""

from __future__ import annotations

import csv
from itertools import pairwise

import pytest
from engine_testkit import run_hydra_tool

from sahmr.engine.data import LoaderSettings, StridedSampler, build_loader, spread_indices


def test_spread_indices_by_hand():
    assert spread_indices(10, 4) == [1, 3, 6, 8]  # floor((2i + 1) * 10 / 8)
    assert spread_indices(4, 3) == [0, 2, 3]
    assert spread_indices(5, None) == [0, 1, 2, 3, 4]
    assert spread_indices(5, 9) == [0, 1, 2, 3, 4]
    assert spread_indices(1000, 1) == [500]
    with pytest.raises(ValueError, match="count"):
        spread_indices(5, 0)


@pytest.mark.parametrize("length", [1, 7, 40, 999, 1000])
@pytest.mark.parametrize("count", [1, 3, 38, 608])
def test_spread_indices_are_distinct_ascending_and_cover_the_split(length, count):
    idx = spread_indices(length, count)
    assert len(idx) == min(length, count)
    assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < length
    if count < length:  # no gap longer than one share (rounded up) anywhere
        share = -(-length // count)
        edges = [-1, *idx, length]
        assert max(b - a for a, b in pairwise(edges)) <= share + 1


def test_ranks_split_the_spread_frames_once():
    every = spread_indices(100, 30)
    parts = [StridedSampler(100, num_replicas=3, rank=r, items=30).indices for r in range(3)]
    assert sorted(i for p in parts for i in p) == every
    assert StridedSampler(10).indices == list(range(10))


def test_a_training_loader_refuses_items(tiny_dataset):
    from sahmr.data.synthetic import SyntheticDataset

    with pytest.raises(ValueError, match="training loader"):
        build_loader(SyntheticDataset(tiny_dataset, "train"), LoaderSettings(), train=True,
                     items=2)  # fmt: skip


def test_eval_tool_scores_the_spread_frames_under_their_own_names(
    tiny_dataset, tmp_path, monkeypatch, shipped_checkpoint
):
    """``frames=3`` of the 4 val frames: frames 0, 2, 3, each scored under its dataset name."""
    out = tmp_path / "eval"
    run_hydra_tool(
        "eval_checkpoint",
        [f"checkpoint={shipped_checkpoint}", f"data.root={tiny_dataset}", "split=val",
         f"out={out}", "device=cpu", "num_workers=0", "batch_size=2", "frames=3",
         "scene_metrics=false", "progress=false"],
        monkeypatch,
    )  # fmt: skip
    with open(out / "per_frame.csv", newline="") as f:
        names = [row["name"] for row in csv.DictReader(f)]
    assert names == ["val-000000", "val-000002", "val-000003"]
    whole = tmp_path / "whole"
    run_hydra_tool(
        "eval_checkpoint",
        [f"checkpoint={shipped_checkpoint}", f"data.root={tiny_dataset}", "split=val",
         f"out={whole}", "device=cpu", "num_workers=0", "batch_size=2", "scene_metrics=false",
         "progress=false"],
        monkeypatch,
    )  # fmt: skip
    with open(whole / "per_frame.csv", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    with open(out / "per_frame.csv", newline="") as f:
        for row in csv.DictReader(f):  # the same frame scores the same in either run
            assert float(row["g_mpjpe"]) == pytest.approx(float(rows[row["name"]]["g_mpjpe"]),
                                                          rel=1e-4)  # fmt: skip
