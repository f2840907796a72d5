"""tools/fit.py with detector keypoints: the keypoint file, its checks, confidences as weights."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sahmr.detect.runtime import detector_available

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(path: Path, names, found, split="val", **extra) -> Path:
    n = len(names)
    data = dict(names=np.asarray(names), found=np.asarray(found, bool),
                joints_smpl24=np.arange(n * 48, dtype=np.float32).reshape(n, 24, 2),
                confidence_smpl24=np.full((n, 24), 0.5, np.float32), split=np.asarray(split))
    data.update(extra)
    np.savez(path, **data)
    return path


def test_keypoint_file_lookup_and_checks(tmp_path):
    fit = _tool("fit")
    f = fit.KeypointFile(_write(tmp_path / "k.npz", ["val-000003", "val-000001"], [1, 0]),
                         "smpl24", "val")
    joints, conf, found = f.get(["val-000001", "val-000003"])
    np.testing.assert_array_equal(found, [False, True])
    assert joints[1, 0, 1] == 1.0 and conf.shape == (2, 24)  # row 0 of the file
    f.check_covers(["val-000001"])
    with pytest.raises(SystemExit, match="no keypoints for 1 of the 2 frames"):
        f.check_covers(["val-000001", "val-000002"])
    with pytest.raises(SystemExit, match="not --split 'test'"):
        fit.KeypointFile(tmp_path / "k.npz", "smpl24", "test")
    with pytest.raises(SystemExit, match="no joints_lsp14, confidence_lsp14"):
        fit.KeypointFile(tmp_path / "k.npz", "lsp14", "val")


def test_bad_keypoint_arguments_exit_2(tmp_path, capsys):
    fit = _tool("fit")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_text("{}")
    kp = _write(tmp_path / "k.npz", ["val-000000"], [1])
    base = ["--dataset", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    for extra, message in [
        (["--keypoints", "gt", "--keypoints-file", str(kp)], "not with --keypoints gt"),
        (["--keypoints-file", str(tmp_path / "none.npz")], "no such file"),
        (["--keypoints-file", str(kp), "--keypoint-noise-px", "2"], "gt only"),
    ]:
        with pytest.raises(SystemExit) as exc:
            fit.main([*base, *extra])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # generates a tiny dataset and builds a room SDF: ~20 s on the shared CPU
def test_fit_on_a_keypoint_file(tmp_path):
    import torch

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.geometry.cameras import project, transform_points
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    cfg = GenerationConfig.from_dict(
        dict(out_dir=str(tmp_path / "data"), num_samples=2, samples_per_shard=2, seed=1,
             workers=0, placer="standing", views_per_body=2,
             splits={"val": dict(fraction=1, bundled=["gym"])}))
    generate(cfg, progress=False)
    ds = SyntheticDataset(tmp_path / "data", "val")
    joints = []
    for i in range(2):  # "detections": the projected truth, one joint far off at weight 0
        s = ds[i]
        cam = transform_points(torch.as_tensor(s.T_w2c)[None],
                               torch.as_tensor(s.joints_world)[None])
        joints.append(project(torch.as_tensor(s.extra["K_crop"])[None], cam)[0].numpy())
    joints = np.stack(joints).astype(np.float32)
    joints[:, 20] += 80.0
    conf = np.ones((2, 24), np.float32)
    conf[:, 20] = 0.0
    kp = tmp_path / "kp.npz"
    np.savez(kp, names=np.asarray(["val-000000", "val-000001"]), found=np.array([True, False]),
             joints_smpl24=joints, confidence_smpl24=conf, split=np.asarray("val"))
    out = tmp_path / "out"
    iters = [f"stages.{i}.iterations=3" for i in range(4)]
    code = _tool("fit").main([
        "--dataset", str(tmp_path / "data"), "--split", "val", "--out", str(out),
        "--keypoints-file", str(kp), "--sdf-voxel-size", "0.1", "--sdf-cache-dir",
        str(tmp_path / "sdf"), "--no-progress", "--no-eval", *iters])
    assert code == 0
    log = json.loads((out / "fit_log.json").read_text())
    assert log["frames"] == 1 and log["frames_without_person"] == ["val-000001"]
    assert log["keypoints"].startswith("detector smpl24")
    assert [p.stem for p in (out / "predictions").glob("*.npz")] == ["val-000000"]


def test_detect_keypoints_tool_rejects_bad_arguments(tmp_path, capsys):
    tool = _tool("detect_keypoints")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_text("{}")
    for argv, message in [
        (["--dataset", str(tmp_path / "none")], "no dataset.json"),
        (["--dataset", str(tmp_path / "d")], "nothing to do"),
        (["--dataset", str(tmp_path / "d"), "--out", str(tmp_path / "k.json")], "must end in"),
        (["--dataset", str(tmp_path / "d"), "--out", str(tmp_path / "k.npz"), "--chunk", "0"],
         "must be positive"),
    ]:
        with pytest.raises(SystemExit) as exc:
            tool.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.slow  # a tiny dataset, the detector and a short fit: ~30 s on the shared CPU
@pytest.mark.skipif(not detector_available(),
                    reason="mediapipe is not installed in its private site (bash tools/install.sh)")
def test_detector_keypoints_end_to_end(tmp_path):
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    cfg = GenerationConfig.from_dict(
        dict(out_dir=str(tmp_path / "data"), num_samples=2, samples_per_shard=2, seed=1,
             workers=0, placer="standing", views_per_body=2,
             splits={"val": dict(fraction=1, bundled=["gym"])}))
    generate(cfg, progress=False)
    kp, report = tmp_path / "kp.npz", tmp_path / "r.json"
    assert _tool("detect_keypoints").main([
        "--dataset", str(tmp_path / "data"), "--split", "val", "--out", str(kp), "--report",
        str(report), "--no-progress"]) == 0
    with np.load(kp, allow_pickle=False) as z:
        assert z["joints_smpl24"].shape == (2, 24, 2) and z["landmarks"].shape == (2, 33, 4)
        assert list(z["names"]) == ["val-000000", "val-000001"] and str(z["image"]) == "crop"
        found = z["found"]
    rep = json.loads(report.read_text())["sets"]["smpl24"]
    assert rep["frames"] == 2 and rep["found"] == int(found.sum())
    out = tmp_path / "out"
    iters = [f"stages.{i}.iterations=3" for i in range(4)]
    assert _tool("fit").main([  # the detector run here, on the crops
        "--dataset", str(tmp_path / "data"), "--split", "val", "--out", str(out),
        "--keypoints", "detector", "--no-scene", "--no-progress", "--no-eval", *iters]) == 0
    log = json.loads((out / "fit_log.json").read_text())
    assert log["frames"] + len(log["frames_without_person"]) == 2
    assert log["keypoints"] == "detector smpl24 (mediapipe, confidences as weights)"
