"""tools/attention_report.py end to end: the shipped SA-HMR checkpoint on a tiny generated split,
and its one-line refusals of bad inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "attention_report_tool", TOOLS / "attention_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three test frames in the bundled bedroom."""
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    out = tmp_path_factory.mktemp("attention_ds")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=3, samples_per_shard=3, seed=7, workers=0,
            placer="standing", views_per_body=1,
            splits={"test": dict(fraction=1, bundled=["bedroom"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


def test_token_names_are_the_bodys_j14(tool):
    from sahmr.optim.smplify import J14_NAMES

    assert tool.J14_NAMES == J14_NAMES


def test_report_of_the_shipped_model(tool, dataset, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--data-root", str(dataset), "--split", "test", "--frames", "2", "--out", str(out),
            "--device", "cpu", "--batch-size", "2", "--min-contacts", "100000",
            "--no-progress"]  # fmt: skip
    assert tool.main(argv) == 0
    report = json.loads((out / "attention.json").read_text())
    assert report["frames"] == 2 and report["split"] == "test"
    assert report["checkpoint"].endswith("sahmr_small.pt")
    assert len(report["blocks"]) == 3  # the shipped model's three encoder blocks
    for blk in report["blocks"]:
        assert set(blk) == {"block", "all", "few_keys", "enough_keys"}
        a = blk["all"]
        for key in ("entropy", "top_mass", "keyless_mass", "spearman_predicted",
                    "spearman_ground_truth", "nearest_mass_predicted",
                    "nearest_mass_ground_truth", "log_linear_r2"):  # fmt: skip
            assert set(a[key]) == {"mean", "p5", "p25", "p50", "p75", "p95", "count"}, key
        e = a["entropy"]
        assert e["count"] > 0 and 0.0 <= e["p5"] <= e["mean"] <= 1.0
        assert 0.0 < a["top_mass"]["mean"] <= 1.0
    # Every frame has fewer than 100000 contacts: all listed, all in the "few" group.
    assert [f["frame"] for f in report["few_key_frames"]] == ["test-000000", "test-000001"]
    assert report["blocks"][0]["few_keys"]["frames"] == 2
    assert report["example"]["frame"] in ("test-000000", "test-000001")
    assert report["example"]["token"] == "right_ankle"
    image = np.asarray(Image.open(out / "attention.png"))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    printed = capsys.readouterr().out
    assert "block 2: entropy" in printed


def _refused(tool, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_inputs_are_refused_in_one_line(tool, dataset, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    err = _refused(tool, ["--data-root", str(tmp_path / "nowhere"), *out], capsys)
    assert "--data-root" in err and "no such folder" in err
    for bad in ("0", "two"):
        err = _refused(tool, ["--data-root", str(dataset), "--frames", bad, *out], capsys)
        assert "--frames" in err
    err = _refused(tool, ["--data-root", str(dataset), "--split", "val", *out], capsys)
    assert "--split" in err
    err = _refused(tool, ["--data-root", str(dataset), "--checkpoint", str(tmp_path / "x.pt"),
                          *out], capsys)  # fmt: skip
    assert "no such file" in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_scene_attention_is_refused(tool, dataset, tmp_path, capsys):
    """The shipped file with its config's model replaced by its RCNet: not SA-HMR."""
    from sahmr.inference.method import bundled_checkpoint

    ckpt = torch.load(bundled_checkpoint("sahmr"), weights_only=True)
    cfg = OmegaConf.create(ckpt["config"])
    cfg.model = cfg.model.rcnet
    ckpt["config"] = OmegaConf.to_yaml(cfg)
    path = tmp_path / "rcnet.pt"
    torch.save(ckpt, path)
    err = _refused(tool, ["--data-root", str(dataset), "--checkpoint", str(path),
                          "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert "RCNet model, not SA-HMR" in err
