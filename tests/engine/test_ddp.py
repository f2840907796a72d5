"""Two CPU processes (gloo) through torchrun: tools/train.py finishes and writes one checkpoint."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from engine_testkit import TOOLS, run_tool, tiny_overrides

from sahmr.engine.checkpoint import load_checkpoint


@pytest.mark.slow  # two fresh interpreters: ~25 s on the shared 2-core machine
def test_torchrun_two_ranks_on_gloo(tiny_dataset, subprocess_configs, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_dataset, out, **{"trainer.max_steps": 2, "trainer.ckpt_every": 0}
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(TOOLS / "train.py"),
        f"hydra.searchpath=[file://{subprocess_configs}]", *overrides,
    ]  # fmt: skip
    res = run_tool(cmd, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    printed = json.loads(res.stdout[res.stdout.index("{") :])  # rank 0 prints once
    assert printed["stopped"] == "done" and printed["step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 2  # one RNG state per rank
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    assert not any(k.startswith("module.") for k in ckpt["model"])  # unwrapped weights
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"]
    assert len(val) == 1 and val[0]["frames"] == 4  # one batch of 2 frames on each rank
