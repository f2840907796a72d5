"""Convert an SMPL-format pickle (e.g. the official SMPL_NEUTRAL.pkl) to a plain .npz.

    python tools/convert_smpl.py SMPL_NEUTRAL.pkl out.npz --allow-pickle

The pickle is read with sahmr's restricted unpickler (arrays, sparse matrices and chumpy
values only); the .npz loads without pickle and works as ``BodyModel(model_path=out.npz)``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sahmr.body.io import load_body_model_data, save_body_model_npz
from sahmr.cli.checks import BadArgument, check_output_file, read_input


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input .pkl (or .npz) SMPL-format model")
    parser.add_argument("dst", help="output .npz")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow reading a pickle (restricted)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_file(args.dst)
        data = read_input(load_body_model_data, args.src, allow_pickle=args.allow_pickle)
    except BadArgument as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = save_body_model_npz(data, args.dst)
    print(f"wrote {path}: V={data['v_template'].shape[0]}, keys={sorted(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
