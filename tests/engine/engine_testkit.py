"""Engine test kit: plain helpers, a tiny dummy method + loss, and hydra config writers.

The dummy method stands in for the real ones (RCNet, METRO, SA-HMR) to test the engine
alone: it follows the same duck-typed protocol (`sahmr.engine.methods`): ``forward``,
``predict`` and ``metrics``; `TinyAdversarialMethod` adds the hooks of HMR/VIBE (an
adversarial prior with its own optimiser step) and SPIN (``sample_keys``, remembered in its
state dict).

This lives in a uniquely named module, not in ``conftest.py``: every test folder has a
``conftest.py``, and ``import conftest`` from a test file resolves to whichever folder comes
first on ``sys.path``, so running tests/engine together with another folder (for example
tests/evaluation) in one pytest call broke collection. Test files import from
``engine_testkit``; the fixtures stay in ``tests/engine/conftest.py``. Configs reach the
dummy classes through ``_target_: engine_testkit.<Class>``, both in-process (pytest puts
``tests/engine`` on ``sys.path``) and in subprocesses (`subprocess_env` puts it on
PYTHONPATH).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, LossOutput

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TOOLS = REPO / "tools"
TRAIN_SAMPLES = 8
VAL_SAMPLES = 4
MODULE = "engine_testkit"  # the module name the ``_target_`` strings use


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


@dataclass
class TinyAdversarialOutput(TinyOutput):
    """`TinyOutput` plus the frozen discriminator's scores of the roots (training)."""

    disc_scores: Tensor | None = None


class TinyAdversarialMethod(TinyMethod):
    """`TinyMethod` with an adversarial prior on the root and a memory of sample keys.

    The discriminator (an MLP on root positions) scores the predicted roots with its weights
    detached in ``forward`` and is trained by `discriminator_step` against roots drawn from
    torch's RNG around 4 m ahead. ``forward(..., sample_keys=...)`` (training) adds the keys
    to ``seen_keys``, which travels in the state dict as extra state (as SPIN's fits).
    """

    def __init__(self, *, hidden: int = 8, dropout: float = 0.1, disc_hidden: int = 8) -> None:
        super().__init__(hidden=hidden, dropout=dropout, use_scene=False)
        self.discriminator = nn.Sequential(
            nn.Linear(3, disc_hidden), nn.ReLU(), nn.Linear(disc_hidden, 1)
        )
        self.seen_keys: set[str] = set()

    @property
    def has_discriminator(self) -> bool:
        return True

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def forward(
        self,
        inputs: FrameInputs,
        targets: FrameTargets | None = None,
        sample_keys: list[str] | None = None,
    ) -> TinyAdversarialOutput:
        base = super().forward(inputs, targets)
        out = TinyAdversarialOutput(verts_cam=base.verts_cam, root_cam=base.root_cam)
        if self.training:
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            out.disc_scores = functional_call(self.discriminator, frozen, (base.root_cam,))
            if sample_keys is not None:
                self.seen_keys.update(sample_keys)
        return out

    def discriminator_step(self, output: TinyAdversarialOutput) -> LossOutput:
        fake = output.root_cam.detach()
        real = torch.randn_like(fake) * 0.5 + fake.new_tensor([0.0, 0.0, 4.0])
        d_real = (self.discriminator(real) - 1.0).pow(2).mean()
        d_fake = self.discriminator(fake).pow(2).mean()
        return LossOutput(total=d_real + d_fake, terms={"disc_real": d_real, "disc_fake": d_fake})

    def get_extra_state(self) -> Tensor:
        text = "\n".join(sorted(self.seen_keys)).encode()
        return torch.frombuffer(bytearray(text), dtype=torch.uint8) if text else torch.zeros(0)

    def set_extra_state(self, state: Tensor) -> None:
        text = bytes(state.to(torch.uint8).numpy().tobytes()).decode()
        self.seen_keys = set(text.split("\n")) if text else set()


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


class TinyAdversarialLoss(TinyLoss):
    """`TinyLoss` plus the generator's least-squares adversarial term."""

    def __init__(self, *, w_verts: float = 1.0, w_root: float = 1.0, w_adv: float = 0.1) -> None:
        super().__init__(w_verts=w_verts, w_root=w_root)
        self.w_adv = w_adv

    def forward(self, output: TinyAdversarialOutput, targets: FrameTargets) -> LossOutput:
        out = super().forward(output, targets)
        if output.disc_scores is not None:
            adv = (output.disc_scores - 1.0).pow(2).mean() * self.w_adv
            out = LossOutput(total=out.total + adv, terms={**out.terms, "adversarial": adv})
        return out


def write_test_configs(root: Path, module: str = MODULE) -> Path:
    """A config folder adding ``model=tiny``, ``model=tiny_pipeline``, ``loss=tiny`` (and the
    adversarial pair), their ``_target_`` in ``module``."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "loss").mkdir(parents=True, exist_ok=True)
    (root / "model" / "tiny.yaml").write_text(
        f"_target_: {module}.TinyMethod\nhidden: 8\ndropout: 0.1\n"
    )
    (root / "model" / "tiny_pipeline.yaml").write_text(
        f"_target_: {module}.TinyPipeline\nrcnet: null\n"
    )
    (root / "loss" / "tiny.yaml").write_text(f"_target_: {module}.TinyLoss\nw_verts: 1.0\n")
    (root / "model" / "tiny_adversarial.yaml").write_text(
        f"_target_: {module}.TinyAdversarialMethod\nhidden: 8\ndropout: 0.1\n"
    )
    (root / "loss" / "tiny_adversarial.yaml").write_text(
        f"_target_: {module}.TinyAdversarialLoss\nw_adv: 0.1\n"
    )
    return root


# The ``_target_`` strings of the dummy classes, for the stored-config allowlist
# (`sahmr.engine.safe_config.ALLOWED_TARGETS`, extended by the autouse fixture in conftest.py).
TEST_TARGETS = frozenset(
    f"{MODULE}.{name}"
    for name in ("TinyMethod", "TinyPipeline", "TinyLoss", "TinyAdversarialMethod",
                 "TinyAdversarialLoss")
)  # fmt: skip


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


QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_hydra_tool(name: str, overrides: list[str], monkeypatch) -> None:
    """Run a ``@hydra.main`` tool in this process with the given overrides (hydra's logging
    set-up switched off so pytest's capture is untouched)."""
    monkeypatch.setattr(sys, "argv", [str(TOOLS / f"{name}.py"), *overrides, *QUIET])
    main = load_tool(name).main
    # hydra finds config_path relative to the script only for functions of "__main__"
    monkeypatch.setattr(main.__wrapped__, "__module__", "__main__")
    main()


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


def train_straight_and_resumed(
    dataset: Path, configs: Path, root: Path, extra: dict, *, stop_at: int, on_trainer=None
) -> tuple[dict, dict]:
    """Train one tiny run twice: straight through (``root/straight``, ``on_trainer`` called on
    its trainer) and stopped after ``stop_at`` steps then resumed (``root/split``); returns
    both ``last.pt`` checkpoints ``(straight, resumed)``, whose runs reached their step limit."""
    from sahmr.engine.assembly import train_from_config
    from sahmr.engine.checkpoint import load_checkpoint

    straight, split = root / "straight", root / "split"
    cfg = compose_train(tiny_overrides(dataset, straight, **extra), configs)
    steps = train_from_config(cfg, on_trainer=on_trainer).step
    cfg = compose_train(tiny_overrides(dataset, split, **extra), configs)
    assert train_from_config(cfg, until_step=stop_at).stopped == "interrupted"
    cfg = compose_train(tiny_overrides(dataset, split, resume="true", **extra), configs)
    assert train_from_config(cfg).step == steps
    return (load_checkpoint(straight / "checkpoints" / "last.pt"),
            load_checkpoint(split / "checkpoints" / "last.pt"))  # fmt: skip
