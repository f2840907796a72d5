"""Builds the license-free, SMPL-format neutral body and writes it to disk.

Usage:
    python tools/build_body_model.py [--out PATH] [--export-pkl DIR] [--seed N]

Writes ``license_free_neutral.npz`` (``--out``) and says whether the rebuild reproduces the
shipped asset ``sahmr/body/assets/license_free_neutral.npz`` exactly or how it differs
(faces re-indexed, vertices moved, ...). The shipped body is never overwritten: the shipped
checkpoints and caches were made with it; ``--out`` naming it is accepted only when the
rebuild is byte-for-byte the same array content (then nothing is written).
``--export-pkl DIR`` also writes ``DIR/SMPL_NEUTRAL.pkl`` (a pickled plain dict of numpy
arrays with SMPL's keys) for ``smplx.SMPL(model_path=DIR)``.
Exit codes: 0 written (or identical to the shipped body), 2 bad arguments or a rebuild that
differs from the shipped body it was asked to replace (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import sahmr
from sahmr.atomic_write import atomic_save_npz
from sahmr.body.license_free import build_license_free_body, smpl_pickle_dict, to_storage
from sahmr.body.license_free.skeleton import SOLE_Y
from sahmr.cli.checks import BadArgument, check_writable_folder

SHIPPED = Path(sahmr.__file__).parent / "body" / "assets" / "license_free_neutral.npz"
DEFAULT_OUT = Path("license_free_neutral.npz")
EXIT_BAD_ARGUMENT = 2


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every member of an ``.npz`` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def describe_differences(
    new: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
) -> list[str]:
    """How ``new`` differs from ``ref``, one short phrase per differing array.

    Vertex positions are reported in millimetres (the arrays are in metres); face arrays say
    whether the same triangles were only re-indexed / re-ordered or are different triangles.

    Returns:
        Empty when every array is identical (same keys, dtypes, shapes and values).
    """
    out: list[str] = []
    for key in sorted(set(ref) - set(new)):
        out.append(f"{key} missing")
    for key in sorted(set(new) - set(ref)):
        out.append(f"{key} added")
    for key in sorted(set(new) & set(ref)):
        a, b = np.asarray(new[key]), np.asarray(ref[key])
        if a.shape != b.shape:
            out.append(f"{key} shape {a.shape} (shipped {b.shape})")
            continue
        if a.dtype != b.dtype and not (a.dtype.kind in "fiu" and b.dtype.kind in "fiu"):
            out.append(f"{key} dtype {a.dtype} (shipped {b.dtype})")
            continue
        if a.dtype.kind not in "fiu":
            if not np.array_equal(a, b):
                out.append(f"{key} changed")
            elif a.dtype != b.dtype:
                out.append(f"{key} dtype {a.dtype} (shipped {b.dtype})")
            continue
        if a.dtype == b.dtype and np.array_equal(a, b):
            continue
        if key == "f":
            rows = int((a != b).any(axis=1).sum())
            same_set = {tuple(sorted(t)) for t in a.tolist()} == {
                tuple(sorted(t)) for t in b.tolist()
            }
            kind = "the same triangles re-ordered" if same_set else "different triangles"
            out.append(f"f: {rows} of {len(b)} faces differ ({kind})")
            continue
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        count = int((diff > 0).sum())
        if count == 0:
            out.append(f"{key} dtype {a.dtype} (shipped {b.dtype})")
        elif key in ("v_template", "J_rest"):
            out.append(f"{key}: {count} values moved, up to {diff.max() * 1000:.3g} mm")
        else:
            out.append(f"{key}: {count} of {diff.size} values differ, up to {diff.max():.3g}")
    return out


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_ARGUMENT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output .npz path (default ./{DEFAULT_OUT})")  # fmt: skip
    parser.add_argument(
        "--export-pkl",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write DIR/SMPL_NEUTRAL.pkl",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of meshing retries")
    args = parser.parse_args(argv)
    replaces_shipped = _same_file(args.out, SHIPPED)
    try:  # before the ~30 s build
        if args.out.is_dir():
            raise BadArgument(f"--out {args.out}: is a folder; give a .npz file path")
        if args.out.suffix != ".npz":
            raise BadArgument(f"--out {args.out}: must end in .npz")
        check_writable_folder(args.out.parent, "--out folder")
        if args.export_pkl is not None:
            check_writable_folder(args.export_pkl, "--export-pkl")
        if args.seed < 0:
            raise BadArgument(f"--seed {args.seed}: must be >= 0")
    except BadArgument as exc:
        return _error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    arrays = to_storage(build_license_free_body(seed=args.seed))
    build_s = time.perf_counter() - t0
    differences = describe_differences(arrays, load_arrays(SHIPPED)) if SHIPPED.is_file() else []
    verts = arrays["v_template"]
    summary = f"V={len(verts)} F={len(arrays['f'])} height={verts[:, 1].max() - SOLE_Y:.3f} m " \
              f"build={build_s:.1f} s"  # fmt: skip
    if replaces_shipped:
        if differences:
            return _error(
                f"--out {args.out} is the shipped body and the rebuild differs from it "
                f"({'; '.join(differences)}): not overwritten (the shipped checkpoints were "
                "made with it); write the rebuild elsewhere with --out"
            )
        print(f"{summary}: identical to the shipped body {SHIPPED}; nothing written")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(args.out, arrays, compressed=True)
        print(f"{summary} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
        if differences:
            print(f"differs from the shipped body {SHIPPED}: {'; '.join(differences)}")
        else:
            print(f"identical to the shipped body {SHIPPED}")
    if args.export_pkl is not None:
        args.export_pkl.mkdir(parents=True, exist_ok=True)
        with open(args.export_pkl / "SMPL_NEUTRAL.pkl", "wb") as fh:
            pickle.dump(smpl_pickle_dict(arrays), fh, protocol=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
