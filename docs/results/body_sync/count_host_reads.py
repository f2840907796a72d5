"""Counts the tensor reads back to the host in one training step, by where they happen (CPU).

On a GPU each such read (``item``, ``tolist``, a tensor turned into a bool, int, float or list
index) makes the host wait for the device. The trainer is built as on a GPU: fused AdamW and
sync-free steps (on the CPU the trainer would otherwise pick the unfused optimizer, which
reads every parameter's step count). Two warm-up steps, then one step counted.

    python3 docs/results/body_sync/count_host_reads.py DATA SPLIT [--smplx-chain] [METHOD ...]
    # METHOD: tools/benchmark_train.py's names (default metro_small sahmr_small);
    # --smplx-chain: the body model skins through smplx's chain, as before 2026-12-06
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate

from sahmr.benchmark.host_reads import count_host_reads

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools"))
import benchmark_train as bt  # noqa: E402


class _FusedAdamW(torch.optim.AdamW):
    """AdamW with ``fused=True`` whatever the trainer asks (it asks only on a GPU)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["fused"] = True
        super().__init__(*args, **kwargs)


def count(data: str, split: str, method: str) -> collections.Counter:
    """``{(read, "file:line <- caller <- caller"): count}`` of one step of ``method``."""
    args = bt.parse_args(["--data", data, "--split", split, "--out", tempfile.gettempdir(),
                          "--methods", method, "--paths", "new", "--batch-size", "4",
                          "--no-compile", "--no-bf16", "--decode-workers", "1", "--device", "cpu",
                          "--max-points-per-scene", "20000"])  # fmt: skip
    args.compile = False
    device = torch.device("cpu")
    base = [f"data.root={data}", f"data.split={split}"]
    body = instantiate(bt.compose(["exp=metro_small", *base]).body)
    path = bt.build_new_path(args, body.topology, device)
    cfg = bt.compose([*bt.METHODS[method], *base])
    prepare = path.prepare_scene if cfg.get("needs_scene", True) else path.prepare_plain
    with tempfile.TemporaryDirectory() as tmp:
        real = torch.optim.AdamW  # the trainer builds its optimizer as torch.optim.AdamW(...)
        torch.optim.AdamW = _FusedAdamW
        try:
            trainer = bt.build_trainer(cfg, args, path, device, Path(tmp))
        finally:
            torch.optim.AdamW = real
        assert trainer._sync_free, "the trainer should step without host synchronisation"
        trainer.model.train()
        for _ in range(2):
            trainer.train_step(prepare.step(path.next(), targets=True))
        step = prepare.step(path.next(), targets=True)
        with count_host_reads() as hits:
            trainer.train_step(step)
    return hits


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data, split, *methods = sys.argv[1:]
    if "--smplx-chain" in methods:
        methods.remove("--smplx-chain")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from smplx_chain import use_smplx_chain

        use_smplx_chain()
    for method in methods or ["metro_small", "sahmr_small"]:
        hits = count(data, split, method)
        print(f"{method}: {sum(hits.values())} host reads in one training step")
        for (name, where), n in hits.most_common():
            print(f"  {n:4d} {name:10s} {where}")


if __name__ == "__main__":
    main()
