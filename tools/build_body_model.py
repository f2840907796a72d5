"""Builds the license-free, SMPL-format neutral body and writes it to disk.

Usage:
    python tools/build_body_model.py [--out PATH] [--export-pkl DIR] [--seed N]

Writes the shipped asset ``sahmr/body/assets/license_free_neutral.npz`` by default;
``--export-pkl DIR`` also writes ``DIR/SMPL_NEUTRAL.pkl`` (a pickled plain dict of numpy
arrays with SMPL's keys) for ``smplx.SMPL(model_path=DIR)``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import time
from pathlib import Path

import numpy as np

import sahmr
from sahmr.body.license_free import build_license_free_body, smpl_pickle_dict, to_storage
from sahmr.body.license_free.skeleton import SOLE_Y

DEFAULT_OUT = Path(sahmr.__file__).parent / "body" / "assets" / "license_free_neutral.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    parser.add_argument(
        "--export-pkl",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write DIR/SMPL_NEUTRAL.pkl",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of meshing retries")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    arrays = to_storage(build_license_free_body(seed=args.seed))
    build_s = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    if args.export_pkl is not None:
        args.export_pkl.mkdir(parents=True, exist_ok=True)
        with open(args.export_pkl / "SMPL_NEUTRAL.pkl", "wb") as fh:
            pickle.dump(smpl_pickle_dict(arrays), fh, protocol=4)
    verts = arrays["v_template"]
    print(
        f"V={len(verts)} F={len(arrays['f'])} height={verts[:, 1].max() - SOLE_Y:.3f} m "
        f"build={build_s:.1f} s -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
