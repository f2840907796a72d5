"""tools/gpu/lease.sh: the campaign command a lease starts, and its refusals (no GPU needed:
``LEASE_DRY_RUN=1`` prints the command instead of installing and detaching it)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu" / "lease.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEASE_DRY_RUN": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_start_runs_the_default_recipe_with_the_lease_lengths():
    out = _run("start", "11", "21.5", "530")
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout.strip())
    assert cmd[:2] == ["python3", "tools/gpu/parametric_run.py"]
    flags = dict(zip(cmd[2::2], cmd[3::2], strict=False))
    assert flags["--root"] == "/tmp/run"
    assert flags["--train-minutes"] == "11"
    assert flags["--max-steps"] == "726"  # run 25's schedule length for 11 minutes
    assert flags["--max-minutes"] == "21.5"
    assert "--no-profile" in cmd


def test_start_passes_further_arguments_to_the_campaign():
    out = _run("start", "9", "20", "300", "--exp", "sahmr_small_e2e", "--betas-weight", "0.1")
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout.strip())
    assert cmd[-4:] == ["--exp", "sahmr_small_e2e", "--betas-weight", "0.1"]
    assert cmd[cmd.index("--max-steps") + 1] == "594"


@pytest.mark.parametrize(
    "args",
    [(), ("launch",), ("start", "11", "21.5"), ("start", "x", "21.5", "530"), ("poll",)],
)
def test_bad_arguments_exit_2_with_one_line(args):
    out = _run(*args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""
