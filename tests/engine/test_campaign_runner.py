"""The lease's job runner (`tools/gpu/campaign.run`): at most ``max_evals`` scorings at once,
the order the job graph asks for kept, and the lease's default (`campaign.MAX_EVALS`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from engine_testkit import load_tool

HOLD_S = 1.0  # how long each stand-in job runs: overlaps hold on a loaded machine


def _campaign():
    """``tools/gpu/campaign.py`` as the lease imports it (parametric_run puts its folder on the
    path; the dataclass `Job` needs its module registered)."""
    load_tool("gpu/parametric_run")
    return sys.modules["campaign"]


def _job(campaign, name: str, log: Path, kind: str, after: list[str] | None = None):
    """A job that writes its start and end times (``<log>/<name>``) and holds for HOLD_S."""
    code = (f"import time, pathlib; p = pathlib.Path({str(log / name)!r}); t0 = time.time(); "
            f"time.sleep({HOLD_S}); p.write_text(f'{{t0}} {{time.time()}}')")  # fmt: skip
    return campaign.Job(name, [sys.executable, "-c", code], after=after or [], kind=kind)


def _run(tmp_path: Path, max_evals: int) -> dict[str, tuple[float, float]]:
    campaign = _campaign()
    root, log = tmp_path / f"root{max_evals}", tmp_path / f"times{max_evals}"
    root.mkdir()
    log.mkdir()
    jobs = [_job(campaign, f"eval{i}", log, "eval") for i in range(4)]
    jobs.append(_job(campaign, "train", log, "train"))
    jobs.append(_job(campaign, "after_eval0", log, "eval", after=["eval0"]))
    a = argparse.Namespace(root=root, max_minutes=5.0, max_evals=max_evals)
    assert campaign.run(a, jobs, poll_s=0.05) == 0
    status = (root / "status.json").read_text()
    assert status.count('"done"') == len(jobs), status
    times = {}
    for p in log.iterdir():
        t0, t1 = map(float, p.read_text().split())
        times[p.name] = (t0, t1)
    return times


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that hold one instant (a start or an end)."""
    instants = [t for iv in intervals for t in iv]
    return max(sum(t0 <= t < t1 for t0, t1 in intervals) for t in instants)


@pytest.mark.parametrize("max_evals", [1, 2])
def test_scorings_run_at_most_max_evals_at_once_and_trainings_beside_them(tmp_path, max_evals):
    times = _run(tmp_path, max_evals)
    assert len(times) == 6
    evals = [iv for name, iv in times.items() if name != "train"]
    assert _most_at_once(evals) == max_evals
    # the training is not an evaluation: it starts at once, beside the first scorings
    assert _most_at_once(list(times.values())) == max_evals + 1
    # a job waits for the job it comes after
    assert times["after_eval0"][0] >= times["eval0"][1]


def test_the_lease_scores_one_at_a_time_and_refuses_fewer_than_one(tmp_path):
    tool = load_tool("gpu/parametric_run")
    assert tool.MAX_EVALS == 1
    assert tool.parser().parse_args([]).max_evals == tool.MAX_EVALS
    with pytest.raises(SystemExit) as err:
        tool.main(["--root", str(tmp_path / "lease"), "--max-evals", "0"])
    assert err.value.code == 2
    assert not (tmp_path / "lease").exists()  # nothing started, nothing written
    campaign = _campaign()
    assert tool.MAX_EVALS is campaign.MAX_EVALS  # one definition, the runner's
    with pytest.raises(ValueError, match="max_evals"):
        campaign.run(argparse.Namespace(root=tmp_path, max_minutes=1.0, max_evals=0), [])
    with pytest.raises(SystemExit) as err:  # the campaign's own option, one by default
        campaign.main(["--help"])
    assert err.value.code == 0
