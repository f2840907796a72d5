"""Hostile input to the command-line tools: one line naming the input, exit 2, nothing written.

One parametrised test per class of bad input (crafted or pickled checkpoints, refused pickles,
unwritable outputs, bad sizes, missing data, unavailable devices). Every tool runs in this
process through its own entry point; every case stops in the tool's up-front checks, so the
whole file runs in seconds.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import sahmr
from sahmr.engine.checkpoint import FORMAT, VERSION

ROOT = Path(sahmr.__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
SHIPPED = ROOT / "sahmr" / "checkpoints" / "sahmr_small.pt"
DEMO_IMAGE = ROOT / "scenes" / "living_room" / "demo" / "stand.jpg"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"bad_input_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- bad files


def crafted_checkpoint(folder: Path) -> Path:
    """A checkpoint whose stored model would write ``folder/pwned.txt`` when built."""
    cfg = {"model": {"_target_": "sahmr.models.hmr.HMR", "backbone": {
        "_target_": "numpy.savetxt", "fname": str(folder / "pwned.txt"), "X": [[1.0]]}}}
    path = folder / "crafted.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": {},
                "config": OmegaConf.to_yaml(OmegaConf.create(cfg))}, path)  # fmt: skip
    return path


def pickled_checkpoint(folder: Path) -> Path:
    """A torch file holding a pickled Python object (refused by ``weights_only``)."""
    path = folder / "pickled.pt"
    torch.save({"format": FORMAT, "version": VERSION, "model": {},
                "obj": argparse.Namespace(a=1)}, path)  # fmt: skip
    return path


def garbage_file(folder: Path, name: str = "garbage.pt") -> Path:
    path = folder / name
    path.write_bytes(b"not a checkpoint at all" * 7)
    return path


def pickle_body(folder: Path) -> Path:
    """A ``.pkl`` that would call ``os.system`` if unpickled without restriction."""
    path = folder / "SMPL_NEUTRAL.pkl"

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path.write_bytes(pickle.dumps({"v_template": Boom()}))
    return path


def fake_dataset(folder: Path, *, with_shard: bool = False) -> Path:
    """A dataset folder of split ``test`` whose one shard is missing unless ``with_shard``
    (then an empty tar file)."""
    root = folder / "ds"
    root.mkdir()
    meta = {"format": "sahmr.synth_dataset", "scenes": {},
            "shards": [{"split": "test", "file": "shards/test-0.tar", "num_samples": 1}]}
    (root / "dataset.json").write_text(json.dumps(meta))
    if with_shard:
        (root / "shards").mkdir()
        with tarfile.open(root / "shards" / "test-0.tar", "w"):
            pass  # an empty tar: passes the shard check
    return root


def file_in_the_way(folder: Path) -> Path:
    blocker = folder / "blocker"
    blocker.write_text("a file where a folder should be")
    return blocker / "out"


# ---------------------------------------------------------------------------- hydra tools


def _run_hydra_cli(name: str, overrides: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(TOOLS / f"{name}.py"), *overrides,
                                      "hydra/job_logging=none", "hydra/hydra_logging=none"])
    module = _tool(name)
    monkeypatch.setattr(module.main.__wrapped__, "__module__", "__main__")
    module.cli()


def _eval_case(case: str, t: Path) -> tuple[list[str], str]:
    ds = fake_dataset(t)
    base = {"checkpoint": str(SHIPPED), "data.root": str(ds), "out": str(t / "out"),
            "device": "cpu"}  # fmt: skip
    cases = {
        "crafted checkpoint": ({"checkpoint": crafted_checkpoint(t)},
                               "refused _target_ 'numpy.savetxt'"),
        "pickled checkpoint": ({"checkpoint": pickled_checkpoint(t)},
                               "pickled Python objects (argparse.Namespace)"),
        "garbage checkpoint": ({"checkpoint": garbage_file(t)}, "not a readable checkpoint"),
        "missing checkpoint": ({"checkpoint": t / "none.pt"}, "none.pt: no such file"),
        "missing data root": ({"data.root": t / "nowhere"}, f"data.root={t / 'nowhere'}: no such"),
        "data root without dataset.json": ({"data.root": t}, "no dataset.json"),
        "unknown split": ({"split": "tset"}, "split=tset: "),
        "zero batch": ({"batch_size": 0}, "batch_size=0: must be >= 1"),
        "negative batch": ({"batch_size": -4}, "batch_size=-4: must be >= 1"),
        "text batch": ({"batch_size": "many"}, "batch_size='many': not an integer"),
        "fraction batch": ({"batch_size": 2.5}, "batch_size=2.5: not an integer"),
        "negative workers": ({"num_workers": -1}, "num_workers=-1: must be >= 0"),
        "zero voxel": ({"sdf_voxel_size": 0}, "sdf_voxel_size=0: must be > 0"),
        "nan voxel": ({"sdf_voxel_size": "nan"}, "not a finite number"),
        "unknown device": ({"device": "tpu"}, "device=tpu"),
        "out under a file": ({"out": file_in_the_way(t)}, "is a file, not a folder"),
        "unknown key": ({"no_such_key": 1}, "bad override"),
        "unknown joint set": ({"joint_set": "bogus"}, "joint_set=bogus: must be one of"),
        "negative slide cost": ({"scene_slide": "true", "scene_slide_cost": -2},
                                "scene_slide_cost=-2: must be a number >= 0"),
        "text slide cost": ({"scene_slide": "true", "scene_slide_cost": "far"},
                            "scene_slide_cost=far: must be a number >= 0"),
        "depenetrate not a switch": ({"scene_depenetrate": "maybe"},
                                     "scene_depenetrate=maybe: must be true or false"),
        "model setting without a value": ({"model_settings": "[flip]"},
                                          "model_settings=['flip']: setting 'flip': expected "
                                          "KEY=VALUE"),
        "unknown model option": ({"model_settings": '["model.flip_tset=true"]'}, "flip_tset"),
        "corrupt shard": ({}, "1 shard(s) of split test are missing or unreadable"),
        "missing shard": ({}, "1 shard(s) of split test are missing or unreadable "
                              "(shards/test-0.tar)"),
    }
    if not torch.cuda.is_available():
        cases["cuda without CUDA"] = ({"device": "cuda"}, "CUDA is not available")
    change, message = cases[case]
    base.update({k: str(v) for k, v in change.items()})
    if case != "missing shard":  # a shard on disk: a tar, or garbage for "corrupt shard"
        (ds / "shards").mkdir()
        if case == "corrupt shard":
            (ds / "shards" / "test-0.tar").write_bytes(b"not a tar" * 200)
        else:
            with tarfile.open(ds / "shards" / "test-0.tar", "w"):
                pass
    return [f"{k}={v}" for k, v in base.items()], message


EVAL_CASES = ["crafted checkpoint", "pickled checkpoint", "garbage checkpoint",
              "missing checkpoint", "missing data root", "data root without dataset.json",
              "unknown split", "zero batch", "negative batch", "text batch", "fraction batch",
              "negative workers", "zero voxel", "nan voxel", "unknown device", "out under a file",
              "unknown key", "cuda without CUDA", "missing shard", "unknown joint set",
              "negative slide cost", "text slide cost", "corrupt shard",
              "model setting without a value", "unknown model option"]  # fmt: skip


def _one_error_line(err: str, message: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    return lines[0]


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_tool_refuses_bad_input_before_writing(case, tmp_path, monkeypatch, capsys):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    overrides, message = _eval_case(case, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as info:
        _run_hydra_cli("eval_checkpoint", overrides, monkeypatch)
    assert info.value.code == 2
    _one_error_line(capsys.readouterr().err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out, no hydra folder
    assert not (tmp_path / "pwned.txt").exists()


TRAIN_CASES = ["pickled weights", "crafted is fine: weights only", "missing weights",
               "missing data root", "zero batch", "nan lr", "negative lr", "zero epochs",
               "text epochs", "negative clip", "negative warmup", "infinite weight decay",
               "damaged dataset.json"]  # fmt: skip


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_tool_refuses_bad_input_before_writing(case, tmp_path, monkeypatch, capsys):
    ds = fake_dataset(tmp_path)
    base = {"exp": "sahmr_small", "data.root": str(ds), "paths.output_dir": str(tmp_path / "run"),
            "device": "cpu"}  # fmt: skip
    change, message = {
        "pickled weights": ({"init.weights": pickled_checkpoint(tmp_path)},
                            "init.weights=" + str(tmp_path / "pickled.pt") + ": refused"),
        "crafted is fine: weights only": ({"init.weights": crafted_checkpoint(tmp_path),
                                           "trainer.batch_size": 0}, "trainer.batch_size=0"),
        "missing weights": ({"init.weights": tmp_path / "none.pt"}, "none.pt: no such file"),
        "missing data root": ({"data.root": tmp_path / "nowhere"}, "nowhere: no such folder"),
        "zero batch": ({"trainer.val_batch_size": 0}, "trainer.val_batch_size=0"),
        "nan lr": ({"trainer.lr": "nan"}, "trainer.lr=nan: must be a finite number > 0"),
        "negative lr": ({"trainer.lr": -1}, "trainer.lr=-1: must be"),
        "zero epochs": ({"trainer.max_epochs": 0}, "need max_epochs >= 1 or max_steps"),
        "text epochs": ({"trainer.max_epochs": "abc"}, "trainer.max_epochs='abc'"),
        "negative clip": ({"trainer.grad_clip": -1}, "trainer.grad_clip=-1"),
        "negative warmup": ({"trainer.warmup_steps": -5}, "trainer.warmup_steps=-5"),
        "infinite weight decay": ({"trainer.weight_decay": "inf"}, "trainer.weight_decay=inf"),
        "damaged dataset.json": ({"data.root": ds}, "without its split, file or num_samples"),
    }[case]
    if case == "damaged dataset.json":
        (ds / "dataset.json").write_text(json.dumps({"format": "sahmr.synth_dataset",
                                                     "scenes": {}, "shards": [{}]}))  # fmt: skip
    base.update({k: str(v) for k, v in change.items()})
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as info:
        _run_hydra_cli("train", [f"{k}={v}" for k, v in base.items()], monkeypatch)
    assert info.value.code == 2
    _one_error_line(capsys.readouterr().err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------------------- argparse tools


def _demo_case(case: str, t: Path) -> tuple[list[str], str]:
    return {
        "crafted checkpoint": (["--checkpoint", str(crafted_checkpoint(t))],
                               "refused _target_ 'numpy.savetxt'"),
        "pickled checkpoint": (["--checkpoint", str(pickled_checkpoint(t))],
                               f"{t / 'pickled.pt'}: refused"),
        "garbage checkpoint": (["--checkpoint", str(garbage_file(t))],
                               f"{t / 'garbage.pt'}: not a readable checkpoint"),
        "out under a file": (["--out", str(file_in_the_way(t))], "is a file, not a folder"),
    }[case]


@pytest.mark.parametrize("case", ["crafted checkpoint", "pickled checkpoint",
                                  "garbage checkpoint", "out under a file"])  # fmt: skip
def test_demo_refuses_bad_checkpoints_and_outputs(case, tmp_path, capsys):
    from sahmr.cli.demo import EXIT_BAD_INPUT, main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args, message = _demo_case(case, inputs)
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    rc = main(["--image", str(DEMO_IMAGE), "--bbox", "410,120,610,470", "--device", "cpu", "-q",
               *out, *args])
    assert rc == EXIT_BAD_INPUT
    _one_error_line(capsys.readouterr().err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]
    assert not (inputs / "pwned.txt").exists()


def _argparse_error(capsys, message: str) -> None:
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1], err


@pytest.mark.parametrize("kind", ["crafted", "pickled", "garbage"])
def test_fit_refuses_bad_init_checkpoint(kind, tmp_path, capsys):
    ckpt = {"crafted": crafted_checkpoint, "pickled": pickled_checkpoint,
            "garbage": garbage_file}[kind](tmp_path)  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _tool("fit").main(["--dataset", str(fake_dataset(tmp_path, with_shard=True)),
                           "--split", "test", "--out", str(tmp_path / "out"),
                           "--init-checkpoint", str(ckpt)])  # fmt: skip
    assert info.value.code == 2
    _argparse_error(capsys, f"--init-checkpoint {ckpt}: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned.txt").exists()


FIT_CASES = {
    "zero max frames": (["--max-frames", "0"], "--max-frames 0: must be >= 1"),
    "zero sdf voxel": (["--sdf-voxel-size", "0"], "--sdf-voxel-size 0.0: must be > 0"),
    "unknown device": (["--device", "tpu"], "--device=tpu"),
    "cuda without CUDA": (["--device", "cuda"], "CUDA is not available"),
    "out under a file": ("out", "is a file, not a folder"),
    "unknown split": (["--split", "val"], "--split val: "),
    "missing shard": ("missing shard",
                      "1 shard(s) of split test are missing or unreadable (shards/test-0.tar)"),
    "not a dataset": ("not a dataset", "no dataset.json"),
    "dataset is a file": ("dataset is a file", "no dataset.json"),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_refuses_bad_arguments(case, tmp_path, capsys):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra, message = FIT_CASES[case]
    out = file_in_the_way(tmp_path) if extra == "out" else tmp_path / "out"
    dataset = fake_dataset(tmp_path, with_shard=extra != "missing shard")
    if extra == "not a dataset":
        (dataset / "dataset.json").unlink()
    elif extra == "dataset is a file":
        dataset = dataset / "dataset.json"
    with pytest.raises(SystemExit) as info:
        _tool("fit").main(["--dataset", str(dataset), "--split", "test", "--out", str(out),
                           *(extra if isinstance(extra, list) else [])])  # fmt: skip
    assert info.value.code == 2
    _argparse_error(capsys, message)
    assert not (tmp_path / "out").exists()


def _keypoint_arrays(n: int = 3) -> dict[str, np.ndarray]:
    return {"names": np.array([f"test-{i:06d}" for i in range(n)]), "found": np.ones(n, bool),
            "joints_smpl24": np.zeros((n, 24, 2), np.float32),
            "confidence_smpl24": np.ones((n, 24), np.float32)}  # fmt: skip


KEYPOINT_FILE_CASES = {
    "too few joints": ({"joints_smpl24": np.zeros((3, 14, 2))}, "joints_smpl24 (3, 14, 2)"),
    "3-D joints": ({"joints_smpl24": np.zeros((3, 24, 3))}, "need (N,), (N,), (N, 24, 2)"),
    "rows differ": ({"confidence_smpl24": np.ones((2, 24))}, "confidence_smpl24 (2, 24)"),
    "found per joint": ({"found": np.ones((3, 24), bool)}, "found (3, 24)"),
    "nan joints": ({"joints_smpl24": np.full((3, 24, 2), np.nan)}, "NaN or infinite"),
    "text joints": ({"joints_smpl24": np.full((3, 24, 2), "a")}, "must be numbers"),
    "missing key": ({"confidence_smpl24": None}, "no confidence_smpl24"),
    "other split": ({"split": np.array("val")}, "holds split 'val', not --split 'test'"),
}


@pytest.mark.parametrize("case", sorted(KEYPOINT_FILE_CASES))
def test_fit_refuses_a_malformed_keypoints_file(case, tmp_path):
    change, message = KEYPOINT_FILE_CASES[case]
    arrays = _keypoint_arrays()
    arrays.update(change)
    path = tmp_path / "kp.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(SystemExit) as info:
        _tool("fit").KeypointFile(path, "smpl24", "test")
    text = str(info.value)
    assert text.startswith(f"--keypoints-file {path}: ") and message in text, text
    _tool("fit").KeypointFile(_save(tmp_path / "ok.npz", _keypoint_arrays()), "smpl24", "test")


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def test_fit_reads_a_split_with_a_missing_shard_only_when_asked(tmp_path, capsys):
    """With the flag the shard check passes; the tool stops later, at a split with no frames."""
    with pytest.raises(SystemExit) as info:
        _tool("fit").main(["--dataset", str(fake_dataset(tmp_path)), "--split", "test", "--out",
                           str(tmp_path / "out"), "--allow-missing-shards", "--device", "cpu",
                           "--no-progress"])  # fmt: skip
    assert info.value.code == 2
    _argparse_error(capsys, "split 'test' has no frames")
    assert not (tmp_path / "out").exists()


def _body_mesh_folder(t: Path, *, nan: bool = False) -> Path:
    """A folder holding the shipped body's template as ``a.ply`` (one NaN vertex if asked)."""
    import trimesh

    from sahmr.body import BodyModel

    body = BodyModel()
    verts = body.v_template.detach().numpy().astype(np.float64).copy()
    if nan:
        verts[0] = np.nan
    folder = t / "meshes"
    folder.mkdir()
    trimesh.Trimesh(verts, np.asarray(body.faces), process=False).export(folder / "a.ply")
    return folder


FIT_MESHES_CASES = {
    "out under a file": (lambda t: ["--out", str(file_in_the_way(t))], "is a file, not a folder"),
    "out is a file": (lambda t: ["--out", str(garbage_file(t, "o.txt"))],
                      "exists and is not a folder"),
    "nan vertex": (lambda t: ["--out", str(t / "out")], "vertices hold NaN"),
    "millimetres": (lambda t: ["--out", str(t / "out"), "--scale", "1000"], "--scale 0.001"),
    "nan scale": (lambda t: ["--out", str(t / "out"), "--scale", "nan"], "--scale nan"),
    "zero batch": (lambda t: ["--out", str(t / "out"), "--batch-size", "0"], "--batch-size 0"),
}


@pytest.mark.parametrize("case", sorted(FIT_MESHES_CASES))
def test_fit_meshes_refuses_bad_input_before_fitting(case, tmp_path, capsys):
    from sahmr.cli.fit_meshes import main

    folder = _body_mesh_folder(tmp_path, nan=case == "nan vertex")
    make, message = FIT_MESHES_CASES[case]
    args = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([str(folder), "--quiet", *args]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.ply"]


def _damaged_dataset(t: Path, change: dict) -> Path:
    root = fake_dataset(t, with_shard=True)
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(change)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


DETECT_KEYPOINTS_CASES = {
    "no scenes": (lambda t: _damaged_dataset(t, {"scenes": None}), [], "has no scenes"),
    "shard without count": (lambda t: _damaged_dataset(t, {"shards": [
        {"split": "test", "file": "shards/test-0.tar"}]}), [], "without its split, file or num"),
    "unknown split": (lambda t: fake_dataset(t, with_shard=True), ["--split", "tset"],
                      "--split tset: "),
    "missing shard": (fake_dataset, [], "1 shard(s) of split test are missing"),
    "empty shard": (lambda t: _damaged_dataset(t, {}).joinpath("shards", "test-0.tar")
                    .write_bytes(b"") or t / "ds", [], "1 shard(s) of split test are missing"),
    "out under a file": (lambda t: fake_dataset(t, with_shard=True),
                         ["--out", "BLOCKED/k.npz"], "exists and is not a folder"),
    "out is a folder": (lambda t: fake_dataset(t, with_shard=True), ["--out", "FOLDER.npz"],
                        "is a folder, expected a file"),
    "report under a file": (lambda t: fake_dataset(t, with_shard=True),
                            ["--report", "BLOCKED/r.json"], "exists and is not a folder"),
    "negative tile grid": (lambda t: fake_dataset(t, with_shard=True), ["--tile-grid", "-1"],
                           "--tile-grid=-1: must be >= 0"),
    "zero chunk": (lambda t: fake_dataset(t, with_shard=True), ["--chunk", "0"],
                   "--chunk and --max-frames must be positive"),
}


@pytest.mark.parametrize("case", sorted(DETECT_KEYPOINTS_CASES))
def test_detect_keypoints_refuses_bad_input_before_detecting(case, tmp_path, capsys):
    make, extra, message = DETECT_KEYPOINTS_CASES[case]
    dataset = make(tmp_path)
    (tmp_path / "BLOCKED").write_text("a file where a folder should be")
    (tmp_path / "FOLDER.npz").mkdir()
    extra = [str(tmp_path / a) if a.startswith(("BLOCKED", "FOLDER")) else a for a in extra]
    args = ["--dataset", str(dataset), "--split", "test", *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "k.npz")]
    with pytest.raises(SystemExit) as info:
        _tool("detect_keypoints").main(args)
    assert info.value.code == 2
    _argparse_error(capsys, message)
    assert not (tmp_path / "k.npz").exists()


BENCHMARK_CASES = {
    "unknown device": (["--device", "tpu"], "--device=tpu"),
    "cuda without CUDA": (["--device", "cuda"], "CUDA is not available"),
    "json under a file": ("json", "is a file, not a folder"),
    "zero threads": (["--threads", "0"], "--threads 0: must be >= 1"),
    "zero iters": (["--iters", "0"], "--iters and --fit-repeats must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(BENCHMARK_CASES))
def test_benchmark_refuses_bad_arguments(case, tmp_path, capsys):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    extra, message = BENCHMARK_CASES[case]
    if extra == "json":
        extra = ["--json", str(file_in_the_way(tmp_path) / "b.json")]
    with pytest.raises(SystemExit) as info:
        _tool("benchmark").main(["--methods", "sahmr_small", *extra])
    assert info.value.code == 2
    _argparse_error(capsys, message)


@pytest.mark.parametrize("kind", ["crafted", "pickled"])
def test_benchmark_refuses_bad_checkpoint(kind, tmp_path, capsys):
    ckpt = {"crafted": crafted_checkpoint, "pickled": pickled_checkpoint}[kind](tmp_path)
    with pytest.raises(SystemExit) as info:
        _tool("benchmark").main(["--methods", "sahmr_small", "--checkpoint",
                                 f"sahmr_small={ckpt}", "--device", "cpu"])  # fmt: skip
    assert info.value.code == 2
    _argparse_error(capsys, f"--checkpoint {ckpt}: ")
    assert not (tmp_path / "pwned.txt").exists()


def _evaluate_case(case: str, t: Path) -> tuple[list[str], str]:
    pred, gt = t / "pred", t / "gt"
    pred.mkdir()
    gt.mkdir()
    args = ["--pred", str(pred), "--gt", str(gt), "--no-progress"]
    body = pickle_body(t)
    return {
        "pickled body model": ([*args, "--out", str(t / "o"), "--body-model", str(body)],
                               f"--body-model {body}: refusing to unpickle"),
        "garbage body model": ([*args, "--out", str(t / "o"), "--body-model",
                                str(garbage_file(t, "body.npz"))], "body.npz: "),
        "out under a file": ([*args, "--out", str(file_in_the_way(t))],
                             "is a file, not a folder"),
    }[case]


@pytest.mark.parametrize("case", ["pickled body model", "garbage body model",
                                  "out under a file"])  # fmt: skip
def test_evaluate_refuses_bad_body_and_output(case, tmp_path, capsys):
    args, message = _evaluate_case(case, tmp_path)
    with pytest.raises(SystemExit) as info:
        _tool("score_predictions").main(args)
    assert info.value.code == 2
    _argparse_error(capsys, message)
    assert not (tmp_path / "o").exists()


def _shipped_body_with(t: Path, key: str, value: object) -> Path:
    """The shipped body's arrays with ``key``'s first entry set to ``value``, as an .npz."""
    with np.load(ROOT / "sahmr" / "body" / "assets" / "license_free_neutral.npz",
                 allow_pickle=False) as z:  # fmt: skip
        arrays = {k: z[k] for k in z.files}
    arrays[key] = arrays[key].copy()
    arrays[key].reshape(-1)[0] = value
    path = t / f"body_{key}.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["pickle without opt-in", "malicious pickle with opt-in",
                                  "garbage npz", "output under a file", "nan template",
                                  "inf skinning weight"])  # fmt: skip
def test_convert_smpl_refuses_with_the_file_named(case, tmp_path, capsys):
    body = pickle_body(tmp_path)
    dst = tmp_path / "out.npz"
    if case == "nan template":
        body = _shipped_body_with(tmp_path, "v_template", np.nan)
    elif case == "inf skinning weight":
        body = _shipped_body_with(tmp_path, "weights", np.inf)
    args, message = {
        "nan template": ([str(body), str(dst)], "v_template holds NaN"),
        "inf skinning weight": ([str(body), str(dst)], "weights holds NaN, infinite"),
        "pickle without opt-in": ([str(body), str(dst)], f"refusing to unpickle {body}"),
        "malicious pickle with opt-in": ([str(body), str(dst), "--allow-pickle"], f"{body}"),
        "garbage npz": ([str(garbage_file(tmp_path, "b.npz")), str(dst)], "b.npz"),
        "output under a file": ([str(body), str(file_in_the_way(tmp_path) / "x.npz")],
                                "is a file, not a folder"),
    }[case]
    assert _tool("convert_smpl").main(args) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, message)
    assert "unpickled!" not in captured.out
    assert not dst.exists()


def test_checks_accept_good_values():
    from sahmr.cli.checks import check_device, check_float, check_int

    assert check_int("3", "n") == 3 and check_int(0, "n", minimum=0) == 0
    assert check_int(4.0, "n") == 4 and check_int(None, "n", allow_none=True) is None
    assert check_float("0.02", "v") == pytest.approx(0.02)
    assert check_float(0, "v", inclusive=True) == 0.0
    assert check_device("cpu").type == "cpu" and check_device("auto").type in ("cpu", "cuda")
    assert np.isfinite(check_float(1e3, "v"))


@pytest.mark.parametrize("value", [True, "1e3", "", "0x10", [1]])
def test_check_int_refuses_non_integers(value):
    from sahmr.cli.checks import BadArgument, check_int

    with pytest.raises(BadArgument, match="not an integer"):
        check_int(value, "n")


# ---------------------------------------------------------------------------- make_dataset


def _another_dataset(t: Path) -> Path:
    root = t / "data"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"format": "sahmr.synth_dataset",
                                                   "config_hash": "0123abcd", "shards": []}))
    (root / "shards").mkdir()
    (root / "shards" / "train-000000.tar").write_bytes(b"their shard")
    return root


def _not_a_dataset(t: Path) -> Path:
    root = t / "home"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    return root


MAKE_DATASET_CASES = {
    "zero samples": ({"num_samples": 0}, "num_samples=0: must be >= 1"),
    "negative samples": ({"num_samples": -10}, "num_samples=-10: must be >= 1"),
    "text samples": ({"num_samples": "lots"}, "num_samples='lots': not an integer"),
    "zero per shard": ({"samples_per_shard": 0}, "samples_per_shard=0: must be >= 1"),
    "zero per val shard": (
        {"splits.val.samples_per_shard": 0},
        "splits.val.samples_per_shard=0: must be >= 1",
    ),
    "negative workers": ({"workers": -2}, "workers=-2: must be >= 0"),
    "bad shard spec": ({"shard": "3/2"}, "shard=3/2"),
    "text shard spec": ({"shard": "half"}, "shard=half"),
    "jpeg quality": ({"jpeg_quality": 101}, "jpeg_quality=101"),
    "zero sdf voxel": ({"sdf_voxel_size": 0}, "sdf_voxel_size=0: must be > 0"),
    "unknown placer": ({"placer": "magic"}, "placer=magic"),
    "missing body model": ({"body_model_path": "/no/such.npz"}, "body_model_path=/no/such.npz"),
    "another dataset": ({"out_dir": _another_dataset}, "holds another dataset"),
    "not a dataset": ({"out_dir": _not_a_dataset}, "holds files that are not a dataset"),
    "out under a file": ({"out_dir": file_in_the_way}, "is a file, not a folder"),
    "text seed": ({"seed": "abc"}, "seed='abc': not an integer"),
    "negative split fraction": ({"splits.train.fraction": -1}, "splits.train: fraction -1: must"),
    "nan split fraction": ({"splits.val.fraction": "nan"}, "splits.val: fraction nan: must"),
    "backwards seed range": ({"splits.train.seed_range": "[5,1]"}, "start after stop"),
    "unknown room kind": ({"splits.train.kinds": "[nowhere]"}, "unknown room kind"),
    "zero image size": ({"camera.image_sizes": "[[0,0]]"}, "camera.image_sizes [[0, 0]]"),
    "no image sizes": ({"camera.image_sizes": "[]"}, "camera.image_sizes []"),
    "nan camera height": ({"camera.height": "[nan,1]"}, "camera.height: range [nan, 1]"),
}


@pytest.mark.parametrize("case", sorted(MAKE_DATASET_CASES))
def test_make_dataset_refuses_bad_input_and_never_replaces_a_folder(
    case, tmp_path, monkeypatch, capsys
):
    change, message = MAKE_DATASET_CASES[case]
    settings = {"out_dir": str(tmp_path / "new"), "workers": 0}
    settings.update({k: str(v(tmp_path) if callable(v) else v) for k, v in change.items()})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        _run_hydra_cli("make_dataset", [f"{k}={v}" for k, v in settings.items()], monkeypatch)
    assert info.value.code == 2
    _one_error_line(capsys.readouterr().err, message)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing replaced
    assert not (tmp_path / "new").exists()


def test_make_dataset_accepts_its_own_dataset_folder(tmp_path):
    """Resuming or extending (sharded runs) a dataset of the same config passes the checks."""
    from hydra import compose, initialize_config_dir

    from sahmr.synth.plan import config_from_mapping

    root = tmp_path / "data"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("make_dataset", overrides=[f"out_dir={root}", "resume=true"])
    root.mkdir()
    (root / ".hydra").mkdir()
    (root / "shards").mkdir()  # empty, from a run killed before its dataset.json
    tool = _tool("make_dataset")
    tool.check_inputs(cfg)  # empty folder: fine
    digest = config_from_mapping(cfg).content_hash()
    (root / "dataset.json").write_text(json.dumps({"config_hash": digest}))
    tool.check_inputs(cfg)  # same config: fine


# ---------------------------------------------------------------------------- images


def _png_header(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 2) -> Path:
    """A PNG whose header claims ``width x height`` (no pixel data: nothing is decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))  # fmt: skip

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _png16(path: Path) -> Path:
    from PIL import Image

    gray = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 13).astype(np.uint16)
    Image.fromarray(gray).save(path)  # mode I;16
    with Image.open(path) as im:
        assert im.mode.startswith("I"), im.mode
    return path


def _float_tiff(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((48, 64), 0.5, np.float32)).save(path)  # mode F
    return path


IMAGE_CASES = {
    "14000 x 14000": (lambda t: _png_header(t / "huge.png", 14000, 14000), "MP limit"),
    "12000 x 9000": (lambda t: _png_header(t / "big.png", 12000, 9000), "12000x9000 (108 MP)"),
    "float samples": (lambda t: _float_tiff(t / "float.tif"), "mode F samples"),
    "not an image": (lambda t: garbage_file(t, "x.png"), "image cannot be read"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_image_header_problems_are_named(case, tmp_path):
    from sahmr.cli.checks import image_file_problem

    make, message = IMAGE_CASES[case]
    path = make(tmp_path)
    problem = image_file_problem(path)
    assert problem is not None and message in problem and str(path) in problem


def test_ordinary_images_pass_the_header_check(tmp_path):
    from PIL import Image

    from sahmr.cli.checks import image_file_problem

    assert image_file_problem(DEMO_IMAGE) is None
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "g.png")  # 8-bit grey: fine
    assert image_file_problem(tmp_path / "g.png") is None
    assert image_file_problem(_png_header(tmp_path / "ok.png", 8000, 6000)) is None  # 48 MP
    assert image_file_problem(_png16(tmp_path / "deep.png")) is None  # read scaled to 8 bits


@pytest.mark.parametrize("case", ["14000 x 14000", "float samples"])
def test_demo_refuses_bad_images_before_work(case, tmp_path, capsys):
    from sahmr.cli.demo import EXIT_BAD_INPUT, main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make, message = IMAGE_CASES[case]
    image = make(inputs)
    rc = main(["--image", str(image), "--bbox", "10,10,40,40", "--camera",
               str(DEMO_IMAGE.with_name("stand.camera.json")), "--device", "cpu", "-q",
               "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == EXIT_BAD_INPUT
    _one_error_line(capsys.readouterr().err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


# ---------------------------------------------------------------------------- geometry


def _flipped_scan(folder: Path) -> Path:
    import trimesh

    mesh = trimesh.load(DEMO_IMAGE.parent.parent / "mesh.ply", process=False)
    mesh.invert()
    path = folder / "flipped.ply"
    mesh.export(path)
    return path


def test_demo_refuses_a_scan_facing_away_from_the_room(tmp_path, capsys):
    from sahmr.cli.demo import EXIT_BAD_INPUT, main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    scan = _flipped_scan(inputs)
    rc = main(["--scene", str(scan), "--image", str(DEMO_IMAGE), "--bbox", "410,120,610,470",
               "--camera", str(DEMO_IMAGE.with_name("stand.camera.json")), "--device", "cpu",
               "-q", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert rc == EXIT_BAD_INPUT
    line = _one_error_line(capsys.readouterr().err, f"{scan}: the scan's normals face away")
    assert "--force" in line
    assert not (tmp_path / "out").exists()


def _scene_dir_with_flipped(t: Path, layout: str) -> tuple[Path, Path]:
    """A --scene-dir with a good scan and a flipped one (``<name>.ply`` or ``<name>/mesh.ply``)."""
    folder = t / "rooms"
    (folder / "good").mkdir(parents=True)
    (folder / "good" / "mesh.ply").write_bytes((DEMO_IMAGE.parent.parent / "mesh.ply").read_bytes())
    flipped = _flipped_scan(t)
    if layout == "named file":
        target = folder / "zz_room.ply"
    else:
        (folder / "zz_room").mkdir()
        target = folder / "zz_room" / "mesh.ply"
    flipped.rename(target)
    (folder / "notes.txt").write_text("not a scan")
    return folder, target


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("where", ["--scene", "--scene-dir named file", "--scene-dir sub-folder"])
def test_evaluate_refuses_a_scan_facing_away_unless_forced(where, force, tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    if where == "--scene":
        scan = _flipped_scan(tmp_path)
        scene = ["--scene", str(scan)]
    else:
        folder, scan = _scene_dir_with_flipped(tmp_path, where.removeprefix("--scene-dir "))
        scene = ["--scene-dir", str(folder)]
    args = ["--pred", str(pred), "--gt", str(gt), *scene, "--out",
            str(tmp_path / "o"), "--no-progress", *(["--force"] if force else [])]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _tool("score_predictions").main(args)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if force:  # it stops later, at the empty --gt
        assert "normals face away" not in last and "no frames" in last
    else:
        assert f"{where.split()[0]} {scan}: the scan's normals face away" in last
        assert "--force goes on anyway" in last
    assert not (tmp_path / "o").exists()


def test_scan_files_lists_what_scene_names_resolve_to(tmp_path):
    from sahmr.cli.checks import scan_files

    folder, target = _scene_dir_with_flipped(tmp_path, "sub-folder")
    (folder / "a.obj").write_text("v 0 0 0\n")
    (folder / "empty").mkdir()
    assert scan_files(folder) == [folder / "a.obj", folder / "good" / "mesh.ply", target]


@pytest.mark.parametrize("root, refused", [
    ([1.0, 1.0, 1.0], False),          # inside
    ([4.5, 1.0, 1.0], False),          # 0.5 m outside: scans may end short of the person
    ([6.0, 1.0, 1.0], True),           # 2 m outside
    ([4.8, 3.8, 1.0], True),           # 0.8 m out along two axes: 1.13 m
    ([1.0, 1.0, -27.0], True),         # far below the floor
    ([float("nan"), 1.0, 1.0], True),
])  # fmt: skip
def test_root_outside_the_scan_is_refused(root, refused):
    from sahmr.cli.demo import check_root_inside_scan
    from sahmr.inference.errors import InputError

    box = np.array([[0.0, 0, 0], [4, 3, 2.5], [2, 1, 0.5]])
    if refused:
        with pytest.raises(InputError, match=r"outside the scan's bounds.*--force"):
            check_root_inside_scan(np.array(root), box, "f1")
    else:
        check_root_inside_scan(np.array(root), box, "f1")


def _hidden_reference(verts, points, K, T, size, cell_px, margin):
    """Per vertex, the nearest scan point in its pixel cell, by a plain loop."""
    def pix(p):
        q = T[:3, :3] @ p + T[:3, 3]
        if q[2] <= 0:
            return q[2], None
        u, v = (K @ (q / q[2]))[:2]
        c, r = int(np.floor(u / cell_px)), int(np.floor(v / cell_px))
        inside = 0 <= c < -(-size[0] // cell_px) and 0 <= r < -(-size[1] // cell_px)
        return q[2], (c, r) if inside else None

    zbuf: dict[tuple[int, int], float] = {}
    for p in points:
        z, cell = pix(p)
        if cell is not None and z > 0.1:
            zbuf[cell] = min(zbuf.get(cell, np.inf), z)
    hidden = 0
    for v in verts:
        z, cell = pix(v)
        hidden += z <= 0 or (cell is not None and z > zbuf.get(cell, np.inf) + margin)
    return hidden / len(verts)


@pytest.mark.parametrize("depth, expected", [
    (2.0, 0.0),      # in front of the wall at 3 m
    (3.2, 0.0),      # within the margin behind it
    (4.0, 1.0),      # behind it
    (-1.0, 1.0),     # behind the camera
])  # fmt: skip
def test_body_behind_a_wall_is_hidden(depth, expected):
    from sahmr.cli.demo import hidden_body_fraction

    K = np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    g = np.stack(np.meshgrid(np.linspace(-1, 1, 120), np.linspace(-1, 1, 120)), -1).reshape(-1, 2)
    wall = np.c_[g, np.full(len(g), 3.0)]  # camera = world (identity extrinsic)
    body = np.c_[np.random.default_rng(0).uniform(-0.1, 0.1, (200, 2)), np.full(200, depth)]
    got = hidden_body_fraction(body, wall, K, np.eye(4), (64, 48))
    assert got == pytest.approx(expected)


def test_hidden_fraction_matches_a_plain_loop():
    from sahmr.cli.demo import HIDDEN_MARGIN_M, ZBUFFER_CELL_PX, hidden_body_fraction

    rng = np.random.default_rng(3)
    K = np.array([[80.0, 0, 30], [0, 80, 20], [0, 0, 1]])
    a = 0.3
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [0.2, -0.1, 0.5]
    points = rng.uniform([-3, -2, 0.5], [3, 2, 5], (3000, 3))
    verts = rng.uniform([-1, -1, -0.5], [1, 1, 4], (300, 3))  # some behind the camera
    got = hidden_body_fraction(verts, points, K, T, (61, 43))
    want = _hidden_reference(verts, points, K, T, (61, 43), ZBUFFER_CELL_PX, HIDDEN_MARGIN_M)
    assert 0.05 < want < 0.95 and got == pytest.approx(want)


def test_a_body_the_scan_hides_is_refused():
    """A box on the empty far wall puts the body behind it (75 % hidden; demo frames 4-17 %)."""
    from sahmr.cli.demo import check_body_in_view
    from sahmr.inference.errors import InputError

    K = np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    g = np.stack(np.meshgrid(np.linspace(-1, 1, 60), np.linspace(-1, 1, 60)), -1).reshape(-1, 2)
    wall = np.c_[g, np.full(len(g), 3.0)]
    body = np.c_[np.zeros((10, 2)), np.linspace(2.0, 4.0, 10)]  # 4 of 10 behind 3.25 m
    assert check_body_in_view(body, wall, K, np.eye(4), (64, 48), "f") == pytest.approx(0.4)
    with pytest.raises(InputError, match=r"frame f: the scan hides 100% of the body.*--force"):
        check_body_in_view(body + np.array([0.0, 0, 2]), wall, K, np.eye(4), (64, 48), "f")


GT_FILE_CASES = {
    "too few vertices": ({"vertices": np.zeros((100, 3))}, "vertices (100, 3), not (6890, 3)"),
    "flat vertices": ({"vertices": np.zeros(6890 * 3)}, "vertices (20670,), not (6890, 3)"),
    "nan vertices": ({"vertices": np.full((6890, 3), np.nan)}, "NaN or infinite"),
    "bad root": ({"vertices": np.zeros((6890, 3)), "root": np.zeros(2)}, "root (2,)"),
    "short pose": ({"betas": np.zeros(10), "global_orient": np.zeros(3),
                    "body_pose": np.zeros(5), "transl": np.zeros(3)}, "not a usable"),
    "no keys": ({"foo": np.zeros(3)}, "needs 'vertices' or"),
    "text vertices": ({"vertices": np.full((6890, 3), "a")}, "not a usable"),
    "garbage": (None, "not a readable ground-truth .npz"),
}


@pytest.mark.parametrize("case", sorted(GT_FILE_CASES))
def test_demo_ground_truth_files_are_checked(case, tmp_path):
    from sahmr.inference.errors import InputError
    from sahmr.inference.pipeline import _load_gt

    arrays, message = GT_FILE_CASES[case]
    path = tmp_path / "f.gt.npz"
    if arrays is None:
        path.write_bytes(b"garbage" * 30)
    else:
        np.savez(path, **arrays)
    with pytest.raises(InputError) as info:
        _load_gt(path, _shipped_body())
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    np.savez(tmp_path / "ok.npz", vertices=_shipped_body().v_template.numpy())
    verts, root = _load_gt(tmp_path / "ok.npz", _shipped_body())
    assert verts.shape == (6890, 3) and root.shape == (3,)


@functools.lru_cache(maxsize=1)
def _shipped_body():
    from sahmr.body import BodyModel

    return BodyModel()


def test_compose_for_checks_keeps_hydra_overrides(tmp_path):
    """A search path added on the command line is seen by the up-front checks too."""
    from sahmr.cli.checks import compose_for_checks

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: sahmr.models.hmr.HMR\n")
    cfg = compose_for_checks(ROOT / "configs", "train", [
        "exp=sahmr_small", "model=mine", "data.root=/x", f"hydra.searchpath=[file://{tmp_path}]",
        "hydra/job_logging=none", "hydra.run.dir=/tmp/elsewhere"])  # fmt: skip
    assert cfg.model._target_ == "sahmr.models.hmr.HMR"
    assert compose_for_checks(ROOT / "configs", "train", ["--help"]) is None


DEMO_NUMBERS = {
    "zero view size": (["--view-size", "0", "0"], "--view-size 0 0"),
    "huge view size": (["--view-size", "14000", "14000"], "--view-size 14000 14000"),
    "zero sdf voxel": (["--sdf-voxel", "0"], "--sdf-voxel 0: must be a pitch"),
    "nan sdf voxel": (["--sdf-voxel", "nan"], "--sdf-voxel nan"),
    "negative scene voxel": (["--scene-voxel", "-1"], "--scene-voxel -1"),
    "negative views": (["--views", "-2"], "--views -2: must be in 0..36"),
    "endless views": (["--views", "100000"], "--views 100000: must be in 0..36"),
    "endless fit": (["--fit-iterations", "1000000000"], "--fit-iterations 1000000000: must be"),
    "negative fit iterations": (["--fit-iterations", "-1"], "--fit-iterations -1"),
    "negative slide cost": (["--scene-slide-cost", "-1"], "--scene-slide-cost -1: must be"),
    "nan slide cost": (["--scene-slide-cost", "nan"], "--scene-slide-cost nan: must be"),
}


@pytest.mark.parametrize("case", sorted(DEMO_NUMBERS))
def test_demo_refuses_bad_numbers_before_work(case, tmp_path, capsys):
    from sahmr.cli.demo import EXIT_BAD_INPUT, main

    args, message = DEMO_NUMBERS[case]
    rc = main(["--image", str(DEMO_IMAGE), "--bbox", "410,120,610,470", "--device", "cpu", "-q",
               "--out", str(tmp_path / "out"), *args])  # fmt: skip
    assert rc == EXIT_BAD_INPUT
    _one_error_line(capsys.readouterr().err, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["no dataset.json", "unknown split"])
def test_evaluate_names_the_dataset_problem(case, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    ds = tmp_path if case == "no dataset.json" else fake_dataset(tmp_path)
    split = "tset" if case == "unknown split" else "test"
    with pytest.raises(SystemExit) as info:
        _tool("score_predictions").main(["--pred", str(pred), "--gt-dataset", str(ds),
                                         "--split", split, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    message = {"no dataset.json": f"--gt-dataset {ds}: no dataset.json",
               "unknown split": "--split tset: "}[case]  # fmt: skip
    _argparse_error(capsys, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("allow", [False, True])
def test_evaluate_refuses_a_dataset_with_a_missing_shard_unless_asked(allow, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    ds = fake_dataset(tmp_path)  # plans shards/test-0.tar, which is not there
    with pytest.raises(SystemExit) as info:
        _tool("score_predictions").main(["--pred", str(pred), "--gt-dataset", str(ds),
                                         "--split", "test", "--out", str(tmp_path / "o"),
                                *(["--allow-missing-shards"] if allow else [])])  # fmt: skip
    assert info.value.code == 2  # allowed: it stops later, at a split with no frames
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("shard(s) of split test are missing" in last) != allow
    assert not (tmp_path / "o").exists()


def test_missing_shards_lists_the_absent_files_of_one_split(tmp_path):
    from sahmr.cli.checks import missing_shards

    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "a.tar", "w"):
        pass
    meta = {"shards": [{"split": "val", "file": "shards/a.tar"},
                       {"split": "val", "file": "shards/b.tar"},
                       {"split": "test", "file": "shards/c.tar"}]}  # fmt: skip
    (tmp_path / "shards" / "c.tar").write_bytes(b"")  # empty: as good as missing
    (tmp_path / "shards" / "d.tar").write_bytes(b"not a tar" * 200)
    meta["shards"].append({"split": "val", "file": "shards/d.tar"})
    assert missing_shards(tmp_path, meta, "val") == ["shards/b.tar", "shards/d.tar"]
    assert missing_shards(tmp_path, meta, "test") == ["shards/c.tar"]
    assert missing_shards(tmp_path, meta, "train") == []


@pytest.mark.parametrize("case", ["onto its source", "onto a folder", "under a file",
                                  "fp32 and int8", "a folder as src", "sahmr as rcnet",
                                  "garbage rcnet"])  # fmt: skip
def test_export_checkpoint_never_replaces_its_source(case, tmp_path, capsys):
    src = tmp_path / "last.pt"
    src.write_bytes(SHIPPED.read_bytes())
    before = src.read_bytes()
    args, message = {
        "onto its source": ([str(src), str(tmp_path / "." / "last.pt")], "is the src checkpoint"),
        "onto a folder": ([str(src), str(tmp_path)], "is a folder"),
        "under a file": ([str(src), str(file_in_the_way(tmp_path) / "e.pt")],
                         "is a file, not a folder"),
        "fp32 and int8": ([str(src), str(tmp_path / "e.pt"), "--fp32", "--int8"],
                          "exclude each other"),
        "a folder as src": ([str(tmp_path), str(tmp_path / "e.pt")], "a folder, not a checkpoint"),
        "sahmr as rcnet": ([str(src), str(tmp_path / "e.pt"), "--rcnet", str(SHIPPED)],
                           "holds a sahmr.models.sahmr.SAHMR model, not sahmr.models.rcnet.RCNet"),
        "garbage rcnet": ([str(src), str(tmp_path / "e.pt"), "--rcnet",
                           str(garbage_file(tmp_path))], "garbage.pt: not a readable checkpoint"),
    }[case]
    with pytest.raises(SystemExit) as info:
        _tool("export_checkpoint").main(args)
    assert info.value.code == 2
    _argparse_error(capsys, message)
    assert src.read_bytes() == before and not (tmp_path / "e.pt").exists()


def test_compose_for_checks_reads_the_config_name_flag():
    from sahmr.cli.checks import compose_for_checks

    for flags in (["--config-name", "make_dataset_away"], ["-cn=make_dataset_away"]):
        cfg = compose_for_checks(ROOT / "configs", "make_dataset", [*flags, "out_dir=/x"])
        assert cfg.shape.tail_fraction == 1.0  # the variant's, not make_dataset's
    assert compose_for_checks(ROOT / "configs", "make_dataset", ["-m", "out_dir=/x"]) is None


@pytest.mark.parametrize("flag, value", [("--voxel-size", "nan"), ("--voxel-size", "0"),
                                         ("--contact-threshold", "-0.07"),
                                         ("--contact-threshold", "inf"), ("--batch-size", "0")])
def test_evaluate_refuses_bad_sizes(flag, value, tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    with pytest.raises(SystemExit) as info:
        _tool("score_predictions").main(["--pred", str(pred), "--gt", str(gt), "--out",
                                str(tmp_path / "o"), flag, value])  # fmt: skip
    assert info.value.code == 2
    _argparse_error(capsys, f"{flag} ")
    assert not (tmp_path / "o").exists()
