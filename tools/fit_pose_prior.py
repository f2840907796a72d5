#!/usr/bin/env python
"""Fit the pose prior (a Gaussian mixture over SMPL body poses) to the generator's pose library.

Example:
    python tools/fit_pose_prior.py                       # writes sahmr/optim/assets/pose_gmm.npz
    python tools/fit_pose_prior.py --out /tmp/gmm.npz --components 8 --samples 20000

Deterministic: the same arguments give a byte-identical file (seeded sampling, seeded EM
initialisation, fixed zip timestamps). See docs/baselines.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from sahmr.optim.priors import (
    fit_gmm_em,
    mean_rotation_pose,
    pose_prior_asset_path,
    sample_pose_library,
    save_pose_gmm,
)

logger = logging.getLogger("fit_pose_prior")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=pose_prior_asset_path(), help="output .npz")
    p.add_argument("--samples", type=int, default=20000, help="library poses drawn")
    p.add_argument("--components", type=int, default=8, help="mixture components K")
    p.add_argument("--iterations", type=int, default=200, help="maximum EM iterations")
    p.add_argument(
        "--reg-covar",
        type=float,
        default=1e-3,
        help="rad^2 added to every covariance diagonal (default 1e-3, about (1.8 deg)^2)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mirror", action="store_true", help="do not mirror poses left-right")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.samples < 10 * args.components or args.components < 1:
        print("need --components >= 1 and --samples >= 10 x components", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    lib = sample_pose_library(args.samples, seed=args.seed, mirror=not args.no_mirror)
    weights, means, covs, ll = fit_gmm_em(
        lib.body_pose,
        args.components,
        iterations=args.iterations,
        reg_covar=args.reg_covar,
        seed=args.seed,
    )
    meta = {
        "source": "sahmr.optim.priors.sample_pose_library (sahmr.body.pose_library.ACTIONS)",
        "samples": args.samples,
        "components": args.components,
        "iterations": args.iterations,
        "reg_covar": args.reg_covar,
        "seed": args.seed,
        "mirror": not args.no_mirror,
        "mean_log_likelihood": round(ll, 4),
    }
    path = save_pose_gmm(
        args.out,
        weights=weights,
        means=means,
        covariances=covs,
        mean_body_pose=mean_rotation_pose(lib.body_pose),
        meta=meta,
    )
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB): K={args.components}, "
        f"weights {np.round(np.sort(weights)[::-1], 3).tolist()}, mean log-likelihood "
        f"{ll:.2f}, {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
