"""Convert an SMPL-format pickle (e.g. the official SMPL_NEUTRAL.pkl) to a plain .npz.

    python tools/convert_smpl.py SMPL_NEUTRAL.pkl out.npz --allow-pickle

The pickle is read with sahmr's restricted unpickler (arrays, sparse matrices and chumpy
values only); the .npz loads without pickle and works as ``BodyModel(model_path=out.npz)``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import zipfile
from pathlib import Path

from sahmr.body.io import load_body_model_data, save_body_model_npz
from sahmr.cli.checks import BadArgument, check_writable_folder, one_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input .pkl (or .npz) SMPL-format model")
    parser.add_argument("dst", help="output .npz")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="allow reading a pickle (restricted)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dst = Path(args.dst)
    if dst.exists() and not dst.is_file():
        print(f"error: {dst}: exists and is not a file", file=sys.stderr)
        return 2
    try:
        check_writable_folder(dst.parent, "output folder of")
    except BadArgument as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        data = load_body_model_data(args.src, allow_pickle=args.allow_pickle)
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile) as err:  # fmt: skip
        text = one_line(err)
        if args.src not in text:
            text = f"{args.src}: {text}"
        print(f"error: {text}", file=sys.stderr)
        return 2
    path = save_body_model_npz(data, args.dst)
    print(f"wrote {path}: V={data['v_template'].shape[0]}, keys={sorted(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
