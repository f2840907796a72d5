"""The demo CLI: happy path on a bundled room, batch mode, bad input -> exit 2, no output."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

import sahmr
from sahmr.cli.demo import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARTIAL, main
from sahmr.inference.camera_io import CameraSpec, load_camera, save_camera
from sahmr.synth.bundled import bundled_scene_dir

ROOT = Path(sahmr.__file__).resolve().parent.parent
DEMO = bundled_scene_dir("living_room") / "demo"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight SA-HMR (+ RCNet) built from the shipped configs with tiny widths."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sahmr.engine.checkpoint import save_checkpoint

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        mesh = compose("train", overrides=[
            "model=sahmr_small", "loss=sahmr", "exp_name=t",
            "model.mesh_net.backbone.out_stride=8", "model.mesh_net.encoder.widths=[16,16,8]",
            "model.mesh_net.encoder.num_layers=1", "model.mesh_net.encoder.num_heads=2"])
        rc = compose("train", overrides=[
            "model=rcnet_small", "loss=rcnet", "exp_name=t", "model.unet.channels=[8,8,8,8]",
            "model.neck.out_channels=8", "model.depth_hidden=16"])  # unet: 3 + 8 input channels
    cfg = OmegaConf.create({"body": mesh.body, "model": mesh.model})
    cfg.model.rcnet = rc.model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model=instantiate(cfg.model), config=cfg)
    return path


@pytest.fixture(scope="module")
def common(tiny_checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    # Boxes from the <stem>.bbox.json sidecars (a later --bbox wins); detection without
    # --bbox is tested in tests/detect/test_demo_detection.py.
    return ["--checkpoint", str(tiny_checkpoint), "--cache-dir", str(cache), "--sdf-voxel",
            "0.05", "--scene-voxel", "0.04", "--view-size", "160", "120", "-q",
            "--bbox", "sidecar"]


def _copy_frame(name: str, dst: Path, *, bbox: bool = True, camera: bool = True) -> Path:
    shutil.copy(DEMO / f"{name}.jpg", dst / f"{name}.jpg")
    if camera:
        shutil.copy(DEMO / f"{name}.camera.json", dst / f"{name}.camera.json")
    if bbox:
        shutil.copy(DEMO / f"{name}.bbox.json", dst / f"{name}.bbox.json")
    return dst / f"{name}.jpg"


# The random-weight model's body lies half under the floor, which the room's solid ground
# counts as inside the scan: --force keeps such a frame (the refusal itself is tested in
# test_demo_camera_checks.py).
FORCE = ["--force"]


def test_single_image_happy_path(common, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([*common, *FORCE, "--image", str(DEMO / "stand.jpg"), "--out", str(out)])
    assert rc == EXIT_OK, capsys.readouterr().err
    names = {"body_world.ply", "body_world.obj", "body_params.npz", "contacts.json",
             "overlay.png", "scene_views.png", "summary.json", "scene_body.glb"}
    assert {p.name for p in out.iterdir()} == names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "sahmr.demo"
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert summary["scene"]["name"] == "living_room" and summary["frustum_points"] > 0
    for stage in ("read_image", "prepare_inputs", "predict", "render_overlay",
                  "render_scene_views"):
        assert summary["timings_s"][stage] >= 0
    assert {"load_method", "downsample_scene"} <= set(summary["shared_timings_s"])
    assert summary["penetration"]["pen_count"] >= 0 and "pene_mm" in summary["penetration"]
    assert summary["ground_shift_m"] >= 0.0  # slid back onto the living room's floor, if under
    assert summary["gt_errors"]["g_mpve_mm"] > 0  # the bundled frame's ground truth is scored
    with np.load(out / "body_params.npz", allow_pickle=False) as z:
        V = z["vertices"].shape[0]
        assert z["vertices"].shape == z["vertices_cam"].shape == (V, 3) and V > 1000
        T = z["T_w2c"]
        np.testing.assert_allclose(z["vertices_cam"], z["vertices"] @ T[:3, :3].T + T[:3, 3],
                                   atol=1e-4)
    assert len(trimesh.load(out / "body_world.ply", process=False).vertices) == V
    contacts = json.loads((out / "contacts.json").read_text())
    pts = np.asarray(contacts["predicted_contact_points"]["points_world"]).reshape(-1, 3)
    assert len(pts) == len(contacts["predicted_contact_points"]["region"])
    assert np.isfinite(contacts["root_world"]).all()
    with Image.open(out / "overlay.png") as im:
        assert im.size == (640, 480)
    views = np.asarray(Image.open(out / "scene_views.png"))
    assert views.shape[1] == 4 + 3 * 164 and views.std() > 10
    assert "stand:" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_batch_mode_goes_on_after_a_failing_item(common, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    _copy_frame("stand", frames)
    bad = _copy_frame("sit_sofa", frames, bbox=False)
    (frames / f"{bad.stem}.bbox.json").write_text('{"bbox": [700, 500, 800, 600]}')
    shutil.copy(DEMO / "stand.jpg", frames / "nocam.jpg")  # no camera file for it
    out = tmp_path / "out"
    rc = main([*common, *FORCE, "--image", str(frames), "--out", str(out)])
    assert rc == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "sit_sofa" in err and "outside" in err and "no camera for nocam.jpg" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "stand", "summary.csv", "summary.json", "summary.md"]
    assert (out / "stand" / "overlay.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["succeeded"] == 1 and len(summary["failed"]) == 2
    rows = {r["frame"]: r for r in summary["table"]}
    assert rows["stand"]["status"] == "ok" and rows["sit_sofa"]["status"] == "failed"
    assert "frame,status" in (out / "summary.csv").read_text().splitlines()[0]


def _blind_camera(path: Path) -> Path:
    cam = load_camera(DEMO / "stand.camera.json")
    T = cam.T_w2c.copy()
    T[2, 3] -= 50.0  # moved 50 m forward: the whole room is behind it
    return save_camera(path, CameraSpec(K=cam.K, T_w2c=T, image_size=(640, 480)))


def _resized_camera(path: Path) -> Path:
    cam = load_camera(DEMO / "stand.camera.json")
    return save_camera(path, CameraSpec(K=cam.K, T_w2c=cam.T_w2c, image_size=(1280, 960)))


def _box_scene(tmp: Path) -> list[str]:
    """A 1 m box seen on the left of an identity camera; the bbox is on the right."""
    box = trimesh.creation.box([1.0, 1.0, 1.0],
                               trimesh.transformations.translation_matrix([-1.0, 0.0, 3.0]))
    box.export(tmp / "box.ply")
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    save_camera(tmp / "id.json", CameraSpec(K=K, T_w2c=np.eye(4), image_size=(640, 480)))
    return ["--scene", str(tmp / "box.ply"), "--camera", str(tmp / "id.json"),
            "--bbox", "420,100,520,400"]


def _mm_scene(tmp: Path) -> list[str]:
    mesh = trimesh.load(bundled_scene_dir("living_room") / "mesh.ply", process=False)
    mesh.apply_scale(1000.0)
    mesh.export(tmp / "mm.ply")
    return ["--scene", str(tmp / "mm.ply")]


BAD_INPUTS = {
    "missing image": (lambda t: ["--image", str(t / "none.jpg")], "image not found"),
    "unreadable image": (
        lambda t: ["--image", str(_write(t / "x.jpg", b"garbage")), "--camera",
                   str(DEMO / "stand.camera.json"), "--bbox", "10,10,100,200"],
        "cannot be read"),
    "missing camera": (lambda t: ["--image", str(_copy_frame("stand", t, camera=False))],
                       "no camera for stand.jpg"),
    "missing bbox file": (lambda t: ["--image", str(DEMO / "stand.jpg"), "--bbox",
                                     str(t / "b.json")], "bbox file not found"),
    "scan in millimetres": (lambda t: [*_mm_scene(t), "--image", str(DEMO / "stand.jpg")],
                            "--scale 0.001"),
    "camera does not see the scan": (
        lambda t: ["--image", str(DEMO / "stand.jpg"), "--camera",
                   str(_blind_camera(t / "c.json"))], "lies 43.4 m outside the scan"),
    "empty frustum": (lambda t: [*_box_scene(t), "--image", str(DEMO / "stand.jpg")],
                      "meet the scan between 0.3 and 30 m in 0% of the box"),
    "bbox outside the image": (lambda t: ["--image", str(DEMO / "stand.jpg"), "--bbox",
                                          "700,500,800,600"], "outside the 640x480 image"),
    "mismatched image size": (
        lambda t: ["--image", str(DEMO / "stand.jpg"), "--camera",
                   str(_resized_camera(t / "c.json"))], "--camera-scale 0.5"),
    "missing checkpoint": (lambda t: ["--image", str(DEMO / "stand.jpg"), "--checkpoint",
                                      str(t / "none.pt")], "checkpoint not found"),
    "unknown scene": (lambda t: ["--scene", "kitchen"], "no bundled scene"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_non_zero_and_writes_nothing(case, common, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    rc = main([*common, *make_args(inputs), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT
    assert err.startswith("error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no output, no temp


def test_missing_shipped_checkpoint_is_named(tmp_path, capsys):
    """A method without a shipped file (HMR: its lease has not trained one yet) gets one line
    naming the files looked for and the experiments that would train one."""
    for method in ("no_such_method", "hmr"):
        rc = main(["--method", method, "--out", str(tmp_path / "o"), "-q"])
        assert rc == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert f"neither {method}_small.pt nor {method}.pt" in err
        assert f"exp={method}_small or exp={method})" in err and "--checkpoint PATH" in err
        assert not (tmp_path / "o").exists()


def test_foreign_output_folder_is_not_replaced(common, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    rc = main([*common, "--image", str(DEMO / "stand.jpg"), "--out", str(out)])
    assert rc == EXIT_BAD_INPUT and "--overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"


def test_tool_script_help():
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert res.returncode == 0 and "--camera" in res.stdout and "--bbox" in res.stdout


def test_scene_slide_moves_the_whole_body_along_its_ray(common, tmp_path, capsys):
    """By default each body slides along its camera ray out of the scan where that pays
    (`sahmr.scene.ray_slide`): the body written with the slide is the one without it moved
    rigidly by ``scene_slide_m``, along the ray through its centre, and its parameters move
    with it; ``--no-scene-slide`` leaves it. (The joints' bending, which follows the slide, is
    off here: it is tested below.)"""
    outs = {}
    for flag in ([], ["--no-scene-slide"], ["--scene-slide-cost", "0"]):
        out = tmp_path / f"out{len(outs)}"
        rc = main([*common, *FORCE, "--image", str(DEMO / "stand.jpg"), "--out", str(out),
                   "--no-depenetrate", *flag])  # fmt: skip
        assert rc == EXIT_OK, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        with np.load(out / "body_params.npz", allow_pickle=False) as z:
            outs[tuple(flag)] = (summary, z["vertices"].astype(np.float64), z["transl"].copy(),
                                 z["T_w2c"].copy())  # fmt: skip
    still, v0, transl0, T = outs[("--no-scene-slide",)]
    assert still["scene_slide_m"] == 0.0 and "scene_slide" not in still["timings_s"]
    camera = -T[:3, :3].T @ T[:3, 3]
    ray = v0.mean(0) - camera
    ray /= np.linalg.norm(ray)
    for flag in ((), ("--scene-slide-cost", "0")):
        summary, v, transl, _ = outs[flag]
        assert "scene_slide" in summary["timings_s"]
        shift = (v - v0).mean(0)
        np.testing.assert_allclose(v - v0, np.broadcast_to(shift, v.shape), atol=1e-4)
        assert np.linalg.norm(shift) == pytest.approx(summary["scene_slide_m"], abs=1e-4)
        np.testing.assert_allclose(shift, ray * (shift @ ray), atol=1e-4)  # along the ray
        np.testing.assert_allclose(transl - transl0, shift, atol=1e-4)
    # at no price the least-penetrating place wins: never more penetration than left alone
    free = outs[("--scene-slide-cost", "0")][0]
    assert free["penetration"]["pene_mm"] <= still["penetration"]["pene_mm"] + 1e-6


def test_depenetrate_bends_joints_only_and_never_adds_penetration(common, tmp_path, capsys):
    """``--depenetrate`` (on by default; `sahmr.scene.depenetrate`, tested in detail there):
    the body's root rotation, translation and shape are those of ``--no-depenetrate``; only
    ``body_pose`` may change, and the penetration never grows; the summary says whether it
    acted. The shipped SA-HMR, whose seated body on this frame sinks its thighs into the sofa
    (PenE 358 mm without it)."""
    cache = common[common.index("--cache-dir") + 1]
    shipped = ["--cache-dir", cache, "--view-size", "160", "120", "-q", "--bbox", "sidecar"]
    outs = {}
    for flag in (["--no-depenetrate"], []):
        out = tmp_path / f"out{len(outs)}"
        rc = main([*shipped, *FORCE, "--image", str(DEMO / "sit_sofa.jpg"), "--out", str(out),
                   *flag])  # fmt: skip
        assert rc == EXIT_OK, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        with np.load(out / "body_params.npz", allow_pickle=False) as z:
            outs[not flag] = (summary, {k: z[k].copy() for k in z.files})
    (plain, p0), (bent, p1) = outs[False], outs[True]
    assert plain["depenetrated"] is False and bent["depenetrated"] is True
    for key in ("betas", "global_orient", "transl"):
        np.testing.assert_allclose(p1[key], p0[key], atol=1e-6)
    assert not np.allclose(p1["body_pose"], p0["body_pose"])
    assert "depenetrate" in bent["timings_s"] and "depenetrate" not in plain["timings_s"]
    assert bent["penetration"]["pene_mm"] < 0.5 * plain["penetration"]["pene_mm"]


def test_a_photo_stored_turned_with_its_exif_tag_gives_the_same_body(common, tmp_path, capsys):
    """A phone stores the sensor's rows and tags how to show them (EXIF orientation 6: turn by
    90 degrees clockwise). The bundled frame stored that way, with the camera and the box of
    the picture as shown, must give the body the untagged picture gives (lossless PNGs)."""
    from sahmr.inference.images import EXIF_ORIENTATION_TAG, orient

    shown = np.asarray(Image.open(DEMO / "stand.jpg").convert("RGB"))
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # turned back: the sensor's rows
    np.testing.assert_array_equal(orient(stored, 6), shown)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    bodies = []
    for name, pixels, extra in (("plain", shown, {}), ("phone", stored, {"exif": exif.tobytes()})):
        folder = tmp_path / name
        folder.mkdir()
        Image.fromarray(pixels).save(folder / "stand.png", **extra)
        shutil.copy(DEMO / "stand.camera.json", folder / "stand.camera.json")
        shutil.copy(DEMO / "stand.bbox.json", folder / "stand.bbox.json")
        out = tmp_path / f"out_{name}"
        rc = main([*common, *FORCE, "--image", str(folder / "stand.png"), "--out", str(out)])
        assert rc == EXIT_OK, capsys.readouterr().err
        with np.load(out / "body_params.npz", allow_pickle=False) as z:
            bodies.append(z["vertices"].copy())
        with Image.open(out / "overlay.png") as im:
            assert im.size == (640, 480)  # the picture as shown
    np.testing.assert_array_equal(bodies[0], bodies[1])
