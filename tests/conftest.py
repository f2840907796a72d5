"""Shared test set-up: CUDA-only tests are skipped on machines without a GPU; under
pytest-xdist each worker gets its share of the cores."""

import os

import pytest
import torch


def _share_the_cores() -> None:
    """Under pytest-xdist (``-n N``) every worker's torch would start as many threads as the
    machine has cores: N workers then run N x cores spinning threads, and on 2 cores a step
    that takes 10 s alone took 55 s beside the other worker. Each worker (and the tools its
    tests start, through OMP_NUM_THREADS) gets cores / N threads instead."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


_share_the_cores()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
