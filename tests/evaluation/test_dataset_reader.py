"""tools/score_predictions.py scoring predictions against a split of a generated dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sahmr.data.synthetic import SyntheticDataset
from sahmr.evaluation.readers import SyntheticSplitReader
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _evaluate_main():
    spec = importlib.util.spec_from_file_location("evaluate_tool", TOOLS / "score_predictions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=4, samples_per_shard=2, seed=5, workers=0,
            placer="standing", views_per_body=2,
            splits={"train": dict(fraction=1, kinds=["office"], seeds=[100]),
                    "test": dict(fraction=1, bundled=["gym"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


def test_reader_frames_match_the_dataset(dataset):
    reader = SyntheticSplitReader(dataset, "test")
    samples = SyntheticDataset(dataset, "test")
    assert reader.names() == ["test-000000", "test-000001"]
    frame = reader.load("test-000001")
    np.testing.assert_array_equal(frame.vertices, samples[1].vertices_world)
    assert frame.scene == "bundled_gym" and frame.contact.any()
    assert (reader.scene_dir() / frame.scene / "mesh.ply").is_file()


def test_evaluate_cli_scores_against_a_split(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    reader = SyntheticSplitReader(dataset, "test")
    offset = np.array([0.03, 0.04, 0.0])  # 50 mm everywhere
    for name in reader.names():
        np.savez(pred / f"{name}.npz", vertices=reader.load(name).vertices + offset)
    out = tmp_path / "out"
    rc = _evaluate_main()(
        ["--pred", str(pred), "--gt-dataset", str(dataset), "--split", "test",
         "--out", str(out), "--no-progress", "--sdf-cache-dir", str(tmp_path / "sdf")]
    )  # fmt: skip
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 2 and metrics["missing"] == 0
    assert metrics["metrics"]["g_mpve"]["value"] == pytest.approx(50.0, abs=1e-3)
    assert metrics["metrics"]["g_mpve"]["unit"] == "mm"


def test_evaluate_cli_refuses_a_missing_dataset(tmp_path):
    with pytest.raises(SystemExit) as err:
        _evaluate_main()(["--pred", str(tmp_path), "--gt-dataset", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "o")])  # fmt: skip
    assert err.value.code == 2 and not (tmp_path / "o").exists()
