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


@pytest.mark.parametrize("given", [["--max-steps", "780"], ["--max-steps=780"]])
def test_a_recipe_that_names_its_schedule_length_keeps_it_once(given):
    out = _run("start", "12", "21.5", "500", "--lr", "2e-5", *given)
    assert out.returncode == 0, out.stderr
    cmd = shlex.split(out.stdout.strip())
    named = [c for c in cmd if c.startswith("--max-steps")]
    assert named == given[:1]
    assert cmd[-len(given) :] == given


@pytest.mark.parametrize(
    "args",
    [(), ("launch",), ("start", "11", "21.5"), ("start", "x", "21.5", "530"), ("poll",)],
)
def test_bad_arguments_exit_2_with_one_line(args):
    out = _run(*args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_collect_brings_a_large_checkpoint_back_in_pieces(tmp_path):
    """`poll ... collect` gathers what the device returns: at most 8 files of at most 16 MiB,
    so a float16 checkpoint over 15 MiB comes in pieces that join back to the file."""
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "eval" / "new_val").mkdir(parents=True)
    (run / "eval" / "new_val" / "metrics.json").write_text("{}")
    (run / "runs" / "sahmr_param").mkdir(parents=True)
    (run / "runs" / "sahmr_param" / "metrics.jsonl").write_text('{"step": 1}\n')
    big = os.urandom(19 * 2**20)  # the mixed-precision export's size
    (run / "sahmr_small_param.pt").write_bytes(big)
    (run / "sahmr_small_last.pt").write_bytes(b"small")
    (tmp_path / "run.log").write_text("[00:00:00] campaign ended\n")
    out.mkdir()
    env = {**os.environ, "LEASE_RUN": str(run), "LEASE_POLL_S": "0", "OUT": str(out)}
    done = subprocess.run(["bash", str(SCRIPT), "poll", "0", "collect"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["lease_logs.tgz", "results.tgz", "sahmr_small_last.pt",
                     "sahmr_small_param.pt.part00", "sahmr_small_param.pt.part01"]  # fmt: skip
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    joined = b"".join((out / f).read_bytes() for f in files if f.startswith("sahmr_small_param"))
    assert joined == big
    import tarfile

    with tarfile.open(out / "lease_logs.tgz") as tar:
        assert tar.getnames() == ["campaign_stdout.log"]
    with tarfile.open(out / "results.tgz") as tar:
        assert "eval/new_val/metrics.json" in tar.getnames()


STASH = SCRIPT.parent / "stash.sh"


def _stash(root, stash, *args):
    env = {**os.environ, "STASH_ROOT": str(root), "STASH_DIR": str(stash)}
    return subprocess.run(["bash", str(STASH), *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_stash_moves_what_the_install_call_does_not_need_and_puts_it_back(tmp_path):
    root, stash = tmp_path / "repo", tmp_path / "stash"
    ckpt = root / "sahmr" / "checkpoints" / "sahmr_small.pt"
    img = root / "docs" / "img" / "a.png"
    for path, data in ((ckpt, b"weights"), (img, b"png")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert _stash(root, stash, "out").returncode == 0
    assert not ckpt.exists() and not img.parent.exists()
    again = _stash(root, stash, "out")  # a second stash would lose the first
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert _stash(root, stash, "in").returncode == 0
    assert ckpt.read_bytes() == b"weights" and img.read_bytes() == b"png"
    assert not stash.exists()
    assert _stash(root, stash, "in").returncode == 2  # nothing stashed
    assert _stash(root, stash, "sideways").returncode == 2
