#!/usr/bin/env python
"""How SA-HMR's mesh tokens attend to the scene-contact tokens, on frames of a generated split.

Example:
    python tools/attention_report.py --data-root /data/synth --split test --frames 80 \
        --out outputs/attention
    # another checkpoint, the left ankle's attention in the picture
    python tools/attention_report.py --checkpoint run/checkpoints/best.pt \
        --data-root /data/synth --token left_ankle --out outputs/attention

Runs the SA-HMR model (default: the shipped checkpoint) as ``predict`` does (RCNet's root and
contacts; eval mode, no gradients) with ``return_attention=True`` on the first ``--frames``
frames of the split, and reports per encoder block the mesh <- scene cross-attention of its
last layer (head-averaged) for the 14 joint and the coarse-vertex query tokens (the image-grid
tokens have no position and are left out), over all frames and apart for frames with fewer
than ``--min-contacts`` contact tokens (`sahmr.evaluation.attention`):

* ``entropy``: normalised entropy of each row over the valid scene tokens (null token
  included, padding masked; 1 = uniform);
* ``top_mass``: the mass on the top ``--fraction`` of those tokens (``top_mass_if_uniform``
  for comparison);
* ``keyless_mass``: the mass on the null token (the one scene token without a position);
* ``spearman_predicted`` / ``spearman_ground_truth``: per query token, the Spearman correlation
  between its weights over the contact tokens and the negative distance from the token's
  position (regressed by the mesh network, or the ground-truth joint / coarse vertex) to each
  contact point; > 0 when nearer contacts get more attention;
* ``nearest_mass_*``: the share of the contact-token mass on the ``--fraction`` nearest
  contacts (``nearest_mass_if_uniform`` for comparison);
* ``log_linear_r2``: the share of the variance of a token's log-weights over the contact
  tokens explained by a linear function of the contact position (1: a ramp along one
  direction in space rather than a focus on some contacts).

Writes ``attention.json`` and ``attention.png`` (per block: histogram of the normalised
entropies; one example frame's crop with its contact points coloured by the attention of
``--token``) to ``--out``. Exit codes: 0 done, 2 bad arguments (nothing written).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sahmr.body.constants import H36M_JOINT_NAMES, H36M_TO_J14

logger = logging.getLogger("attention_report")

J14_NAMES: tuple[str, ...] = tuple(H36M_JOINT_NAMES[i] for i in H36M_TO_J14)
"""Names of SA-HMR's 14 joint query tokens (LSP order, the body's J14 regressor rows)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="SA-HMR checkpoint (default: the shipped sahmr/checkpoints/sahmr_small.pt)",
    )
    p.add_argument("--data-root", required=True, type=Path, help="dataset of make_dataset.py")
    p.add_argument("--split", default="test", help="split of --data-root (default: test)")
    p.add_argument("--frames", default=None, help="first N frames of the split (default: all)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--min-contacts",
        default="10",
        help="frames with fewer contact tokens are reported apart (default: 10)",
    )
    p.add_argument(
        "--fraction",
        default="0.1",
        help="share of the scene tokens counted as top / nearest (default: 0.1)",
    )
    p.add_argument(
        "--token",
        default="right_ankle",
        choices=J14_NAMES,
        help="joint token whose attention the picture shows (default: right_ankle)",
    )
    p.add_argument(
        "--example-frame",
        default=None,
        help="index (among the frames read) of the pictured frame (default: the first with "
        "at least --min-contacts contacts)",
    )
    p.add_argument("--batch-size", default="4", help="frames per forward pass (default: 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument(
        "--allow-missing-shards", action="store_true", help="read a split with shards missing"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclass(frozen=True)
class Settings:
    """The checked arguments."""

    checkpoint: Path
    data_root: Path
    split: str
    frames: int | None
    out: Path
    min_contacts: int
    fraction: float
    token: str
    example_frame: int | None
    batch_size: int
    device: torch.device
    progress: bool


def check_args(args: argparse.Namespace) -> Settings:
    """Check every argument before slow work: one line on stderr and exit 2 on a bad one."""
    from sahmr.cli.checks import (
        BadArgument,
        check_checkpoint,
        check_complete_split,
        check_dataset_split,
        check_device,
        check_float,
        check_int,
        check_writable_folder,
        fail,
    )
    from sahmr.inference.errors import CheckpointError
    from sahmr.inference.method import bundled_checkpoint

    try:
        ckpt = args.checkpoint
        if ckpt is None:
            try:
                ckpt = bundled_checkpoint("sahmr")
            except CheckpointError as exc:
                raise BadArgument(str(exc)) from None
        check_checkpoint(ckpt, "--checkpoint")
        check_sahmr_checkpoint(Path(ckpt))
        meta = check_dataset_split(args.data_root, "--data-root", args.split, "--split")
        if not args.allow_missing_shards:
            check_complete_split(
                args.data_root, meta, args.split, "--data-root", "--allow-missing-shards"
            )
        fraction = check_float(args.fraction, "--fraction")
        if fraction > 1.0:
            raise BadArgument(f"--fraction={fraction:g}: must be <= 1")
        settings = Settings(
            checkpoint=Path(ckpt),
            data_root=args.data_root,
            split=str(args.split),
            frames=check_int(args.frames, "--frames", allow_none=True),
            out=check_writable_folder(args.out, "--out"),
            min_contacts=check_int(args.min_contacts, "--min-contacts"),
            fraction=fraction,
            token=args.token,
            example_frame=check_int(
                args.example_frame, "--example-frame", minimum=0, allow_none=True
            ),
            batch_size=check_int(args.batch_size, "--batch-size"),
            device=check_device(args.device, "--device"),
            progress=not args.no_progress,
        )
    except BadArgument as exc:
        fail(exc)
    return settings


def check_sahmr_checkpoint(path: Path) -> None:
    """Refuse a checkpoint (already checked loadable) whose model is not SA-HMR with an RCNet.

    Raises:
        BadArgument: Naming the model class found.
    """
    from hydra.utils import get_class

    from sahmr.cli.checks import BadArgument
    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint
    from sahmr.models.sahmr import SAHMR

    model = checkpoint_config(load_checkpoint(path), path).get("model")
    target = None if model is None else model.get("_target_")
    cls = None if target is None else get_class(str(target))
    if cls is None or not issubclass(cls, SAHMR) or model.get("rcnet") is None:
        what = "no model" if cls is None else f"a {cls.__name__} model"
        what += "" if cls is None or not issubclass(cls, SAHMR) else " without an RCNet"
        raise BadArgument(
            f"--checkpoint {path}: {what}, not SA-HMR with an RCNet (no scene-contact attention)"
        )


@dataclass
class Example:
    """What the picture shows of one frame."""

    name: str
    crop: np.ndarray  # (S, S, 3) uint8
    points_uv: np.ndarray  # (P, 2) crop pixels of its contact points
    weights: list[np.ndarray]  # per block (P,) the token's weights over them
    token_uv: np.ndarray  # (2,) crop pixel of the token's regressed position
    contacts: int


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixels of intrinsics K (points behind: NaN)."""
    p = np.asarray(points_cam, np.float64).reshape(-1, 3)
    z = p[:, 2:3]
    uvw = p @ np.asarray(K, np.float64).T
    return np.where(z > 1e-6, uvw[:, :2] / np.where(z > 1e-6, z, 1.0), np.nan)


def run(s: Settings) -> dict[str, Any]:
    """Run the model over the frames; write attention.json / attention.png; return the report."""
    from hydra.utils import instantiate
    from tqdm import tqdm

    from sahmr.atomic_write import atomic_write_bytes
    from sahmr.cli.checks import fail
    from sahmr.data.smplx_targets import BodyMismatchError, check_body_hash
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_checkpoint, load_method
    from sahmr.engine.data import checkpoint_steps
    from sahmr.engine.validation import write_json_atomic
    from sahmr.evaluation.attention import CrossAttentionReport, frame_rows
    from sahmr.models.sahmr import SAHMR
    from sahmr.records import frame_name
    from sahmr.viz.attention import cross_attention_figure
    from sahmr.viz.summaries import denormalize_images

    method, cfg = load_method(s.checkpoint, s.device)
    if not isinstance(method, SAHMR) or method.rcnet is None:
        fail(
            f"--checkpoint {s.checkpoint}: a {type(method).__name__} model, not SA-HMR with an "
            "RCNet: it has no scene-contact attention"
        )
    body = instantiate(cfg.body)
    frames = SyntheticDataset(s.data_root, s.split)
    try:
        check_body_hash(frames, body.content_hash, what=f"{s.checkpoint}'s body")
    except BodyMismatchError as exc:
        fail(f"--data-root: {exc}")
    n = len(frames) if s.frames is None else min(s.frames, len(frames))
    if s.frames is not None and s.frames > len(frames):
        logger.warning(
            "--frames %d: split %s has %d frames; using them all", s.frames, s.split, len(frames)
        )
    if n == 0:
        fail(f"--split {s.split}: no frames in {s.data_root}")
    if s.example_frame is not None and s.example_frame >= n:
        fail(f"--example-frame {s.example_frame}: only {n} frames are read")
    steps = checkpoint_steps(frames, range(n), cfg, body.topology, s.device,
                             batch_size=s.batch_size, progress=False)  # fmt: skip
    net = method.mesh_net
    nj, nq = net.num_joints, net.num_queries
    token = J14_NAMES.index(s.token)
    report = CrossAttentionReport(min_keys=s.min_contacts)
    example: Example | None = None
    start = time.perf_counter()
    index = 0
    with tqdm(total=n, desc="attention", unit="frame", disable=not s.progress) as bar:
        for step in steps:
            with torch.no_grad():
                out = method(step.inputs, return_attention=True)
            tg = step.frame_targets
            bidx = out.contact_batch_idx.cpu().numpy()
            points = out.contact_points_cam.float().cpu().numpy()
            root = out.root_cam.float().cpu().numpy()
            pred = torch.cat([out.joints14_rel, out.verts_rel_levels[0]], dim=1).float()
            pred = pred.cpu().numpy() + root[:, None]
            gt = torch.cat([tg.joints14_cam, tg.verts_cam_levels[-1]], dim=1).float().cpu().numpy()
            cross = [a.cross[:, :nq].float().cpu().numpy() for a in out.attention]
            crops = None
            for b in range(len(root)):
                mine = points[bidx == b]  # packed order = the frame's scene-token order
                keys = cross[0].shape[2]
                key_xyz = np.full((keys, 3), np.nan)
                key_xyz[1 : 1 + len(mine)] = mine  # column 0: the null token
                valid = np.arange(keys) < 1 + len(mine)
                positions = {"predicted": pred[b], "ground_truth": gt[b]}
                rows = [
                    frame_rows(c[b], valid, key_xyz, positions, fraction=s.fraction) for c in cross
                ]
                name = frame_name(s.split, index)
                report.add(name, rows)
                if s.example_frame is not None:
                    wanted = index == s.example_frame
                else:  # the first frame with enough contacts, else the one with the most
                    wanted = example is None or (
                        example.contacts < s.min_contacts and len(mine) > example.contacts
                    )
                if wanted:
                    if crops is None:
                        crops = denormalize_images(step.inputs.image)
                    K = step.inputs.K_crop[b].float().cpu().numpy()
                    example = Example(
                        name=name,
                        crop=crops[b],
                        points_uv=project(mine, K),
                        weights=[c[b, token, 1 : 1 + len(mine)] for c in cross],
                        token_uv=project(pred[b, token], K)[0],
                        contacts=len(mine),
                    )
                index += 1
                bar.update(1)
    seconds = time.perf_counter() - start
    result = report.to_dict()
    stored = load_checkpoint(s.checkpoint)
    result = {
        "checkpoint": str(s.checkpoint),
        "checkpoint_step": stored.get("step"),
        "data_root": str(s.data_root),
        "split": s.split,
        "device": str(s.device),
        "seconds": round(seconds, 1),
        "query_tokens": f"{nj} joint + {nq - nj} coarse-vertex query tokens per frame "
        f"(the {net.num_grid} image-grid tokens are left out)",
        "keys": "scene tokens: the null token, then the frame's contact points (RCNet's, at "
        f"most {net.max_contacts}); padding masked",
        "attention": "mesh <- scene cross-attention of the last layer of each encoder block, "
        "head-averaged",
        "fraction": s.fraction,
        "min_contacts": s.min_contacts,
        **result,
    }
    if example is not None:
        result["example"] = {
            "frame": example.name,
            "token": s.token,
            "contacts": example.contacts,
            "min_over_uniform": [
                float(w.min() * len(w)) if len(w) else math.nan for w in example.weights
            ],
            "max_over_uniform": [
                float(w.max() * len(w)) if len(w) else math.nan for w in example.weights
            ],
        }
    s.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, s.out / "attention.json")
    few = [report.entropies(k, few=True) for k in range(report.num_blocks)]
    blank = np.full((net.image_size, net.image_size, 3), 255, np.uint8)
    image = cross_attention_figure(
        [report.entropies(k) for k in range(report.num_blocks)],
        crop=blank if example is None else example.crop,
        points_uv=np.zeros((0, 2)) if example is None else example.points_uv,
        point_weights=[np.zeros(0)] * report.num_blocks if example is None else example.weights,
        few_entropies=few,
        query_uv=None if example is None else example.token_uv,
        query_name=s.token,
        example_name="" if example is None else f"{example.name}",
        few_label=f"frames < {s.min_contacts} contacts",
    )
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(s.out / "attention.png", buf.getvalue())
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A few printable lines per block."""
    lines = [
        f"{result['frames']} frames, contacts per frame: mean "
        f"{result['positioned_keys_per_frame']['mean']:.0f}, "
        f"{len(result['few_key_frames'])} with < {result['min_contacts']}"
    ]
    for blk in result["blocks"]:
        a = blk["all"]

        def m(key: str, group: dict = a) -> str:
            v = group[key]["mean"] if isinstance(group[key], dict) else group[key]
            return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"

        lines.append(
            f"block {blk['block']}: entropy {m('entropy')} (p5 {a['entropy']['p5']:.3f}), "
            f"top {result['fraction']:.0%} mass {m('top_mass')} (uniform "
            f"{m('top_mass_if_uniform')}), null {m('keyless_mass')}, spearman pred "
            f"{m('spearman_predicted')} / gt {m('spearman_ground_truth')}, nearest mass pred "
            f"{m('nearest_mass_predicted')} / gt {m('nearest_mass_ground_truth')} (uniform "
            f"{m('nearest_mass_if_uniform')}), log-linear R2 {m('log_linear_r2')}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = check_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(settings)
    for line in summary_lines(result):
        print(line)
    print(f"report in {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
