"""The demo refuses wrong cameras of the bundled frames before any model runs (one line, exit
2, nothing written), from the geometry or, where that passes, from the image; the bundled
frames' own cameras pass (the demo's run on them: tests/cli/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sahmr.cli.demo import EXIT_BAD_INPUT, main
from sahmr.inference.camera_io import CameraSpec, load_camera, read_bbox_file, save_camera
from sahmr.inference.errors import CameraError
from sahmr.inference.frames import FrameSpec, check_frame_camera
from sahmr.inference.scene import load_scene_data
from sahmr.scene.image_alignment import alternative_cameras
from sahmr.synth.bundled import bundled_scene_dir

VOXEL = "0.04"  # coarser than the demo's 2 cm: fast, and the checks hold at both
FRAMES = [("living_room", "stand"), ("living_room", "sit_sofa"), ("office", "sit_chair")]


def _inverse(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def _turned(T: np.ndarray) -> np.ndarray:
    """The camera turned 180 degrees about the vertical (world z) through its centre."""
    c2w = _inverse(T)
    c2w[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ c2w[:3, :3]
    return _inverse(c2w)


def _moved(T: np.ndarray, centre) -> np.ndarray:
    c2w = _inverse(T)
    c2w[:3, 3] = centre
    return _inverse(c2w)


WRONG = {
    # the living room spans x -3.6..3.6, y -2.3..2.3, z 0..2.8; "stand" looks from x < 0
    "camera-to-world given": ("stand", _inverse,
                              "the extrinsics look like camera-to-world (up axis points down in "
                              "the image; their inverse passes these checks); pass "
                              "world-to-camera, or its inverse"),
    "upside down": ("stand", lambda T: np.diag([-1.0, -1.0, 1.0, 1.0]) @ T,
                    "the scan's up axis points 164 deg from image-up"),
    "outside the room": ("stand", lambda T: _moved(T, [-5.0, 0.0, 1.5]),
                         "lies 0.9 m outside the scan"),
    "turned to the wall behind it": ("sit_sofa", _turned,
                                     "the rays through the person box meet the scan between "
                                     "0.3 and 30 m in 0% of the box"),
}


def _refused_line(stem: str, wrong, tmp_path: Path, capsys) -> tuple[str, Path]:
    """Runs the demo on a bundled frame with its camera changed by ``wrong``; checks that it
    is refused (exit 2, one line ending in the --force hint, nothing written) and returns the
    line and the camera file it names."""
    demo = bundled_scene_dir("living_room") / "demo"
    cam = load_camera(demo / f"{stem}.camera.json")
    (tmp_path / "inputs").mkdir()
    path = save_camera(tmp_path / "inputs" / "cam.json",
                       CameraSpec(K=cam.K, T_w2c=wrong(cam.T_w2c), image_size=cam.image_size))
    out = tmp_path / "out"
    rc = main(["--image", str(demo / f"{stem}.jpg"), "--camera", str(path), "--bbox", "sidecar",
               "--scene-voxel", VOXEL, "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
               "-q", "--out", str(out)])
    assert rc == EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].endswith("; --force goes on anyway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "inputs"]  # nothing written
    return lines[0], path


@pytest.mark.parametrize("case", sorted(WRONG))
def test_demo_refuses_a_wrong_camera_before_any_work(case, tmp_path, capsys):
    stem, wrong, message = WRONG[case]
    line, path = _refused_line(stem, wrong, tmp_path, capsys)
    assert line.startswith(f"error: camera {path}: ") and message in line, line


IMAGE_WRONG = {
    # wrong cameras that pass the geometric checks: the image tells
    "camera-to-world given": ("sit_sofa", _inverse,
                              "its inverse (the extrinsics look like camera-to-world) lines up "
                              "better"),
    "turned 90 deg": ("stand", lambda T: alternative_cameras(T)["turned 90 deg"],
                      "the camera turned 270 deg about the up axis lines up better"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_WRONG))
def test_demo_refuses_a_camera_whose_scan_view_does_not_line_up_with_the_image(
        case, tmp_path, capsys):
    stem, wrong, message = IMAGE_WRONG[case]
    line, path = _refused_line(stem, wrong, tmp_path, capsys)
    assert line.startswith(f"error: camera {path}: the scan seen from this camera does not "
                           "line up with the image (edge alignment "), line
    assert message in line, line


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {name: load_scene_data(bundled_scene_dir(name) / "mesh.ply", voxel_size=float(VOXEL),
                                  cache_dir=cache) for name in ("living_room", "office")}


@pytest.mark.parametrize("scene, stem", FRAMES)
def test_bundled_demo_cameras_pass_and_their_wrong_forms_do_not(scenes, scene, stem):
    demo = bundled_scene_dir(scene) / "demo"
    cam = load_camera(demo / f"{stem}.camera.json")
    frame = FrameSpec(stem, demo / f"{stem}.jpg", cam, read_bbox_file(demo / f"{stem}.bbox.json"))
    check_frame_camera(frame, scenes[scene])
    for wrong in (lambda T: np.diag([-1.0, -1.0, 1.0, 1.0]) @ T,  # upside down
                  lambda T: _moved(T, [0.0, 6.0, 1.5])):  # behind a long wall
        bad = FrameSpec(stem, frame.image_path, CameraSpec(K=cam.K, T_w2c=wrong(cam.T_w2c)),
                        frame.bbox)
        with pytest.raises(CameraError, match=f"^camera of frame {stem}: "):
            check_frame_camera(bad, scenes[scene])
    for T in alternative_cameras(cam.T_w2c).values():  # geometry passes some: not the image
        bad = FrameSpec(stem, frame.image_path, CameraSpec(K=cam.K, T_w2c=T), frame.bbox)
        with pytest.raises(CameraError, match=f"^camera of frame {stem}: "):
            check_frame_camera(bad, scenes[scene])


def test_bundled_frames_are_the_ones_checked():
    found = sorted((p.parent.parent.name, p.name.split(".")[0])
                   for name in ("living_room", "office")
                   for p in Path(bundled_scene_dir(name), "demo").glob("*.camera.json"))
    assert found == sorted(FRAMES)


@pytest.mark.parametrize("share, refused", [(None, False), (7.4, False), (20.0, False),
                                            (28.1, True)])
def test_body_mostly_inside_the_scan_is_refused(share, refused):
    """The bundled "stand" frame's camera turned 180 degrees puts the body into the wall
    behind it: 28 % of its vertices inside (the bundled frames: 0.3-7.4 %)."""
    from sahmr.cli.demo import check_body_not_inside_scan
    from sahmr.inference.errors import InputError

    pen = None if share is None else {"pen_fraction_percent": share}
    if refused:
        with pytest.raises(InputError, match=r"^frame f: 28% of the body's vertices lie inside "
                                             r"the scan \(at most 20%\).*; --force keeps it$"):
            check_body_not_inside_scan(pen, "f")
    else:
        check_body_not_inside_scan(pen, "f")


def test_root_behind_the_camera_is_refused():
    from sahmr.cli.demo import check_root_inside_scan
    from sahmr.inference.errors import InputError

    room = np.array([[-3.0, -2, 0], [3, 2, 2.8]])
    T = np.eye(4)  # camera at the origin looking along +z (up)
    check_root_inside_scan(np.array([0.0, 0.0, 1.0]), room, "f", T)
    with pytest.raises(InputError, match=r"^frame f: the body does not land in front of the "
                                         r"camera \(root \[0\.0, 0\.0, 0\.05\] at depth "
                                         r"0\.05 m; at least 0\.1 m\).*--force"):
        check_root_inside_scan(np.array([0.0, 0.0, 0.05]), room, "f", T)
    check_root_inside_scan(np.array([0.0, 0.0, 0.05]), room, "f")  # no camera: not judged
