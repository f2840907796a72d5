#!/usr/bin/env python
"""Score predicted bodies against ground truth and a scene.

Example:
    python tools/score_predictions.py --pred runs/x/pred --gt data/split/gt \
        --scene scenes/room.ply --out runs/x/eval
    # a demo output folder (one sub-folder per frame) against the bundled ground truth
    python tools/score_predictions.py --pred outputs/demo --gt scenes/living_room/demo \
        --scene scenes/living_room/mesh.ply --out outputs/demo_eval
    # the official SA-HMR definitions, SMPL-X ground truth mapped to SMPL
    python tools/score_predictions.py --protocol sahmr --gt-vertex-map smplx2smpl.npz ...

Definitions of every metric, its unit and the official counterpart: docs/evaluation.md.

Writes ``metrics.json``, ``per_frame.csv`` and PNG plots to ``--out`` and prints a summary.
Exit codes: 0 all frames scored, 1 some predictions missing or malformed (the rest are still
scored and reported), 2 bad arguments (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import zipfile
from pathlib import Path

from sahmr.evaluation.evaluator import JOINT_SETS, PROTOCOLS, Evaluator, SceneSDFs
from sahmr.evaluation.readers import FolderReader, SyntheticSplitReader
from sahmr.evaluation.reports import summary_table, write_reports
from sahmr.scene.contact import CONTACT_THRESHOLD_M
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--pred",
        required=True,
        type=Path,
        help="folder of predicted .ply/.obj/.npz, or of per-frame sub-folders (demo output)",
    )
    gt = p.add_mutually_exclusive_group(required=True)
    gt.add_argument(
        "--gt", type=Path, help="folder of ground-truth frames (<name>.npz or <name>.gt.npz)"
    )
    gt.add_argument(
        "--gt-dataset",
        type=Path,
        help="a dataset folder of tools/make_dataset.py; predictions named <split>-<index:06d>",
    )
    p.add_argument("--split", default="test", help="split of --gt-dataset (default: test)")
    scene = p.add_mutually_exclusive_group()
    scene.add_argument("--scene", type=Path, help="one scene mesh for every frame")
    scene.add_argument("--scene-dir", type=Path, help="folder resolving per-frame 'scene' names")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--body-model",
        type=Path,
        default=None,
        help="SMPL-format model file (default: the license-free body)",
    )
    p.add_argument("--joint-set", choices=sorted(JOINT_SETS), default="smpl24")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="default",
        help="metric definitions: this toolkit's (default) or the official SA-HMR ones "
        "(14 H36M joints, pelvis-aligned MPJPE, PenE/ConFE summed in metres)",
    )
    p.add_argument(
        "--gt-vertex-map",
        type=Path,
        default=None,
        help="(V, V_gt) matrix mapping ground-truth meshes of another topology (SMPL-X) to "
        "the body's: .npz (scipy.sparse.save_npz or a dense array), .pkl with --allow-pickle",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a .pkl --gt-vertex-map with the restricted unpickler",
    )
    p.add_argument(
        "--h36m-regressor",
        type=Path,
        default=None,
        help="(17, V) H36M joint regressor .npy/.npz (e.g. the official "
        "J_regressor_h36m_correct); default: derived from the body",
    )
    p.add_argument(
        "--contact-threshold",
        type=float,
        default=CONTACT_THRESHOLD_M,
        help="metres; a contact-region vertex with |sdf| below it is in contact "
        f"(default {CONTACT_THRESHOLD_M})",
    )
    p.add_argument("--voxel-size", type=float, default=SDF_VOXEL_SIZE_M,
                   help="SDF voxel size, metres")
    p.add_argument("--sdf-cache-dir", type=Path, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--up-axis", default="z", help="gravity-up axis of --scene (z, y, -y...)")
    p.add_argument("--ground", default="auto",
                   help="solid ground under the scans: 'auto' (the height a scan's meta.json "
                        "declares, as generated rooms do; none otherwise), 'none', or a height "
                        "in metres along --up-axis below which every scan is solid (a floor "
                        "scanned as a thin closed slab reads as free space under its middle)")
    p.add_argument("--force", action="store_true",
                   help="score even against a --scene whose normals face away from the room")
    p.add_argument("--allow-missing-shards", action="store_true",
                   help="score a --gt-dataset split some of whose shards are missing (frame "
                        "numbers then differ from the complete dataset's)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad arguments before anything is written (exits with code 2)."""
    for flag, path in (("--pred", args.pred), ("--gt", args.gt), ("--gt-dataset", args.gt_dataset)):
        if path is not None and not path.is_dir():
            parser.error(f"{flag} {path}: not a folder")
    if args.scene is not None and not args.scene.is_file():
        parser.error(f"--scene {args.scene}: no such file")
    if args.scene_dir is not None and not args.scene_dir.is_dir():
        parser.error(f"--scene-dir {args.scene_dir}: not a folder")
    if args.body_model is not None and not args.body_model.is_file():
        parser.error(f"--body-model {args.body_model}: no such file")
    from sahmr.cli.checks import (
        BadArgument,
        check_complete_split,
        check_dataset_split,
        check_writable_folder,
    )

    try:  # before the scoring, not after it
        check_writable_folder(args.out, "--out")
        if args.gt_dataset is not None:
            meta = check_dataset_split(args.gt_dataset, "--gt-dataset", args.split, "--split")
            if not args.allow_missing_shards:
                check_complete_split(args.gt_dataset, meta, args.split, "--gt-dataset",
                                     "--allow-missing-shards")  # fmt: skip
    except BadArgument as exc:
        parser.error(str(exc))
    for flag, value in (("--contact-threshold", args.contact_threshold),
                        ("--voxel-size", args.voxel_size), ("--batch-size", args.batch_size)):
        if not (0 < value < float("inf")):  # also refuses nan
            parser.error(f"{flag} {value}: must be a positive finite number")
    from sahmr.scene.sdf import parse_ground

    try:
        args.ground = parse_ground(args.ground, args.up_axis)  # refuses nan, inf, unknown axes
    except ValueError as exc:
        parser.error(f"--ground {args.ground}: {exc}")
    for flag, path in (
        ("--gt-vertex-map", args.gt_vertex_map),
        ("--h36m-regressor", args.h36m_regressor),
    ):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file")
    if args.h36m_regressor is not None and args.h36m_regressor.suffix.lower() not in (
        ".npy",
        ".npz",
    ):
        parser.error(f"--h36m-regressor {args.h36m_regressor}: must be .npy or .npz")
    if not args.force:
        check_scene_orientation(parser, args.scene, args.scene_dir, args.up_axis)


def check_scene_orientation(
    parser: argparse.ArgumentParser, scene: Path | None, scene_dir: Path | None, up_axis: str
) -> None:
    """Refuse a scan whose normals face away from the room (every vertex would penetrate):
    ``--scene``, or every scan of ``--scene-dir`` (also the dataset's rooms)."""
    from tqdm import tqdm

    from sahmr.cli.checks import BadArgument, check_scan_file, scan_files

    try:
        if scene is not None:
            check_scan_file(scene, "--scene", up_axis, "--force")
        elif scene_dir is not None:
            scans = scan_files(scene_dir)
            for scan in tqdm(scans, desc="scan orientation", unit="scan",
                             disable=len(scans) < 10):  # fmt: skip
                check_scan_file(scan, "--scene-dir", up_axis, "--force")
    except BadArgument as exc:
        parser.error(str(exc))


def _load_regressor(path: Path):
    """A (J, V) array from .npy / .npz (single array or key 'J_regressor'), no pickles."""
    import numpy as np

    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return np.asarray(data, np.float64)
    with data:
        files = data.files
        key = "J_regressor" if "J_regressor" in files else (files[0] if len(files) == 1 else None)
        if key is None:
            raise ValueError(f"needs one array or a 'J_regressor' key; has {sorted(files)}")
        return np.asarray(data[key], np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )

    from sahmr.body import BodyModel
    from sahmr.cli.checks import one_line

    try:  # a refused pickle / malformed file: one line naming it, before any scoring
        body_model = BodyModel(args.body_model)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        parser.error(f"--body-model {args.body_model}: {one_line(exc)}")
    num_vertices = int(body_model.v_template.shape[0])
    vertex_map = h36m = None
    if args.gt_vertex_map is not None:
        from sahmr.evaluation.topology_map import load_vertex_map

        try:
            vertex_map = load_vertex_map(
                args.gt_vertex_map,
                allow_pickle=args.allow_pickle,
                num_target_vertices=num_vertices,
            )
        except (OSError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            parser.error(f"--gt-vertex-map {args.gt_vertex_map}: {one_line(exc)}")
    if args.h36m_regressor is not None:
        try:
            h36m = _load_regressor(args.h36m_regressor)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            parser.error(f"--h36m-regressor {args.h36m_regressor}: {one_line(exc)}")
        if h36m.shape != (17, num_vertices):
            parser.error(
                f"--h36m-regressor {args.h36m_regressor}: shape {h36m.shape}, "
                f"not (17, {num_vertices})"
            )
    if args.gt_dataset is not None:
        try:
            gt = SyntheticSplitReader(args.gt_dataset, args.split)
        except (FileNotFoundError, ValueError, KeyError) as err:
            parser.error(f"--gt-dataset {args.gt_dataset}: {err}")
        if args.scene is None and args.scene_dir is None:
            args.scene_dir = gt.scene_dir()
            if not args.force and args.scene_dir.is_dir():
                check_scene_orientation(parser, None, args.scene_dir, args.up_axis)
    else:
        gt = FolderReader(args.gt)
    if not gt.names():
        parser.error(f"--gt {args.gt or args.gt_dataset}: no frames")
    pred = FolderReader(args.pred)
    if not pred.names():
        parser.error(
            f"--pred {args.pred}: no frames (.ply/.obj/.npz files, or sub-folders holding "
            "body_params.npz / body_world.ply)"
        )
    scenes = None
    if args.scene is not None or args.scene_dir is not None:
        scenes = SceneSDFs(
            args.scene, args.scene_dir, voxel_size=args.voxel_size, cache_dir=args.sdf_cache_dir,
            ground=args.ground,
        )
    else:
        logger.warning("no --scene/--scene-dir: penetration and contact metrics skipped")
    evaluator = Evaluator(
        body_model,
        scenes,
        joint_set=args.joint_set,
        contact_threshold=args.contact_threshold,
        batch_size=args.batch_size,
        protocol=args.protocol,
        gt_vertex_map=vertex_map,
        h36m_regressor=h36m,
    )
    result = evaluator.evaluate(pred, gt, progress=not args.no_progress)
    write_reports(result, args.out)
    print(summary_table(result))
    for name in result.missing:
        print(f"missing prediction: {name}")
    for name, reason in result.failed:
        print(f"failed: {name}: {reason}")
    print(f"reports in {args.out}")
    return 1 if result.missing or result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
