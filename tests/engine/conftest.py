"""Engine test fixtures: a tiny synthetic dataset, a tiny dummy method + loss, hydra configs.

The dummy method stands in for the real ones (RCNet, METRO, SA-HMR) to test the engine
alone: it follows the same duck-typed protocol (`sahmr.engine.methods`): ``forward``,
``predict`` and ``metrics``. Configs reach it through ``_target_: engine_conftest.<Class>``
in-process (this module registers itself under that name) and ``conftest.<Class>`` in
subprocesses (``tests/engine`` on PYTHONPATH).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sahmr.losses.base import LossOutput
from sahmr.models.inputs import BodyPrediction, FrameInputs, FrameTargets

sys.modules.setdefault("engine_conftest", sys.modules[__name__])

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TOOLS = REPO / "tools"
TRAIN_SAMPLES = 8
VAL_SAMPLES = 4


@functools.lru_cache(maxsize=1)
def body_template() -> np.ndarray:
    """(V, 3) template vertices of the shipped body (read from its .npz, no smplx)."""
    from sahmr.body.model import license_free_model_path

    with np.load(license_free_model_path(), allow_pickle=False) as z:
        return z["v_template"].astype(np.float32)


@dataclass
class TinyOutput:
    """Output of `TinyMethod`: absolute camera-frame vertices and root."""

    verts_cam: Tensor
    root_cam: Tensor


class TinyMethod(nn.Module):
    """Template mesh translated by a root regressed from the crop (and the scene points).

    Args:
        hidden: Conv channels.
        dropout: Dropout on the features (draws from the torch RNG while training).
        use_scene: Add the mean frustum point of each frame to the features.
    """

    def __init__(self, *, hidden: int = 8, dropout: float = 0.1, use_scene: bool = True) -> None:
        super().__init__()
        self.use_scene = use_scene
        self.conv = nn.Conv2d(3, hidden, 5, stride=4)
        self.norm = nn.BatchNorm2d(hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden + 3, 3)
        self.register_buffer("template", torch.from_numpy(body_template()), persistent=False)

    def forward(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> TinyOutput:
        f = torch.relu(self.norm(self.conv(inputs.image))).mean(dim=(2, 3))
        scene = f.new_zeros(f.shape[0], 3)
        if self.use_scene and inputs.scene_points_cam is not None:
            idx = inputs.scene_batch_idx
            sums = scene.index_add(0, idx, inputs.scene_points_cam.to(f.dtype))
            counts = torch.bincount(idx, minlength=f.shape[0]).clamp_min(1).to(f.dtype)
            scene = sums / counts[:, None]
        root = self.head(self.drop(torch.cat([f, 0.1 * scene], dim=1)))
        root = root + root.new_tensor([0.0, 0.0, 4.0])
        return TinyOutput(verts_cam=self.template[None] + root[:, None], root_cam=root)

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        self.eval()
        with torch.no_grad():
            out = self(inputs)
        return BodyPrediction(
            verts_cam=out.verts_cam, joints_cam=out.root_cam[:, None], root_cam=out.root_cam
        )

    def metrics(self, output: TinyOutput, targets: FrameTargets) -> dict[str, tuple]:
        err = (output.root_cam - targets.root_cam).norm(dim=-1) * 1000.0
        near = err < 500.0
        return {
            "root_error_mm": (float(err.sum()), float(err.numel())),
            "near_tp": (float(near.sum()), 1.0),
            "near_fp": (float((~near).sum()), 1.0),
            "near_fn": (1.0, 1.0),
        }


class TinyPipeline(nn.Module):
    """A composite with an optional ``rcnet`` sub-module (for the export merge test)."""

    def __init__(self, *, rcnet: nn.Module | None = None) -> None:
        super().__init__()
        self.rcnet = rcnet
        self.head = nn.Linear(2, 2)

    def forward(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> Tensor:
        return self.head(inputs.image.mean(dim=(2, 3))[:, :2])


class TinyLoss(nn.Module):
    """L1 on absolute vertices and root."""

    def __init__(self, *, w_verts: float = 1.0, w_root: float = 1.0) -> None:
        super().__init__()
        self.w_verts, self.w_root = w_verts, w_root

    def forward(self, output: TinyOutput, targets: FrameTargets) -> LossOutput:
        verts = (output.verts_cam - targets.verts_cam).abs().mean() * self.w_verts
        root = (output.root_cam - targets.root_cam).abs().mean() * self.w_root
        return LossOutput(total=verts + root, terms={"verts": verts, "root": root})


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 train frames (one generated office) + 4 val frames (the bundled bedroom)."""
    from sahmr.synth.generate import GenerationConfig, generate

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


def write_test_configs(root: Path, module: str) -> Path:
    """A config folder adding ``model=tiny``, ``model=tiny_pipeline``, ``loss=tiny``."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "loss").mkdir(parents=True, exist_ok=True)
    (root / "model" / "tiny.yaml").write_text(
        f"_target_: {module}.TinyMethod\nhidden: 8\ndropout: 0.1\n"
    )
    (root / "model" / "tiny_pipeline.yaml").write_text(
        f"_target_: {module}.TinyPipeline\nrcnet: null\n"
    )
    (root / "loss" / "tiny.yaml").write_text(f"_target_: {module}.TinyLoss\nw_verts: 1.0\n")
    return root


@pytest.fixture(scope="session")
def test_configs(tmp_path_factory) -> Path:
    """Extra configs for in-process runs (``engine_conftest`` targets)."""
    return write_test_configs(tmp_path_factory.mktemp("engine_cfg"), "engine_conftest")


@pytest.fixture(scope="session")
def subprocess_configs(tmp_path_factory) -> Path:
    """Extra configs for subprocess runs (``conftest`` targets, see `subprocess_env`)."""
    return write_test_configs(tmp_path_factory.mktemp("engine_cfg_sub"), "conftest")


def subprocess_env() -> dict[str, str]:
    """Environment for tools run in a subprocess: the repo and this folder importable."""
    env = dict(os.environ)
    paths = [str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_tool(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a tool in its own process group (killed as a group on timeout)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{cmd[:4]} timed out:\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def compose_train(overrides: list[str], search: Path):
    """The composed ``configs/train.yaml`` with ``search`` added to the search path."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"hydra.searchpath=[file://{search}]", *overrides])


def tiny_overrides(dataset: Path, out: Path, **extra: object) -> list[str]:
    """Overrides of a tiny CPU run of the dummy method."""
    base = {
        "model": "tiny",
        "loss": "tiny",
        "trainer": "tiny",
        "exp_name": "tiny",
        "device": "cpu",
        "data.root": str(dataset),
        "paths.output_dir": str(out),
        "max_points_per_scene": 20000,
    }
    base.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]
