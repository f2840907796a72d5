"""Engine test fixtures: a tiny synthetic dataset, the dummy methods' allowlist, hydra configs.

Only pytest fixtures live here; the helpers and the dummy classes they use are in
`engine_testkit` (a unique module name, importable from test files whichever other test
folders share the pytest run; ``import conftest`` is not).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_testkit import TEST_TARGETS, TRAIN_SAMPLES, VAL_SAMPLES, write_test_configs


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
