"""GPU busy percentage sampled in a background thread while a workload runs.

The driver's "utilization.gpu" is the percentage of the last sample period (1/6 s to 1 s,
depending on the product) during which one or more kernels ran. It is read through
``torch.cuda.utilization`` (NVML, when the ``pynvml``/``nvidia-ml-py`` module is there) or else
``nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i <index>``, every
``interval_s`` seconds; `BusySampler.mean` averages the readings taken while it ran.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

__all__ = ["BusySampler", "parse_smi_percent", "read_gpu_busy"]


def parse_smi_percent(text: str) -> float | None:
    """The first integer percentage of ``nvidia-smi ... --format=csv,noheader,nounits`` output
    (None when there is none, e.g. ``[N/A]``)."""
    for line in text.splitlines():
        line = line.strip()
        if line and line.replace(".", "", 1).isdigit():
            return float(line)
    return None


def read_gpu_busy(device: torch.device | str) -> float | None:
    """One reading of the GPU's busy percentage (None on the CPU or when unreadable)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        return float(torch.cuda.utilization(index))
    except Exception:  # no pynvml / NVML: ask nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_smi_percent(out.stdout)


class BusySampler:
    """Samples a busy percentage every ``interval_s`` seconds in a thread (context manager).

    Args:
        read: Returns one reading (or None when unavailable); e.g. ``lambda:
            read_gpu_busy("cuda")``.
        interval_s: Seconds between readings.
    """

    def __init__(self, read: Callable[[], float | None], interval_s: float = 0.5) -> None:
        self.read = read
        self.interval_s = float(interval_s)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            value = self.read()
            if value is not None:
                self.samples.append(float(value))

    def __enter__(self) -> BusySampler:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="busy-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        """Mean of the readings, or None without any."""
        return sum(self.samples) / len(self.samples) if self.samples else None
