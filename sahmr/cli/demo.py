"""sahmr demo: recover a person's body in a scanned room from one image (or a folder of them).

With no arguments it runs the shipped checkpoint on the bundled demo frames of the default
room (``scenes/living_room/demo``), on CPU if there is no GPU. Otherwise::

    sahmr-demo --scene room.ply --image frame.jpg --camera camera.json --bbox 410,120,610,470

Without ``--bbox`` the people are found by the shipped detector (`sahmr.detect`, mediapipe's
pose model): every person at least ``--min-person-height`` of the image tall is processed
(``--person largest``: only the largest); nobody found is bad input. ``--bbox sidecar`` reads
``<stem>.bbox.json`` next to each image instead.

Outputs (docs/demo.md): body_world.ply/.obj, body_params.npz, contacts.json, overlay.png,
scene_views.png and summary.json per frame; in batch mode (``--image`` a folder, or several
bundled frames) one sub-folder per frame plus summary.json/.csv/.md tables. Everything is
written to a hidden temporary folder and renamed to ``--out`` at the end: bad input leaves no
output. Exit status: 0 success, 2 bad input (nothing written), 3 batch with failed frames
(the others written), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sahmr.inference.errors import InputError, MissingFileError
from sahmr.scene.points import SCENE_VOXEL_SIZE_M
from sahmr.scene.ray_slide import SLIDE_COST
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 1, 2, 3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CAMERA_SUFFIXES = (".json", ".yaml", ".yml", ".xml")
DEMO_FOLDER = "demo"
SIDECAR = "sidecar"
"""``--bbox sidecar``: read ``<stem>.bbox.json`` (or ``.txt``, ``_keypoints.json``) per image."""
"""Sub-folder of a bundled scene holding its demo frames."""
FITTING_METHODS = {"optimisation": "hmr", "optimization": "hmr", "prox": "hmr"}
"""``--method`` names meaning "this image method, then scene fitting" (``--refine``)."""


def build_parser() -> argparse.ArgumentParser:
    """The demo's argument parser."""
    p = argparse.ArgumentParser(
        prog="sahmr-demo", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("inputs")
    g.add_argument("--scene", default=None,
                   help="scan file (.ply/.obj/.glb/.npz) or a bundled scene name "
                        "(default: the bundled default room)")
    g.add_argument("--image", type=Path, default=None,
                   help="image file or folder of images (default: the bundled scene's demo "
                        "frames)")
    g.add_argument("--camera", type=Path, default=None,
                   help="camera file: sahmr JSON/YAML, RICH .xml or PROX Color.json (default: "
                        "<image stem>.camera.json next to each image, or camera.json in its "
                        "folder)")
    g.add_argument("--cam2world", type=Path, default=None,
                   help="PROX only: cam2world/<scene>.json going with a Color.json")
    g.add_argument("--camera-scale", type=float, default=1.0,
                   help="scale the intrinsics for resized images (0.25 for RICH images_ds4)")
    g.add_argument("--bbox", default=None,
                   help="person box x0,y0,x1,y1 (pixels), a bbox file (.txt/.json/OpenPose "
                        "keypoints), a folder of <stem>.json|.txt, or 'sidecar' for "
                        "<stem>.bbox.json next to each image (default: detect the people)")
    g.add_argument("--person", choices=("all", "largest"), default="all",
                   help="without --bbox: process every detected person or only the largest")
    g.add_argument("--min-person-height", type=float, default=None,
                   help="without --bbox: ignore people shorter than this fraction of the "
                        "image height (default sahmr.detect.people.MIN_PERSON_HEIGHT_FRACTION)")
    g.add_argument("--no-unmirror", action="store_true",
                   help="do not flip images of PROX cameras (already un-mirrored)")
    g.add_argument("--scale", type=float, default=1.0,
                   help="scan units to metres (0.001 for millimetres)")
    g.add_argument("--up-axis", default="z", help="the scan's up axis (z, y, -y...)")
    g.add_argument("--scene-voxel", type=float, default=SCENE_VOXEL_SIZE_M,
                   help="scan down-sampling pitch, metres (the models are trained on 2 cm)")
    m = p.add_argument_group("method")
    m.add_argument("--method", default="sahmr",
                   help="method whose shipped checkpoint is used (sahmr, metro, hmr, spin...); "
                        "with --checkpoint only a label")
    m.add_argument("--refine", action="store_true",
                   help="PROX-style scene fitting after the method, for every method "
                        "(vertex-only methods get SMPL parameters fitted to their vertices "
                        "first); --method optimisation is hmr + --refine")
    m.add_argument("--fit-iterations", type=int, default=40,
                   help="Adam steps per scene-fitting stage")
    m.add_argument("--scene-slide-cost", type=float, default=SLIDE_COST,
                   help="slide each body along its camera ray to where it penetrates the scan "
                        "least, when that removes at least this many mm of penetration (summed "
                        "over vertices) per mm of slide (sahmr.scene.ray_slide; needs the SDF)")
    m.add_argument("--no-scene-slide", action="store_true",
                   help="leave each body where the method put it (only the ground settle)")
    m.add_argument("--depenetrate", action=argparse.BooleanOptionalAction, default=True,
                   help="last, bend the joints of a body still more than 1 cm inside the scan "
                        "out of it (pose only; root, translation and shape kept; "
                        "sahmr.scene.depenetrate; needs the SDF and body parameters; on by "
                        "default)")
    m.add_argument("--checkpoint", type=Path, default=None,
                   help="sahmr checkpoint (.pt) (default: the shipped one of --method)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    o = p.add_argument_group("outputs")
    o.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    o.add_argument("--overwrite", action="store_true",
                   help="replace --out even if the demo did not write it")
    o.add_argument("--force", action="store_true",
                   help="go on despite geometry checks: a camera that cannot see the person "
                        "in the scan (centre outside the scan, upside down, camera-to-world "
                        "given, box on no place a person can be), a scan whose normals face "
                        "away from the room (penetration figures would be inverted), a body "
                        "landing more than 1 m outside the scan, behind the camera, hidden "
                        "behind walls or more than 20%% inside the scan (a wrong camera or "
                        "box)")
    o.add_argument("--no-penetration", action="store_true",
                   help="skip the scene SDF (penetration and contact figures)")
    o.add_argument("--sdf-voxel", type=float, default=SDF_VOXEL_SIZE_M, help="SDF pitch, metres")
    o.add_argument("--cache-dir", type=Path, default=None,
                   help="cache of down-sampled scans (scene_points/) and SDFs (sdf/) (default "
                        "~/.cache/sahmr, or $SAHMR_CACHE_DIR)")
    o.add_argument("--views", type=int, default=2,
                   help="orbit views in scene_views.png (besides the input camera's)")
    o.add_argument("--view-size", type=int, nargs=2, default=(400, 300), metavar=("W", "H"))
    o.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


# ---------------------------------------------------------------------------- frames


@dataclass
class FailedFrame:
    """A frame that could not even be set up (missing camera, bbox...)."""

    name: str
    error: str


def resolve_scene(arg: str | None) -> tuple[Path, bool]:
    """``(scan path, is_bundled)`` for ``--scene`` (a path or a bundled scene name)."""
    from sahmr.synth.bundled import bundled_scene_dir, default_scene_name, list_bundled_scenes

    if arg is None:
        arg = default_scene_name()
    path = Path(arg)
    if path.suffix:  # a file name
        if not path.is_file():
            raise MissingFileError(f"scene scan not found: {path}")
        return path, False
    if arg in list_bundled_scenes():
        return bundled_scene_dir(arg) / "mesh.ply", True
    if path.is_dir() and (path / "mesh.ply").is_file():
        return path / "mesh.ply", False
    raise MissingFileError(
        f"--scene {arg!r}: no such file and no bundled scene of that name (bundled: "
        f"{', '.join(list_bundled_scenes())})"
    )


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _camera_for(image: Path, args: argparse.Namespace):
    from sahmr.inference.camera_io import load_camera, missing_sidecar

    path = args.camera
    if path is None:
        tried = [image.with_name(f"{image.stem}.camera{s}") for s in CAMERA_SUFFIXES]
        tried += [image.with_name(f"camera{s}") for s in CAMERA_SUFFIXES[:3]]
        path = _first_existing(tried)
        if path is None:
            raise missing_sidecar("camera", image, tried[:1] + tried[-3:-2])
    return load_camera(path, cam2world=args.cam2world, scale=args.camera_scale)


def _bbox_for(image: Path, args: argparse.Namespace) -> np.ndarray:
    from sahmr.inference.camera_io import missing_sidecar, parse_bbox, read_bbox_file

    spec = args.bbox
    if spec is not None and spec != SIDECAR:
        p = Path(spec)
        if p.is_dir():
            tried = [p / f"{image.stem}{s}" for s in (".json", ".txt")]
            tried.append(p / f"{image.stem}_keypoints.json")
            found = _first_existing(tried)
            if found is None:
                raise missing_sidecar("bbox", image, tried)
            return read_bbox_file(found)
        if p.suffix.lower() in (".json", ".txt") or p.is_file():
            return read_bbox_file(p)
        return parse_bbox(spec)
    tried = [image.with_name(f"{image.stem}.bbox{s}") for s in (".json", ".txt")]
    tried.append(image.with_name(f"{image.stem}_keypoints.json"))
    found = _first_existing(tried)
    if found is None:
        raise missing_sidecar("bbox", image, tried[:1])
    return read_bbox_file(found)


def collect_frames(args: argparse.Namespace, bundled: bool, scene_dir: Path
                   ) -> tuple[list[Any], bool]:
    """The frames to run, and whether this is batch mode.

    Single mode (``--image`` a file) raises on a frame that cannot be set up; batch mode
    records it as a `FailedFrame` and goes on.
    """
    from sahmr.cli.checks import image_file_problem
    from sahmr.inference.frames import FrameSpec

    if args.image is None:
        if not bundled:
            raise InputError("--image is required with a --scene that is not a bundled scene")
        folder = scene_dir / DEMO_FOLDER
        if not folder.is_dir():
            raise MissingFileError(f"no --image given and the bundled scene has no demo frames "
                                   f"({folder} is missing)")
        images, batch = _images_in(folder), True
    elif args.image.is_dir():
        images, batch = _images_in(args.image), True
    else:
        if not args.image.exists():
            raise MissingFileError(f"image not found: {args.image}")
        images, batch = [args.image], False
    if not images:
        raise MissingFileError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.image}")
    frames: list[Any] = []
    setups: list[tuple[Path, Any, list[np.ndarray] | None, list[Any] | None] | FailedFrame] = []
    for image in images:
        try:
            problem = image_file_problem(image)  # header only: size limit, 16-bit samples
            if problem is not None:
                raise InputError(problem)
            camera = _camera_for(image, args)
            if args.no_unmirror and camera.mirrored_images:
                from dataclasses import replace

                camera = replace(camera, mirrored_images=False)
            boxes = None if args.bbox is None else [_bbox_for(image, args)]
        except InputError as exc:
            if not batch:
                raise
            setups.append(FailedFrame(image.stem, str(exc)))
            continue
        setups.append((image, camera, boxes, None))
    if args.bbox is None:
        setups = _detect_boxes(setups, args, batch)
    for setup in setups:
        if isinstance(setup, FailedFrame):
            frames.append(setup)
            continue
        image, camera, boxes, people = setup
        gt = image.with_name(f"{image.stem}.gt.npz")
        gt_path = gt if gt.is_file() and len(boxes) == 1 else None
        for k, bbox in enumerate(boxes):
            name = image.stem if len(boxes) == 1 else f"{image.stem}_person{k}"
            kp = (None, None) if people is None else (people[k].joints_smpl24,
                                                      people[k].confidence_smpl24)
            frames.append(FrameSpec(name, image, camera, bbox, gt_path, *kp))
    return frames, batch or len(frames) > 1


def _detect_boxes(setups: list[Any], args: argparse.Namespace, batch: bool) -> list[Any]:
    """Fill in the person boxes (and the people's keypoints) of frames without a box by the
    detector (one process for all images).

    Raises:
        InputError: The detector is not installed, or (single image) nobody was found.
    """
    from sahmr.detect.people import (
        MIN_PERSON_HEIGHT_FRACTION,
        NoPersonError,
        detect_people,
        select_people,
    )
    from sahmr.detect.runtime import DetectorUnavailableError
    from sahmr.inference.camera_io import read_bbox_file
    from sahmr.inference.images import read_image

    todo = [k for k, s in enumerate(setups) if not isinstance(s, FailedFrame)]
    if not todo:
        return setups
    min_height = (MIN_PERSON_HEIGHT_FRACTION if args.min_person_height is None
                  else args.min_person_height)
    if not 0.0 <= min_height < 1.0:
        raise InputError(f"--min-person-height {min_height}: must be a fraction in [0, 1)")
    images = [read_image(setups[k][0], mirrored=setups[k][1].mirrored_images) for k in todo]
    try:
        found = detect_people(images, max_people=1 if args.person == "largest" else 4)
    except DetectorUnavailableError as exc:
        raise InputError(f"no --bbox given and {exc}") from exc
    out = list(setups)
    for k, image, people in zip(todo, images, found):
        path, camera, _, _ = setups[k]
        try:
            chosen = select_people(people, (image.shape[1], image.shape[0]), which=args.person,
                                   min_height_fraction=min_height, image_name=str(path))
        except NoPersonError as exc:
            if not batch:
                raise InputError(str(exc)) from exc
            out[k] = FailedFrame(path.stem, str(exc))
            continue
        out[k] = (path, camera, [p.bbox.astype(np.float64) for p in chosen], chosen)
        sidecar = path.with_name(f"{path.stem}.bbox.json")
        for p in chosen:
            note = ""
            if sidecar.is_file():
                from sahmr.detect.metrics import box_iou

                iou = float(box_iou(p.bbox, read_bbox_file(sidecar)))
                note = f" (IoU {iou:.2f} with {sidecar.name})"
            logger.info("%s: detected person box %s%s", path.name,
                        [round(float(v), 1) for v in p.bbox], note)
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


# ---------------------------------------------------------------------------- run


def _device(arg: str) -> torch.device:
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(arg)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {arg}: CUDA is not available on this machine")
    return dev


def _device_record(device: torch.device) -> dict[str, Any]:
    rec: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                           "python": platform.python_version(), "cpu": platform.processor()
                           or platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(device)
    return rec


def _body_model(cfg: Any) -> torch.nn.Module:
    """The body model of the checkpoint's config (``cfg.body``), else the shipped one."""
    from sahmr.body import BodyModel

    body_cfg = cfg.get("body") if cfg is not None and hasattr(cfg, "get") else None
    if body_cfg is not None and "_target_" in body_cfg:
        from hydra.utils import instantiate

        return instantiate(body_cfg)
    return BodyModel()


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status. Raises `InputError` on bad input."""
    from sahmr.inference.frames import FrameSpec, PreparedFrame, prepare_frame
    from sahmr.inference.method import (
        bundled_checkpoint,
        check_method_checkpoint,
        load_method_checkpoint,
    )
    from sahmr.inference.outputs import (
        check_output_folder,
        staged_output,
        write_batch_summary,
        write_frame_outputs,
    )
    from sahmr.inference.pipeline import InferencePipeline
    from sahmr.inference.refine import SceneFitRefiner
    from sahmr.inference.scene import load_scene_data
    from sahmr.inference.timing import StageTimer

    timer = StageTimer()
    check_numbers(args)
    check_output_folder(args.out, overwrite=args.overwrite)
    device = _device(args.device)
    refine = args.refine or args.method in FITTING_METHODS
    base_method = FITTING_METHODS.get(args.method, args.method)
    scene_path, bundled = resolve_scene(args.scene)
    ckpt = args.checkpoint if args.checkpoint is not None else bundled_checkpoint(base_method)
    check_method_checkpoint(ckpt)  # unreadable / pickled / foreign _target_: before slow work
    frames, batch = collect_frames(args, bundled, scene_path.parent)  # may run the detector
    scene = load_scene_data(scene_path, scale=args.scale, up_axis=args.up_axis,
                            voxel_size=args.scene_voxel, cache_dir=args.cache_dir)
    if not args.force:  # before the orientation vote (it trusts the camera) and the model
        frames = _check_cameras(frames, scene, batch)
    first = next((f for f in frames if isinstance(f, FrameSpec)), None)
    if scene.mesh is not None and first is not None and not args.force:
        # flipped normals would invert penetration; the camera stands in free space
        from sahmr.scene.orientation import UnorientedScanError, check_scan_faces_camera

        cam = first.camera
        size = cam.image_size or (round(2 * cam.K[0, 2]), round(2 * cam.K[1, 2]))
        try:
            check_scan_faces_camera(scene.mesh.vertices, scene.mesh.faces, cam.K, cam.T_w2c,
                                    size, str(scene_path))  # fmt: skip
        except UnorientedScanError as exc:
            raise InputError(f"{exc} (--force goes on anyway)") from exc
    timer.seconds.update(scene.timings)
    prepared: dict[str, PreparedFrame] = {}
    if not batch:  # report bad input before the (slow) model load
        frame = frames[0]
        prepared[frame.name] = prepare_frame(frame, scene, device, check_camera=False)
    with timer("load_method"):
        method = load_method_checkpoint(
            ckpt, device, name=base_method if args.checkpoint is None else None)
        body = _body_model(method.config)
        refiner = None
        if refine:
            refiner = SceneFitRefiner(body=_body_model(method.config),
                                      iterations=args.fit_iterations, device=device)
            method.name += "+scene_fit"
    pipeline = InferencePipeline(
        method=method, scene=scene, body=body, penetration=not args.no_penetration,
        sdf_voxel_size=args.sdf_voxel,
        sdf_cache_dir=None if args.cache_dir is None else args.cache_dir / "sdf",
        refiner=refiner,
        check_camera=False,  # checked above (or --force)
        scene_slide_cost=None if args.no_scene_slide else args.scene_slide_cost,
        depenetrate=bool(args.depenetrate),
    )
    faces = np.asarray(body.faces, np.int64)
    header = {
        "method": method.name,
        "checkpoint": str(method.checkpoint),
        "scene": {"name": scene.name, "path": str(scene.path), "points": len(scene.points)},
        **_device_record(device),
    }
    entries: list[dict[str, Any]] = []
    with staged_output(args.out, overwrite=args.overwrite) as tmp:
        for frame in frames:
            if isinstance(frame, FailedFrame):
                logger.error("frame %s: %s", frame.name, frame.error)
                entries.append({"frame": frame.name, "status": "failed", "error": frame.error})
                continue
            assert isinstance(frame, FrameSpec)
            try:
                result = pipeline.run(frame, prepared.pop(frame.name, None))
                if result.vertices_world.shape[0] != body.num_vertices:
                    raise InputError(
                        f"the method predicts {result.vertices_world.shape[0]} vertices, the body "
                        f"model has {body.num_vertices}: the checkpoint's body does not match")
                if not args.force:
                    check_root_inside_scan(result.root_world, scene.points.points, frame.name,
                                           result.camera.T_w2c)
                    check_body_not_inside_scan(result.penetration, frame.name)
                    hidden = check_body_in_view(
                        result.vertices_world, scene.points.points, result.camera.K,
                        result.camera.T_w2c, (result.image.shape[1], result.image.shape[0]),
                        frame.name)  # fmt: skip
                    logger.info("frame %s: %.0f%% of the body hidden by the scan", frame.name,
                                100 * hidden)  # fmt: skip
                folder = tmp / frame.name if batch else tmp
                folder.mkdir(exist_ok=True)
                shared = {k: round(v, 4) for k, v in timer.seconds.items()}
                if pipeline.sdf_seconds:
                    shared["sdf_build_or_load"] = round(pipeline.sdf_seconds, 4)
                extra = {**{k: v for k, v in header.items() if k != "scene"},
                         "shared_timings_s": shared}
                if pipeline.sdf_note:
                    extra["penetration_note"] = pipeline.sdf_note
                if frame.keypoints2d is not None:  # box (and scene-fit keypoints) detected
                    extra["bbox_source"] = "detector"
                summary = write_frame_outputs(folder, result, scene, faces, extra_summary=extra,
                                              num_orbit_views=args.views,
                                              view_size=tuple(args.view_size))
            except InputError as exc:
                if not batch:
                    raise
                logger.error("frame %s: %s", frame.name, exc)
                entries.append({"frame": frame.name, "status": "failed", "error": str(exc)})
                if batch and (tmp / frame.name).exists():
                    import shutil

                    shutil.rmtree(tmp / frame.name)
                continue
            summary["contact_points"] = len(result.contact_point_region)
            entries.append(summary)
            _report(summary)
        if batch:
            if not any(e.get("status", "ok") == "ok" for e in entries):
                raise InputError("every frame failed:\n  " + "\n  ".join(
                    f"{e['frame']}: {e['error']}" for e in entries))
            header["shared_timings_s"] = {k: round(v, 4) for k, v in timer.seconds.items()}
            write_batch_summary(tmp, entries, header)
    failed = [e for e in entries if e.get("status") == "failed"]
    print(f"wrote {args.out} ({len(entries) - len(failed)} frame(s) ok, {len(failed)} failed)")
    for e in failed:
        print(f"  failed {e['frame']}: {e['error']}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


FORCE_HINT = "; --force goes on anyway"
"""Appended to the messages of the geometry checks."""


def _check_cameras(frames: list[Any], scene: Any, batch: bool) -> list[Any]:
    """The frames, each person box checked against its image's size and each camera against
    the scan, the box and the image (`sahmr.inference.frames.check_frame_camera`; the scan
    seen from the camera must line up with the image): single mode raises
    `InputError`, batch mode turns a failing frame into a `FailedFrame`. A frame whose image
    header cannot be read is left to `prepare_frame`, which names the problem."""
    from sahmr.inference.errors import check_bbox
    from sahmr.inference.frames import FrameSpec, check_frame_camera
    from sahmr.inference.images import image_size

    out = []
    for frame in frames:
        if isinstance(frame, FrameSpec):
            try:
                size = image_size(frame.image_path)  # as shown (EXIF orientation)
            except InputError:
                out.append(frame)
                continue
            try:
                check_bbox(frame.bbox, size)
                check_frame_camera(frame, scene, FORCE_HINT)
            except InputError as exc:
                if not batch:
                    raise
                frame = FailedFrame(frame.name, str(exc))
        out.append(frame)
    return out


MAX_VIEW_SIDE = 4096
"""Largest side (pixels) of a rendered scene view."""
MAX_VIEWS = 36
"""Most orbit views in scene_views.png (one every 10 degrees); more is a typo, not a picture."""
MAX_FIT_ITERATIONS = 10_000
"""Most Adam steps per scene-fitting stage (the default is 40; 10,000 take hours on a CPU)."""


def check_numbers(args: argparse.Namespace) -> None:
    """Raise `InputError` on sizes and counts that cannot work (before any work).

    Pitches are metres (finite, > 0, at most 1 m: a coarser grid holds no body detail);
    view sizes 16..`MAX_VIEW_SIDE` pixels; views 0..`MAX_VIEWS`; fit iterations
    1..`MAX_FIT_ITERATIONS`.
    """
    import math

    for flag, value in (("--scene-voxel", args.scene_voxel), ("--sdf-voxel", args.sdf_voxel)):
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise InputError(f"{flag} {value:g}: must be a pitch in metres in (0, 1]")
    width, height = args.view_size
    if not (16 <= width <= MAX_VIEW_SIDE and 16 <= height <= MAX_VIEW_SIDE):
        raise InputError(f"--view-size {width} {height}: each side must be 16..{MAX_VIEW_SIDE} "
                         "pixels")  # fmt: skip
    if not 0 <= args.views <= MAX_VIEWS:
        raise InputError(f"--views {args.views}: must be in 0..{MAX_VIEWS}")
    if not (math.isfinite(args.scene_slide_cost) and args.scene_slide_cost >= 0):
        raise InputError(f"--scene-slide-cost {args.scene_slide_cost:g}: must be a number >= 0")
    if not 1 <= args.fit_iterations <= MAX_FIT_ITERATIONS:
        raise InputError(f"--fit-iterations {args.fit_iterations}: must be in "
                         f"1..{MAX_FIT_ITERATIONS}")  # fmt: skip


ROOT_OUTSIDE_SCAN_MARGIN_M = 1.0
"""How far (metres) a predicted root may lie outside the scan's bounding box before the frame
is refused: farther means a wrong camera (camera-to-world given, turned away) or a box on
something the scan does not hold."""


def check_root_inside_scan(
    root_world: np.ndarray,
    points_world: np.ndarray,
    name: str,
    T_w2c: np.ndarray | None = None,
) -> None:
    """Raise `InputError` when the predicted root lies far outside the scan's bounding box,
    or (given the camera) not in front of the camera
    (`sahmr.scene.camera_checks.root_placement_problem`).

    Args:
        root_world: (3,) predicted root, world frame, metres.
        points_world: (N, 3) scan points, world frame, metres.
        name: The frame, named in the message.
        T_w2c: (4, 4) world -> camera, or None to skip the in-front check.
    """
    from sahmr.scene.camera_checks import root_placement_problem

    problem = root_placement_problem(root_world, points_world, T_w2c, ROOT_OUTSIDE_SCAN_MARGIN_M)
    if problem is not None:
        raise InputError(
            f"frame {name}: {problem}: the camera (world-to-camera, not camera-to-world) or "
            "the person box is probably wrong; --force keeps it"
        )


MAX_PENETRATING_PERCENT = 20.0
"""Largest share (%) of the body's vertices inside the scan. A camera turned to a wall puts the
body into it (the bundled "stand" frame turned 180 degrees: 28 %); the bundled frames give
0.3-7.4 %, the shipped checkpoint on 320 generated frames 0.01 % (median) and 15 % (99th
percentile), the 3 frames above 20 % with the root 0.6-1.6 m off."""


def check_body_not_inside_scan(penetration: dict[str, float] | None, name: str) -> None:
    """Raise `InputError` when more than `MAX_PENETRATING_PERCENT` of the body lies inside the
    scan (``penetration``: the pipeline's figures; None, without an SDF, is not judged)."""
    if penetration is None:
        return
    share = float(penetration["pen_fraction_percent"])
    if share > MAX_PENETRATING_PERCENT:
        raise InputError(
            f"frame {name}: {share:.0f}% of the body's vertices lie inside the scan (at most "
            f"{MAX_PENETRATING_PERCENT:g}%): the camera (world-to-camera, facing the person) or "
            "the person box is probably wrong, or the method failed on this image; --force "
            "keeps it"
        )


HIDDEN_MARGIN_M = 0.25
"""How far (metres) behind the scan's nearest surface at its pixel a body vertex must lie to
count as hidden (more than point spacing and scan noise)."""
MAX_HIDDEN_FRACTION = 0.6
"""Largest share of the body the scan may hide from the camera: the person is seen in the
image, so a body mostly behind walls means a wrong camera (camera-to-world given, turned away
from the person) or a box on something the scan does not hold. A person behind a table or
sofa hides their legs (about a third of the vertices)."""
ZBUFFER_CELL_PX = 8
"""Z-buffer cell side (pixels) of the scan's points (2 cm apart: no holes at room depths)."""


def hidden_body_fraction(
    vertices_world: np.ndarray,
    points_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    *,
    near: float = 0.1,
) -> float:
    """Share of the body's vertices the scan hides from the camera.

    A z-buffer of the scan's points (nearest depth per `ZBUFFER_CELL_PX` cell); a vertex is
    hidden when it lies more than `HIDDEN_MARGIN_M` behind that depth, or behind the camera.
    Vertices outside the image or over cells without scan points count as seen.

    Args:
        vertices_world: (V, 3) body vertices, world frame, metres.
        points_world: (N, 3) scan points, world frame, metres.
        K: (3, 3) intrinsics, pixels.
        T_w2c: (4, 4) world -> camera (OpenCV).
        image_size: ``(W, H)`` pixels.
        near: Scan points nearer than this (metres) are ignored.

    Returns:
        The hidden share in [0, 1].
    """
    R, t = np.asarray(T_w2c, np.float64)[:3, :3], np.asarray(T_w2c, np.float64)[:3, 3]
    K = np.asarray(K, np.float64)
    W, H = image_size
    cols, rows = -(-int(W) // ZBUFFER_CELL_PX), -(-int(H) // ZBUFFER_CELL_PX)

    def cells(p_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.maximum(p_cam[:, 2], 1e-9)
        uv = p_cam[:, :2] / z[:, None] @ K[:2, :2].T + K[:2, 2]
        c, r = np.floor(uv[:, 0] / ZBUFFER_CELL_PX), np.floor(uv[:, 1] / ZBUFFER_CELL_PX)
        ok = (c >= 0) & (c < cols) & (r >= 0) & (r < rows) & np.isfinite(uv).all(axis=1)
        return np.where(ok, r * cols + c, -1).astype(np.int64), ok

    scene_cam = np.asarray(points_world, np.float64) @ R.T + t
    scene_cam = scene_cam[scene_cam[:, 2] > near]
    zbuf = np.full(rows * cols, np.inf)
    cell, ok = cells(scene_cam)
    np.minimum.at(zbuf, cell[ok], scene_cam[ok, 2])
    body_cam = np.asarray(vertices_world, np.float64) @ R.T + t
    behind_camera = body_cam[:, 2] <= 0
    cell, ok = cells(body_cam)
    surface = np.where(ok, zbuf[np.maximum(cell, 0)], np.inf)
    hidden = behind_camera | (ok & (body_cam[:, 2] > surface + HIDDEN_MARGIN_M))
    return float(hidden.mean())


def check_body_in_view(
    vertices_world: np.ndarray,
    points_world: np.ndarray,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    name: str,
) -> float:
    """Raise `InputError` when the scan hides most of the body from the camera.

    Returns:
        The hidden share (`hidden_body_fraction`).
    """
    hidden = hidden_body_fraction(vertices_world, points_world, K, T_w2c, image_size)
    if hidden > MAX_HIDDEN_FRACTION:
        raise InputError(
            f"frame {name}: the scan hides {hidden:.0%} of the body from the camera (the body "
            "lands behind walls or floors the camera sees): the camera (world-to-camera, not "
            "camera-to-world; facing the person) or the person box is probably wrong; "
            "--force keeps it"
        )
    return hidden


def _report(summary: dict[str, Any]) -> None:
    """One line per frame on stdout."""
    parts = [f"{summary['frame']}: root {summary['root_world']}"]
    pen = summary.get("penetration")
    if pen:
        parts.append(f"PenE {pen['pene_mm']:.0f} mm ({pen['pen_fraction_percent']:.1f}% of "
                     "vertices inside)")
    gt = summary.get("gt_errors")
    if gt:
        parts.append(f"G-MPVE {gt['g_mpve_mm']:.0f} mm, root error {gt['root_error_mm']:.0f} mm"
                     f", PA-MPVE {gt['pa_mpve_mm']:.0f} mm")
    parts.append(f"predict {summary['timings_s'].get('predict', 0.0) * 1000:.0f} ms")
    print("; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sahmr-demo``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        status = run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return EXIT_ERROR
    logger.info("done in %.1f s", time.perf_counter() - start)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
