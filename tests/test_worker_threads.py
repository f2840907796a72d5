"""tests/conftest.py: under pytest-xdist each worker's torch, and the tools its tests start,
get their share of the cores."""

import os
import subprocess
import sys

import pytest
import torch


def test_each_xdist_worker_gets_its_share_of_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        pytest.skip("runs under pytest -n 2 or more (the README's command)")
    share = max(1, (os.cpu_count() or 1) // workers)
    assert torch.get_num_threads() == share
    assert os.environ["OMP_NUM_THREADS"] == str(share)
    # a tool a test starts inherits it
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == share
