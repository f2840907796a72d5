#!/usr/bin/env python3
"""Speed and accuracy of the batched vertex fit (`sahmr.optim.fit_vertices`).

Generated bodies (pose library poses, betas uniform in +-3, random orientation and
translation) are posed by the body model; the fit recovers parameters from their vertices,
noise-free and with Gaussian noise on every vertex coordinate. Prints one JSON object:
``ms_per_frame`` (median over repeats, device synchronised, after a warm-up fit), mean / max
vertex error in mm noise-free, and for the noisy targets the error to the noisy and to the
clean vertices.

    python3 tools/benchmark_fit_vertices.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch", type=int, default=64, help="frames per fit")
    parser.add_argument("--iterations", type=int, default=None,
                        help="Levenberg-Marquardt iterations (default: the fitter's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits")
    parser.add_argument("--noise-mm", type=float, default=10.0,
                        help="std of the Gaussian noise of the noisy run, mm")
    parser.add_argument("--betas-range", type=float, default=3.0)
    parser.add_argument("--body-model", default=None, help="SMPL-format .npz (default: shipped)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.noise_mm < 0:
        print("error: --batch and --repeats must be >= 1, --noise-mm >= 0", file=sys.stderr)
        return 2

    import torch

    from sahmr.body import BodyModel
    from sahmr.optim.fit_vertices import VertexFitter, sample_body_params
    from sahmr.optim.smplify import SMPLParams

    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        print(f"error: --device {args.device} is not usable: {exc}", file=sys.stderr)
        return 2
    body = BodyModel(args.body_model)
    kwargs = {} if args.iterations is None else {"iterations": args.iterations}
    fitter = VertexFitter(body_model=body, **kwargs).to(device)
    truth = sample_body_params(args.batch, seed=args.seed, betas_range=args.betas_range)
    with torch.no_grad():  # the body model's mesh (equal to BodyModel's, tested)
        clean = fitter.vertices(SMPLParams(**{k: v.to(device) for k, v in
                                             truth.as_dict().items()}))
    g = torch.Generator().manual_seed(args.seed + 1)
    noisy = clean + (args.noise_mm / 1000.0) * torch.randn(clean.shape, generator=g).to(device)

    fitter.fit(clean)  # warm-up (allocator, kernels)
    seconds = [fitter.fit(clean).seconds for _ in range(args.repeats)]
    res = fitter.fit(clean)
    err = res.vertex_error.double() * 1000.0
    res_noisy = fitter.fit(noisy)
    to_clean = (res_noisy.vertices - clean).norm(dim=-1).mean(-1).double() * 1000.0
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": args.batch,
        "iterations": res.iterations,
        "num_vertices": fitter.num_vertices,
        "ms_per_frame": 1000.0 * statistics.median(seconds) / args.batch,
        "ms_per_batch": 1000.0 * statistics.median(seconds),
        "mean_vertex_error_mm": float(err.mean()),
        "max_frame_vertex_error_mm": float(err.max()),
        "noise_mm": args.noise_mm,
        "noisy_error_to_noisy_mm": float(res_noisy.vertex_error.double().mean() * 1000.0),
        "noisy_error_to_clean_mm": float(to_clean.mean()),
        "noisy_max_frame_error_to_clean_mm": float(to_clean.max()),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
