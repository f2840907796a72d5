"""How far a fine-tune moved the shipped int8 weights, in int8 steps (docs/results.md, (p)).

    python3 docs/results/run30_gpu/export_check/int8_moves.py SHIPPED.pt NEW.pt [--noise OUT.pt]

For each mesh-network part: the share of output channels whose int8 scale stayed the same,
the share of int8 values that changed inside those channels (a move of at least half a step),
and the RMS difference of the two dequantised weights over the shipped step. ``--noise`` also
writes NEW with every mesh-network int8 weight jittered by U(-step/2, step/2) (float32): one
more rounding draw, to measure what rounding alone costs.
"""

from __future__ import annotations

import argparse
import collections

import torch

from sahmr.engine.quantize import expand_int8


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shipped")
    p.add_argument("new")
    p.add_argument("--noise", default=None)
    a = p.parse_args()
    old = torch.load(a.shipped, weights_only=True, map_location="cpu")
    new = torch.load(a.new, weights_only=True, map_location="cpu")
    chans, same_chans, vals, flips = (collections.Counter() for _ in range(4))
    rms = collections.defaultdict(list)
    for k, q in new["model_int8"].items():
        if not k.startswith("mesh_net."):
            continue
        part = k.split(".")[1]
        s_old, s_new = old["model_int8_scale"][k].float(), new["model_int8_scale"][k].float()
        view = (-1, *([1] * (q.dim() - 1)))
        same = s_old == s_new
        chans[part] += same.numel()
        same_chans[part] += int(same.sum())
        inside = same.view(view).expand_as(q)
        vals[part] += int(inside.sum())
        flips[part] += int(((q != old["model_int8"][k]) & inside).sum())
        diff = q.float() * s_new.view(view) - old["model_int8"][k].float() * s_old.view(view)
        rms[part].append((diff.pow(2).mean() / s_old.pow(2).mean()).sqrt().item())
    print("| part | channels, scale unchanged | values moved >= half a step there "
          "| RMS difference / step |")  # fmt: skip
    print("| --- | ---: | ---: | --- |")
    for part in chans:
        moved = flips[part] / max(1, vals[part])
        print(f"| {part} | {same_chans[part]} / {chans[part]} | {100 * moved:.2f} % | "
              f"{', '.join(f'{r:.2f}' for r in rms[part][:6])} |")  # fmt: skip
    if a.noise:
        g = torch.Generator().manual_seed(31)
        full = expand_int8(new)
        for k, s in new["model_int8_scale"].items():
            if k.startswith("mesh_net."):
                w = full["model"][k]
                step = s.float().view(-1, *([1] * (w.dim() - 1)))
                full["model"][k] = w + (torch.rand(w.shape, generator=g) - 0.5) * step
        full["model"] = {k: v.float() if v.is_floating_point() else v
                         for k, v in full["model"].items()}  # fmt: skip
        torch.save(full, a.noise)


if __name__ == "__main__":
    main()
