"""Engine test fixtures: a tiny synthetic dataset, the dummy methods' allowlist, hydra configs.

Only pytest fixtures live here; the helpers and the dummy classes they use are in
`engine_testkit` (a unique module name, importable from test files whichever other test
folders share the pytest run; ``import conftest`` is not).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_testkit import TEST_TARGETS, TRAIN_SAMPLES, VAL_SAMPLES, load_tool, write_test_configs


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 train frames (one generated office) + 4 val frames (the bundled bedroom)."""
    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    out = tmp_path_factory.mktemp("engine_ds")
    cfg = GenerationConfig.from_dict(
        dict(
            out_dir=str(out), num_samples=TRAIN_SAMPLES + VAL_SAMPLES, samples_per_shard=4,
            seed=3, workers=0, placer="standing", views_per_body=2,
            splits={"train": dict(fraction=2, kinds=["office"], seeds=[100]),
                    "val": dict(fraction=1, bundled=["bedroom"])},
        )
    )  # fmt: skip
    generate(cfg, progress=False)
    return out


@pytest.fixture(autouse=True)
def _allow_test_targets(monkeypatch):
    """Checkpoints of the dummy methods load: their targets join the stored-config allowlist."""
    from sahmr.engine import safe_config

    monkeypatch.setattr(safe_config, "ALLOWED_TARGETS", safe_config.ALLOWED_TARGETS | TEST_TARGETS)


@pytest.fixture(scope="session")
def test_configs(tmp_path_factory) -> Path:
    """Extra configs for in-process runs (``engine_testkit`` targets)."""
    return write_test_configs(tmp_path_factory.mktemp("engine_cfg"))


@pytest.fixture(scope="session")
def subprocess_configs(tmp_path_factory) -> Path:
    """Extra configs for subprocess runs (``engine_testkit`` targets too: `subprocess_env` puts
    ``tests/engine`` on PYTHONPATH)."""
    return write_test_configs(tmp_path_factory.mktemp("engine_cfg_sub"))


@pytest.fixture(scope="session")
def shipped_checkpoint(tmp_path_factory) -> Path:
    """The shipped SA-HMR checkpoint with RCNet's depth search turned off in its config (the
    same int8 weights). The tools tested with it (caching, refits, evaluation loops) work the
    same either way, and the search costs about 4x per ``predict`` on the CPU; it is tested
    in ``tests/models/test_rcnet.py``, the shipped file as it is in ``tests/cli`` and
    ``tests/inference``."""
    from sahmr.inference.method import bundled_checkpoint

    out = tmp_path_factory.mktemp("shipped") / "sahmr_small_no_search.pt"
    load_tool("export_checkpoint").export(
        bundled_checkpoint("sahmr"), out, int8=True, settings=["model.rcnet.depth_hypotheses=[]"]
    )
    return out
