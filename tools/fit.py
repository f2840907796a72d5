#!/usr/bin/env python
"""The optimisation baseline over a dataset split: PROX-style scene fitting (or plain SMPLify).

Fits every selected frame of a synthetic split to its 2-D keypoints with the known crop camera
and, unless ``--no-scene``, the room's signed distance field (penetration + contact), batched on
the chosen device; writes the predictions, scores them with the shared evaluator and records
iterations and seconds per frame.

Examples:
    python tools/fit.py --dataset data/synth --split val --out runs/prox_val
    python tools/fit.py --dataset data/synth --split val --out runs/smplify_val --no-scene
    python tools/fit.py --dataset data/synth --split test --out runs/hmr_prox \\
        --init-checkpoint runs/hmr/checkpoints/best.pt          # "HMR + scene fitting"
    python tools/fit.py ... stages.3.penetration_weight=3e3 contact_distance=0.08

Keypoints (``--keypoints``): ``gt`` the ground-truth SMPL joints (or ``--keypoint-set lsp14``)
projected into the crop, plus ``--keypoint-noise-px`` Gaussian noise (the oracle of
docs/baselines.md); ``detector`` mediapipe's landmarks on the crop mapped to the same joints
(`sahmr.detect`, docs/detection.md), their confidences weighting the 2-D term. Frames where the
detector finds nobody are not fitted (listed in fit_log.json). The detector needs mediapipe
(CPU); elsewhere (the GPU machine) pass ``--keypoints-file`` written by
tools/detect_keypoints.py. Default: ``gt`` where the split has ground truth (generated splits
always do), else ``detector``.

    python tools/detect_keypoints.py --dataset data/synth --split test --out kp_test.npz
    python tools/fit.py --dataset data/synth --split test --out runs/prox_det \
        --keypoints detector --keypoints-file kp_test.npz

Outputs in ``--out``:
    predictions/<split>-<index:06d>.npz  world-frame ``vertices`` + SMPL-format ``betas``,
        ``global_orient``, ``body_pose``, ``transl`` and ``scene``
        (tools/score_predictions.py re-scores)
    eval/  metrics.json, per_frame.csv, plots (sahmr.evaluation), unless ``--no-eval``
    fit_log.json   frames, iterations per stage, seconds per frame, device, settings, config
    fit_frames.csv per frame: reprojection error (px) and the final objective terms
Exit codes: 0 done, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger("fit")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "optim" / "prox.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path, help="dataset of tools/make_dataset.py")
    p.add_argument("--split", default="val", help="split to fit (tune on val; default val)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fitter config (yaml)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (OmegaConf dotlist)")
    p.add_argument("--no-scene", action="store_true", help="SMPLify only: scene weights set to 0")
    p.add_argument("--init-checkpoint", type=Path, default=None,
                   help="start from a trained method's predictions (HMR/SPIN/...)")  # fmt: skip
    p.add_argument("--single-start", action="store_true",
                   help="mean start without the multi-start search")  # fmt: skip
    p.add_argument("--keypoint-set", choices=("smpl24", "lsp14"), default="smpl24")
    p.add_argument("--keypoint-noise-px", type=float, default=0.0,
                   help="Gaussian noise, crop px (gt keypoints only)")
    p.add_argument("--keypoints", choices=("gt", "detector"), default=None,
                   help="2-D keypoints: projected ground truth or the detector (default: gt "
                        "where the split has ground truth)")
    p.add_argument("--keypoints-file", type=Path, default=None,
                   help="detector keypoints of tools/detect_keypoints.py (.npz) instead of "
                        "running the detector here")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-frames", type=int, default=None, help="evenly spaced subset of frames")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--seed", type=int, default=0, help="keypoint noise seed")
    p.add_argument("--sdf-voxel-size", type=float, default=SDF_VOXEL_SIZE_M, help="metres")
    p.add_argument("--sdf-cache-dir", type=Path, default=None)
    p.add_argument("--no-eval", action="store_true", help="skip the evaluator")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--allow-missing-shards", action="store_true",
                   help="fit a split some of whose shards are missing (frame names then differ "
                        "from the complete dataset's)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def load_fitter(config: Path, overrides: list[str], body_model, no_scene: bool):
    """Instantiate the fitter of a config (hydra ``_target_``) with the body model."""
    import yaml
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    def parse(value: str):
        out = yaml.safe_load(value)
        if isinstance(out, str):  # YAML 1.1 reads "1e4" as a string
            try:
                return float(out)
            except ValueError:
                return out
        return out

    cfg = OmegaConf.load(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not key=value")
        OmegaConf.update(cfg, key, parse(value), merge=True)  # list indices work too
    if no_scene:
        for stage in cfg.stages:
            stage.penetration_weight = 0.0
            stage.contact_weight = 0.0
    fitter = instantiate(cfg, body_model=body_model)
    return fitter, OmegaConf.to_yaml(cfg)


class _Subset:
    """A frame reader restricted to some names (the frames that were fitted)."""

    def __init__(self, reader, names: list[str]) -> None:
        self._reader, self._names = reader, sorted(names)

    def names(self) -> list[str]:
        return list(self._names)

    def load(self, name: str):
        return self._reader.load(name)


class KeypointFile:
    """Detector keypoints of tools/detect_keypoints.py, looked up by frame name.

    Raises:
        SystemExit: One line naming the file and what is wrong with it.
    """

    def __init__(self, path: Path, keypoint_set: str, split: str) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--keypoints-file {path}: cannot be read ({exc})") from exc
        need = ["names", "found", f"joints_{keypoint_set}", f"confidence_{keypoint_set}"]
        missing = [k for k in need if k not in data]
        if missing:
            raise SystemExit(f"--keypoints-file {path}: no {', '.join(missing)} "
                             "(write it with tools/detect_keypoints.py)")
        if "split" in data and str(data["split"]) != split:
            raise SystemExit(f"--keypoints-file {path}: holds split {str(data['split'])!r}, "
                             f"not --split {split!r}")
        from sahmr.detect.keypoints import JOINT_NAMES

        n, num_joints = len(data["names"]), len(JOINT_NAMES[keypoint_set])
        joints = data[f"joints_{keypoint_set}"]
        conf = data[f"confidence_{keypoint_set}"]
        if (data["names"].ndim != 1 or joints.ndim != 3 or joints.shape[0] != n
                or joints.shape[1:] != (num_joints, 2) or conf.shape != joints.shape[:2]
                or data["found"].shape != (n,)):  # fmt: skip
            raise SystemExit(
                f"--keypoints-file {path}: names {data['names'].shape}, found "
                f"{data['found'].shape}, joints_{keypoint_set} {joints.shape}, "
                f"confidence_{keypoint_set} {conf.shape}: need (N,), (N,), (N, {num_joints}, 2), "
                f"(N, {num_joints})"
            )
        if not (np.issubdtype(joints.dtype, np.number) and np.issubdtype(conf.dtype, np.number)):
            raise SystemExit(f"--keypoints-file {path}: joints and confidences must be numbers")
        used = data["found"].astype(bool)[:, None] & (np.nan_to_num(conf) > 0)
        if not (np.isfinite(joints[used]).all() and np.isfinite(conf).all()):
            raise SystemExit(f"--keypoints-file {path}: NaN or infinite keypoints or "
                             "confidences of found people")  # fmt: skip
        self.path = path
        self.rows = {str(n): i for i, n in enumerate(data["names"])}
        self.found = data["found"].astype(bool)
        self.joints = data[f"joints_{keypoint_set}"].astype(np.float32)
        self.confidence = data[f"confidence_{keypoint_set}"].astype(np.float32)

    def check_covers(self, names: list[str]) -> None:
        absent = [n for n in names if n not in self.rows]
        if absent:
            raise SystemExit(f"--keypoints-file {self.path}: no keypoints for {len(absent)} "
                             f"of the {len(names)} frames (first: {absent[0]}); run "
                             "tools/detect_keypoints.py with the same --split/--max-frames")

    def get(self, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = [self.rows[n] for n in names]
        return self.joints[rows], self.confidence[rows], self.found[rows]


def method_start(method, batch, device):
    """Camera-frame parameters predicted by a trained body method (placed by its PnP)."""
    from sahmr.data.prepare import prepare_inputs
    from sahmr.optim.smplify import SMPLParams

    pred = method.predict(prepare_inputs(batch, None, device=device))
    if pred.params is None:
        raise SystemExit("--init-checkpoint: the method predicts no SMPL-format parameters")
    return SMPLParams(**{k: pred.params[k].detach().float() for k in
                         ("global_orient", "body_pose", "betas", "transl")})  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.dataset / "dataset.json").is_file():
        parser.error(f"--dataset {args.dataset}: no dataset.json")
    if not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.batch_size <= 0 or args.keypoint_noise_px < 0:
        parser.error("--batch-size must be positive and --keypoint-noise-px >= 0")
    if args.keypoints_file is not None:
        if args.keypoints == "gt":
            parser.error("--keypoints-file holds detector keypoints: not with --keypoints gt")
        if not args.keypoints_file.is_file():
            parser.error(f"--keypoints-file {args.keypoints_file}: no such file")
        args.keypoints = "detector"
    if args.keypoints is None:  # generated splits always carry ground-truth joints
        args.keypoints = "gt"
    if args.keypoints == "detector":
        if args.keypoint_noise_px > 0:
            parser.error("--keypoint-noise-px applies to --keypoints gt only")
        if args.keypoints_file is None:
            from sahmr.detect.runtime import default_site, detector_available

            if not detector_available():
                parser.error(f"--keypoints detector: mediapipe is not installed in "
                             f"{default_site()}; run tools/detect_keypoints.py where it is "
                             "and pass --keypoints-file")
    if args.init_checkpoint is not None and not args.init_checkpoint.is_file():
        parser.error(f"--init-checkpoint {args.init_checkpoint}: no such file")
    from sahmr.cli.checks import (
        BadArgument,
        check_complete_split,
        check_dataset_split,
        check_device,
        check_writable_folder,
    )

    try:
        # frames are named by their index in the split: a missing shard renumbers them
        meta = check_dataset_split(args.dataset, "--dataset", args.split, "--split")
        if not args.allow_missing_shards:
            check_complete_split(args.dataset, meta, args.split, "--dataset",
                                 "--allow-missing-shards")  # fmt: skip
        check_device(args.device, "--device")
        check_writable_folder(args.out, "--out")
        if args.sdf_cache_dir is not None:
            check_writable_folder(args.sdf_cache_dir, "--sdf-cache-dir")
    except BadArgument as exc:
        parser.error(str(exc))
    if args.max_frames is not None and args.max_frames <= 0:
        parser.error(f"--max-frames {args.max_frames}: must be >= 1")
    if not args.sdf_voxel_size > 0:
        parser.error(f"--sdf-voxel-size {args.sdf_voxel_size}: must be > 0 (metres)")
    if args.init_checkpoint is not None:  # weights only, and only the project's classes built
        from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

        try:
            checkpoint_config(load_checkpoint(args.init_checkpoint), args.init_checkpoint)
        except ValueError as exc:
            parser.error(f"--init-checkpoint {exc}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from tqdm import tqdm

    from sahmr.body import BodyModel
    from sahmr.data.collate import collate_samples
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.evaluation.evaluator import Evaluator, SceneSDFs
    from sahmr.evaluation.readers import FolderReader, SyntheticSplitReader
    from sahmr.evaluation.reports import summary_table, write_reports
    from sahmr.geometry.cameras import invert_rigid, project, transform_points
    from sahmr.records import frame_name
    from sahmr.scene.frontend import crop_intrinsics

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    dataset = SyntheticDataset(args.dataset, args.split)
    if len(dataset) == 0:
        parser.error(f"--dataset {args.dataset}: split {args.split!r} has no frames")
    n = len(dataset) if args.max_frames is None else min(args.max_frames, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, n).round().astype(int)).tolist()
    kp_file = None
    if args.keypoints_file is not None:
        try:
            kp_file = KeypointFile(args.keypoints_file, args.keypoint_set, args.split)
            kp_file.check_covers([frame_name(args.split, i) for i in indices])
        except SystemExit as exc:
            parser.error(str(exc))
    no_person: list[str] = []
    body = BodyModel().to(device)
    fitter, config_yaml = load_fitter(args.config, args.overrides, body, args.no_scene)
    fitter = fitter.to(device)
    use_scene = any(s.uses_scene for s in fitter.stages)
    scenes = SceneSDFs(
        scene_dir=args.dataset / "rooms",
        voxel_size=args.sdf_voxel_size,
        cache_dir=args.sdf_cache_dir,
    )
    method = None
    if args.init_checkpoint is not None:
        from sahmr.engine.checkpoint import load_method

        method, _ = load_method(args.init_checkpoint, device)
    j14 = torch.as_tensor(body.topology.j_regressor_j14, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(args.seed)

    pred_dir = args.out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    fit_seconds = 0.0
    stage_iterations: list[int] = []
    start_all = time.perf_counter()
    bar = tqdm(total=len(indices), desc="fit", unit="frame", disable=args.no_progress)
    for b0 in range(0, len(indices), args.batch_size):
        idx = indices[b0 : b0 + args.batch_size]
        samples = [dataset[i] for i in idx]
        det = None
        if args.keypoints == "detector":
            names_b = [frame_name(args.split, i) for i in idx]
            if kp_file is not None:
                det = kp_file.get(names_b)
            else:
                from sahmr.detect.people import crop_keypoints

                det = crop_keypoints([np.asarray(s.crop, np.uint8) for s in samples],
                                     args.keypoint_set)
            keep = det[2]
            no_person += [nm for nm, k in zip(names_b, keep) if not k]
            idx = [i for i, k in zip(idx, keep) if k]
            samples = [s for s, k in zip(samples, keep) if k]
            det = (det[0][keep], det[1][keep])
            bar.update(int((~keep).sum()))
            if not samples:
                continue
        batch = collate_samples(samples, keep_images=False)
        K = batch.K.to(device)
        T_w2c = batch.T_w2c.to(device)
        K_crop = crop_intrinsics(K, batch.bbox.to(device), int(batch.crop.shape[1]))
        joints_cam = transform_points(T_w2c, batch.joints_world.to(device))
        if args.keypoint_set == "lsp14":
            verts_cam = transform_points(T_w2c, batch.vertices_world.to(device))
            joints_cam = torch.einsum("jv,bvc->bjc", j14, verts_cam)
        kp = project(K_crop, joints_cam)
        kp_weights = None
        if det is not None:
            kp = torch.as_tensor(det[0], dtype=torch.float32, device=device)
            kp_weights = torch.as_tensor(det[1], dtype=torch.float32, device=device)
        if args.keypoint_noise_px > 0:
            kp = kp + args.keypoint_noise_px * torch.randn(kp.shape, generator=gen).to(device)
        if use_scene:  # loading (or building) an SDF is not fitting time
            names = sorted(set(batch.scene_id))
            # The evaluator's samplers wrap the grid the fitter samples (ExactSceneSDF.grid).
            sdfs = [getattr(scenes.get(s), "grid", scenes.get(s)) for s in names]
            frame_scene = torch.tensor([names.index(s) for s in batch.scene_id], device=device)
        _sync(device)
        t0 = time.perf_counter()
        stages = fitter.stages
        if method is not None:
            init = method_start(method, batch, device)
        else:
            init = fitter.mean_pose_start(kp, K_crop, kp_weights)
            if not args.single_start:
                init = fitter.search_start(init, kp, K_crop, kp_weights)
                stages = fitter.stages[fitter.start_stages :]
        if use_scene:
            result = fitter.fit(init, kp, K_crop, T_w2c, sdfs, frame_scene,
                                keypoint_weights=kp_weights, stages=stages)
        else:
            result = fitter(init, kp, K_crop, kp_weights, stages=stages)
        _sync(device)
        fit_seconds += time.perf_counter() - t0
        stage_iterations = [0] * (len(fitter.stages) - len(result.iterations))
        stage_iterations += result.iterations
        world = fitter.to_world(result.params, T_w2c)
        vertices_world = transform_points(invert_rigid(T_w2c), result.vertices)
        for k, i in enumerate(idx):
            name = frame_name(args.split, i)
            np.savez(
                pred_dir / f"{name}.npz",
                vertices=vertices_world[k].cpu().numpy().astype(np.float32),
                betas=world.betas[k].cpu().numpy(),
                global_orient=world.global_orient[k].cpu().numpy(),
                body_pose=world.body_pose[k].cpu().numpy(),
                transl=world.transl[k].cpu().numpy(),
                scene=np.asarray(batch.scene_id[k]),
            )
            row = {"name": name, "scene": batch.scene_id[k],
                   "reprojection_error_px": float(result.reprojection_error_px[k])}  # fmt: skip
            row.update({f"final_{t}": float(v[k]) for t, v in result.terms.items()})
            rows.append(row)
        bar.update(len(idx))
    bar.close()
    if no_person:
        print(f"the detector found nobody in {len(no_person)} of {len(indices)} frames: "
              "not fitted")
    if not rows:
        print("error: no frame to fit", file=sys.stderr)
        return 1
    wall = time.perf_counter() - start_all
    searched = method is None and not args.single_start
    leading = sum(st.iterations for st in fitter.stages[: fitter.start_stages])
    search_iters = fitter.start_orientations * leading if searched else 0
    log = {
        "split": args.split,
        "frames": len(rows),
        "batch_size": args.batch_size,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "scene_terms": use_scene,
        "init": str(args.init_checkpoint) if method is not None else "mean pose + PnP",
        "start_search": (
            f"{fitter.start_orientations} root rotations x stages 0..{fitter.start_stages - 1}"
            if searched
            else "none"
        ),
        "start_search_iterations": search_iters,
        "iterations_per_stage": stage_iterations,
        "iterations_per_frame": int(sum(stage_iterations) + search_iters),
        "fit_seconds_per_frame": fit_seconds / max(len(rows), 1),
        "wall_seconds_per_frame": wall / max(len(rows), 1),
        "keypoints": (
            f"ground truth {args.keypoint_set} + N(0, {args.keypoint_noise_px} px)"
            if args.keypoints == "gt"
            else f"detector {args.keypoint_set} (mediapipe, confidences as weights"
            + (f", from {args.keypoints_file})" if args.keypoints_file else ")")
        ),
        "frames_without_person": no_person,
        "mean_reprojection_error_px": float(np.mean([r["reprojection_error_px"] for r in rows])),
        "config": config_yaml,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit_log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
    with open(args.out / "fit_frames.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"fitted {len(rows)} frames: {log['iterations_per_frame']} iterations, "
        f"{log['fit_seconds_per_frame']:.3f} s per frame fitting "
        f"({log['wall_seconds_per_frame']:.3f} s wall) on {log['device']}, batch {args.batch_size}"
    )
    if not args.no_eval:
        gt = SyntheticSplitReader(args.dataset, args.split)
        names = [r["name"] for r in rows]
        evaluator = Evaluator(body.cpu(), scenes)
        result = evaluator.evaluate(
            FolderReader(pred_dir), _Subset(gt, names), progress=not args.no_progress
        )
        write_reports(result, args.out / "eval")
        print(summary_table(result))
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
