"""Export a training checkpoint for shipping: model weights only, float16 by default.

python tools/export_checkpoint.py outputs/sahmr_small/checkpoints/best.pt sahmr_small.pt \
    --rcnet outputs/rcnet_small/checkpoints/best.pt

Optimizer, scheduler and RNG states are dropped. ``--int8`` stores weight matrices and kernels
as int8 with per-output-channel scales (`sahmr.engine.quantize`; about half the float16 size,
how the shipped checkpoint stays under 20 MB); loading expands them to float32. ``--fp16-under
PATH`` keeps a part in float16 inside such an export (``--int8-under`` a part of that part in
int8 again): a fine-tune at a small LR moves most weights by less than an int8 step, and only
float16 keeps those moves.

``--rcnet`` merges an RCNet checkpoint into an SA-HMR one: its weights go under the ``rcnet.``
prefix (replacing any there) and its model config becomes ``model.rcnet``, so
`sahmr.engine.checkpoint.load_method` builds the whole pipeline. ``--set KEY=VALUE`` changes the
stored config (inference options such as ``model.rcnet.roi_refinements=2``); the section must
exist in the config. Prints the file size in MB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sahmr.engine.checkpoint import (
    FORMAT,
    VERSION,
    apply_settings,
    atomic_torch_save,
    checkpoint_config,
    load_checkpoint,
)
from sahmr.engine.quantize import quantize_state

RCNET_PREFIX = "rcnet."


def export(
    src: Path,
    dst: Path,
    *,
    rcnet: Path | None = None,
    fp16: bool = True,
    int8: bool = False,
    settings: list[str] | None = None,
    precisions: dict[str, str] | None = None,
) -> float:
    """Write the exported checkpoint; returns its size in MB. ``settings``: ``KEY=VALUE``
    changes of the stored config (in an existing section; the value parsed as YAML);
    ``precisions``: with ``int8``, submodule paths kept in float16 or int8
    (`sahmr.engine.quantize.quantize_state`)."""
    ckpt = load_checkpoint(src)
    cfg = checkpoint_config(ckpt, src)
    state = dict(ckpt["model"])
    if rcnet is not None:
        rc = load_checkpoint(rcnet)
        rc_cfg = checkpoint_config(rc, rcnet)
        if "rcnet" not in cfg.model:
            raise ValueError(f"{src}: its model ({OmegaConf.select(cfg, 'model._target_')}) "
                             "takes no rcnet")  # fmt: skip
        wanted = OmegaConf.select(cfg, "model.rcnet._target_")  # None: left to be merged in
        if wanted is not None and OmegaConf.select(rc_cfg, "model._target_") != wanted:
            raise ValueError(f"--rcnet {rcnet}: holds a "
                             f"{OmegaConf.select(rc_cfg, 'model._target_')} model, not {wanted}")
        state = {k: v for k, v in state.items() if not k.startswith(RCNET_PREFIX)}
        state.update({RCNET_PREFIX + k: v for k, v in rc["model"].items()})
        OmegaConf.update(cfg, "model.rcnet", rc_cfg.model, force_add=True)
    apply_settings(cfg, settings or [])
    weights: dict = {"model": state}
    if int8:
        weights = quantize_state(state, precisions=precisions)
    elif fp16:
        weights["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = {
        "format": FORMAT,
        "version": VERSION,
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        **weights,
        "epoch": int(ckpt.get("epoch", 0)),
        "step": int(ckpt.get("step", 0)),
        "metrics": ckpt.get("metrics") or {},
        "exported": {
            "source": str(src),
            "rcnet": str(rcnet or ""),
            "fp16": bool(fp16),
            "int8": bool(int8),
            "precisions": dict(precisions or {}),
            "settings": list(settings or []),
        },
    }
    atomic_torch_save(out, dst)
    return dst.stat().st_size / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("src", type=Path, help="training checkpoint (last.pt / best.pt)")
    p.add_argument("dst", type=Path, help="exported file")
    p.add_argument("--rcnet", type=Path, default=None, help="RCNet checkpoint to merge in")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="change the stored config, e.g. model.rcnet.roi_refinements=2")
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 weight matrices with per-channel scales (shipping size)",
    )
    p.add_argument("--fp16-under", action="append", default=[], metavar="PATH",
                   help="with --int8: keep the weights under this submodule path in float16 "
                   "(what a fine-tune at a small LR moved), e.g. mesh_net")  # fmt: skip
    p.add_argument("--int8-under", action="append", default=[], metavar="PATH",
                   help="with --int8: int8 under this path even inside an --fp16-under one "
                   "(the longest path decides), e.g. mesh_net.encoder")  # fmt: skip
    args = p.parse_args(argv)
    for path in (args.src, args.rcnet):
        if path is not None and not path.is_file():
            what = "a folder, not a checkpoint file" if path.is_dir() else "no such file"
            p.error(f"{path}: {what}")
    if args.fp32 and args.int8:
        p.error("--fp32 and --int8 exclude each other")
    if (args.fp16_under or args.int8_under) and not args.int8:
        p.error("--fp16-under / --int8-under choose precisions inside an --int8 export")
    precisions = {path: "fp16" for path in args.fp16_under}
    precisions.update({path: "int8" for path in args.int8_under})
    for flag, path in (("src", args.src), ("--rcnet", args.rcnet)):
        if path is not None and args.dst.exists() and args.dst.resolve() == path.resolve():
            p.error(f"dst {args.dst} is the {flag} checkpoint: the export would replace it "
                    "(and its optimizer state); write to another file")  # fmt: skip
    from sahmr.cli.checks import BadArgument, check_writable_folder

    try:
        if args.dst.is_dir():
            raise BadArgument(f"dst {args.dst}: is a folder, expected a file")
        check_writable_folder(args.dst.parent, "dst folder")
    except BadArgument as exc:
        p.error(str(exc))
    try:
        mb = export(args.src, args.dst, rcnet=args.rcnet, fp16=not args.fp32, int8=args.int8,
                    settings=args.settings, precisions=precisions)
    except ValueError as err:
        p.error(str(err))
    print(f"wrote {args.dst} ({mb:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
