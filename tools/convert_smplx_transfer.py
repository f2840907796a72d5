"""Convert the SMPL-X -> SMPL(-H) deformation-transfer setup to a plain sparse .npz, once.

    python tools/convert_smplx_transfer.py smplx2smplh_deftrafo_setup.pkl smplx2smpl.npz \
        --allow-pickle

The pickle is read with sahmr's restricted unpickler (arrays, scipy sparse matrices and
builtin containers only); the output is a ``scipy.sparse.save_npz`` file that loads without
pickle (``data.smplx_transfer=...`` in configs/data/rich.yaml / prox.yaml, or
``tools/score_predictions.py --gt-vertex-map``). Columns past the 10,475 SMPL-X vertices are
dropped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sahmr.body.smplx_to_smpl import NUM_SMPLX_VERTICES, load_vertex_map, save_vertex_map
from sahmr.cli.checks import BadArgument, check_output_file, read_input


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input .pkl (needs --allow-pickle) or .npz transfer matrix")
    parser.add_argument("dst", help="output .npz")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow reading a pickle (restricted)"
    )
    parser.add_argument(
        "--num-source-vertices",
        type=int,
        default=NUM_SMPLX_VERTICES,
        help="keep this many source columns (SMPL-X: 10475)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dst = Path(args.dst)
    if dst.suffix.lower() != ".npz":
        print(f"error: {dst}: the output must end in .npz", file=sys.stderr)
        return 2
    try:
        check_output_file(dst)
        matrix = read_input(load_vertex_map, args.src, allow_pickle=args.allow_pickle)
    except BadArgument as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if matrix.shape[1] < args.num_source_vertices:
        print(
            f"error: {args.src}: the matrix has {matrix.shape[1]} columns, fewer than "
            f"--num-source-vertices {args.num_source_vertices}",
            file=sys.stderr,
        )
        return 2
    path = save_vertex_map(matrix[:, : args.num_source_vertices], dst)
    print(f"wrote {path}: {matrix.shape[0]} x {args.num_source_vertices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
