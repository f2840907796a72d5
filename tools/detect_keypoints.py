#!/usr/bin/env python
"""Detector keypoints for a generated dataset split, saved as a small .npz the fit can read.

Runs mediapipe's shipped pose model (`sahmr.detect`) on every selected frame, on the stored
224 px crop (``--image crop``, default) or on the stored full frame (``--image frame``, when
the dataset was generated with ``full_frame_scale > 0``; it also scores the person box),
maps the 33 landmarks to SMPL's 24 and LSP's 14 joints with confidences, and writes them in
crop pixels, the pixels of the fit's crop camera. Run it on a CPU machine and carry the file
to the GPU machine (no mediapipe there): ``tools/fit.py --keypoints detector
--keypoints-file FILE``.

Examples:
    python tools/detect_keypoints.py --dataset data/synth --split test --out kp_test.npz
    python tools/detect_keypoints.py --dataset data/synth --split test --image frame \\
        --out kp_test_frame.npz --report docs/results/detector_test.json
    python tools/detect_keypoints.py --dataset data/synth --split train --fit-offsets

Output .npz: ``names`` (N,) "<split>-<index:06d>", ``found`` (N,) bool, ``landmarks``
(N, 33, 4) in pixels of the image used (NaN where nobody was found), ``joints_smpl24`` (N, 24,
2) / ``joints_lsp14`` (N, 14, 2) crop pixels, ``confidence_smpl24`` / ``confidence_lsp14``
(zeros where nobody was found), ``bbox`` (N, 4) the detected box in full-frame pixels (NaN
for crops), ``image``, ``split``, ``mediapipe``. Exit codes: 0 done, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("detect_keypoints")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path, help="dataset of tools/make_dataset.py")
    p.add_argument("--split", default="test", help="split (default test)")
    p.add_argument("--out", type=Path, default=None, help="keypoints .npz to write")
    p.add_argument("--image", choices=("crop", "frame"), default="crop",
                   help="run on the stored crop or the stored full frame")
    p.add_argument("--max-frames", type=int, default=None, help="evenly spaced subset of frames")
    p.add_argument("--chunk", type=int, default=32, help="images per detector process")
    p.add_argument("--tile-grid", type=int, default=None,
                   help="--image frame: tiles searched for small people (default "
                        "sahmr.detect.people.TILE_GRID; 0 none)")
    p.add_argument("--report", type=Path, default=None,
                   help="write the detector's scores against the ground truth (JSON)")
    p.add_argument("--fit-offsets", action="store_true",
                   help="print the least-squares joint offsets and box margins (calibration)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--allow-missing-shards", action="store_true",
                   help="read a split some of whose shards are missing (frame names then "
                        "differ from the complete dataset's)")
    return p


def frame_indices(n_total: int, max_frames: int | None) -> list[int]:
    """Evenly spaced indices, the same subset `tools/fit.py --max-frames` picks."""
    n = n_total if max_frames is None else min(max_frames, n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(int)).tolist()


def _ground_truth(sample, j14: np.ndarray) -> dict[str, np.ndarray]:
    """Projected ground-truth joints (crop pixels) and the box, both frames."""
    import torch

    from sahmr.geometry.cameras import project

    def project_np(K: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return project(torch.as_tensor(K), torch.as_tensor(pts)).numpy()

    T = np.asarray(sample.T_w2c, np.float64)
    K_crop = np.asarray(sample.extra["K_crop"], np.float64)
    cam = lambda p: p @ T[:3, :3].T + T[:3, 3]  # noqa: E731
    joints_cam = cam(np.asarray(sample.joints_world, np.float64))
    lsp_cam = j14 @ cam(np.asarray(sample.vertices_world, np.float64))
    A = K_crop @ np.linalg.inv(np.asarray(sample.K, np.float64))
    box = np.asarray(sample.bbox, np.float64)
    corners = np.c_[box.reshape(2, 2), np.ones(2)] @ A.T
    return {"smpl24": project_np(K_crop, joints_cam), "lsp14": project_np(K_crop, lsp_cam),
            "bbox_frame": box, "bbox_crop": corners[:, :2].reshape(4), "frame_to_crop": A}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sahmr.cli.checks import (
        BadArgument,
        check_complete_split,
        check_dataset_split,
        check_int,
        check_writable_folder,
    )

    if not (args.dataset / "dataset.json").is_file():
        parser.error(f"--dataset {args.dataset}: no dataset.json")
    if args.out is None and args.report is None and not args.fit_offsets:
        parser.error("nothing to do: give --out, --report or --fit-offsets")
    if args.out is not None and args.out.suffix != ".npz":
        parser.error(f"--out {args.out}: must end in .npz")
    if args.chunk <= 0 or (args.max_frames is not None and args.max_frames <= 0):
        parser.error("--chunk and --max-frames must be positive")
    try:  # keypoints are named by frame index: a missing shard would renumber them
        check_int(args.tile_grid, "--tile-grid", minimum=0, allow_none=True)
        meta = check_dataset_split(args.dataset, "--dataset", args.split, "--split")
        if not args.allow_missing_shards:
            check_complete_split(args.dataset, meta, args.split, "--dataset",
                                 "--allow-missing-shards")  # fmt: skip
        for flag, path in (("--out", args.out), ("--report", args.report)):
            if path is not None:
                if path.is_dir():
                    raise BadArgument(f"{flag} {path}: is a folder, expected a file")
                check_writable_folder(path.parent, flag)
    except BadArgument as exc:
        parser.error(str(exc))
    from sahmr.detect.runtime import default_site, detector_available

    if not detector_available():
        parser.error(f"the person detector is not installed in {default_site()} "
                     "(bash tools/install.sh installs it)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    from sahmr.atomic_write import atomic_save_npz
    from sahmr.body import BodyModel
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.detect.keypoints import (
        JOINT_NAMES,
        box_from_landmarks,
        fit_offsets,
        symmetrise_offsets,
    )
    from sahmr.detect.metrics import box_iou, box_size, joint_errors, summarise
    from sahmr.detect.people import people_from_landmarks
    from sahmr.detect.runtime import MEDIAPIPE_VERSION, run_pose
    from sahmr.records import frame_name

    frame_mode = args.image == "frame"
    if args.tile_grid is None:
        from sahmr.detect.people import TILE_GRID

        args.tile_grid = TILE_GRID
    dataset = SyntheticDataset(args.dataset, args.split, load_image=frame_mode)
    if len(dataset) == 0:
        parser.error(f"--dataset {args.dataset}: split {args.split!r} has no frames")
    if frame_mode and dataset[0].image is None and "image_small" not in dataset[0].extra:
        parser.error(f"--image frame: {args.dataset} stores no full frames "
                     "(generate with full_frame_scale > 0)")
    indices = frame_indices(len(dataset), args.max_frames)
    j14 = np.asarray(BodyModel().topology.j_regressor_j14, np.float64)

    N = len(indices)
    found = np.zeros(N, bool)
    landmarks = np.full((N, 33, 4), np.nan, np.float32)
    joints = {s: np.full((N, len(n), 2), np.nan, np.float32) for s, n in JOINT_NAMES.items()}
    conf = {s: np.zeros((N, len(n)), np.float32) for s, n in JOINT_NAMES.items()}
    bbox = np.full((N, 4), np.nan, np.float32)
    gt = {s: np.zeros((N, len(n), 2)) for s, n in JOINT_NAMES.items()}
    gt_box_crop = np.zeros((N, 4))
    gt_box_frame = np.zeros((N, 4))
    lm_crop = np.full((N, 33, 4), np.nan)  # landmarks in crop pixels (calibration, scores)
    iou = np.full(N, np.nan)
    others = np.zeros(N, np.int64)  # people found that are not the ground truth's
    bar = tqdm(total=N, desc="detect", unit="frame", disable=args.no_progress)
    for c0 in range(0, N, args.chunk):
        rows = list(range(c0, min(N, c0 + args.chunk)))
        samples = [dataset[indices[r]] for r in rows]
        images, scales = [], []
        for s in samples:
            if not frame_mode:
                images.append(np.asarray(s.crop, np.uint8))
                scales.append(1.0)
            elif s.image is not None:
                images.append(np.asarray(s.image, np.uint8))
                scales.append(1.0)
            else:
                images.append(np.asarray(s.extra["image_small"], np.uint8))
                scales.append(float(s.extra["image_scale"]))
        res = run_pose(images, max_people=4 if frame_mode else 1,
                       tile_grid=args.tile_grid if frame_mode else 0)
        for k, (r, s) in enumerate(zip(rows, samples)):
            g = _ground_truth(s, j14)
            for name in JOINT_NAMES:
                gt[name][r] = g[name]
            gt_box_crop[r], gt_box_frame[r] = g["bbox_crop"], g["bbox_frame"]
            cand = res.for_image(k).astype(np.float64)
            if len(cand) == 0:
                continue
            cand[..., :3] /= scales[k]  # stored-frame pixels -> full-resolution pixels
            if frame_mode:  # the person the ground truth is: largest IoU with its box
                boxes = box_from_landmarks(cand)
                ious = box_iou(boxes, g["bbox_frame"][None])
                best = int(np.argmax(ious))
                others[r] = int((ious < 0.5).sum()) - int(ious[best] < 0.5)
                iou[r] = float(ious[best])
                lm = cand[best]
                bbox[r] = boxes[best]
                A = g["frame_to_crop"]
                lm_c = lm.copy()
                lm_c[:, :2] = (np.c_[lm[:, :2], np.ones(33)] @ A.T)[:, :2]
            else:
                lm = lm_c = cand[0]
            found[r] = True
            landmarks[r] = lm
            lm_crop[r] = lm_c
            person = people_from_landmarks(lm_c[None], (224, 224))[0]
            joints["smpl24"][r], conf["smpl24"][r] = person.joints_smpl24, person.confidence_smpl24
            joints["lsp14"][r], conf["lsp14"][r] = person.joints_lsp14, person.confidence_lsp14
        bar.update(len(rows))
    bar.close()

    names = np.asarray([frame_name(args.split, i) for i in indices])
    print(f"{args.split}: a person found in {found.sum()} of {N} {args.image}s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(args.out, dict(
            names=names, found=found, landmarks=landmarks, bbox=bbox,
            joints_smpl24=joints["smpl24"], confidence_smpl24=conf["smpl24"],
            joints_lsp14=joints["lsp14"], confidence_lsp14=conf["lsp14"],
            image=np.asarray(args.image), split=np.asarray(args.split),
            mediapipe=np.asarray(MEDIAPIPE_VERSION)), compressed=True)
        print(f"wrote {args.out}")
    sizes = box_size(gt_box_crop)
    if args.report is not None:
        report: dict = {"dataset": str(args.dataset), "split": args.split, "image": args.image,
                        "frames": N, "mediapipe": MEDIAPIPE_VERSION,
                        "errors_in": "crop pixels (224 px crop of the 1.2x square box)",
                        "sets": {}}
        for name, jn in JOINT_NAMES.items():
            err = joint_errors(joints[name], gt[name])
            report["sets"][name] = summarise(err, sizes, found, jn)
            raw = joint_errors(np.einsum("jk,nkc->njc", _base(name), np.nan_to_num(
                lm_crop[..., :2])), gt[name])
            report["sets"][name]["without_offsets"] = summarise(raw, sizes, found, jn)
        if frame_mode:
            ok = found & (np.nan_to_num(iou) >= 0.5)
            report["box"] = {"iou_mean": float(np.nanmean(iou)) if found.any() else None,
                             "iou_median": float(np.nanmedian(iou)) if found.any() else None,
                             "detection_rate_iou_0.5": float(ok.mean()),
                             "tile_grid": args.tile_grid,
                             "other_people_per_frame": float(others.mean())}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1), encoding="utf-8")
        for name in JOINT_NAMES:
            s = report["sets"][name]
            if "pck" in s:
                print(f"{name}: detection rate {s['detection_rate']:.3f}, mean error "
                      f"{s['mean_px']:.2f} px (crop), PCK@0.1 {s['pck']:.3f}")
        print(f"wrote {args.report}")
    if args.fit_offsets and found.any():
        w_ok = found.copy()
        out: dict = {}
        for name in JOINT_NAMES:
            # Frames where the detector is roughly right (PCK of the base mapping >= 0.8).
            raw = joint_errors(np.einsum("jk,nkc->njc", _base(name), np.nan_to_num(
                lm_crop[..., :2])), gt[name])
            # and, per joint, its inliers (base mapping within 0.1 of the box size).
            good = w_ok & ((raw < 0.1 * sizes[:, None]).mean(1) >= 0.8)
            inlier = (raw < 0.1 * sizes[:, None])[good]
            fitted = fit_offsets(lm_crop[good], gt[name][good], name, weights=inlier)
            out[name] = {j: [round(a, 3), round(b, 3)] for j, (a, b) in fitted.items()}
            out[f"{name}_symmetric"] = {j: [round(a, 2), round(b, 2)] for j, (a, b) in
                                        symmetrise_offsets(fitted).items()}
            out[f"{name}_frames"] = int(good.sum())
        lm = lm_crop[found]
        lo, hi = lm[..., :2].min(1), lm[..., :2].max(1)
        ext = hi - lo
        gb = gt_box_crop[found]
        margins = np.stack([(lo[:, 0] - gb[:, 0]) / ext[:, 0], (lo[:, 1] - gb[:, 1]) / ext[:, 1],
                            (gb[:, 2] - hi[:, 0]) / ext[:, 0], (gb[:, 3] - hi[:, 1]) / ext[:, 1]],
                           1)
        out["box_margins_median"] = np.round(np.median(margins, 0), 3).tolist()
        print(json.dumps(out, indent=1))
    return 0


def _base(joint_set: str) -> np.ndarray:
    from sahmr.detect.keypoints import base_matrix

    return base_matrix(joint_set)


if __name__ == "__main__":
    sys.exit(main())
