"""Counts tensor values read back to the host, by where they are read.

On a GPU each read (``item``, ``tolist``, a tensor turned into a bool, int, float or list
index) makes the host wait until the device has run everything queued before it, so a
training step or a body forward that should queue work ahead must read none. This counts
them on any device (on the CPU too, where they cost nothing) by wrapping those methods of
`torch.Tensor` while the context is open.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
"""The `torch.Tensor` methods that read a value back to the host."""

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def count_host_reads(depth: int = 3) -> Iterator[collections.Counter]:
    """Counts every host read made while the context is open.

    Args:
        depth: Frames of this repository's code named per read, innermost first.

    Yields:
        A Counter ``{(method, "file:line <- caller:line ..."): reads}``, filled as reads
        happen (``sum(counter.values())``: all of them); paths relative to the repository.
    """
    hits: collections.Counter = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name: str, method):
        def counted(tensor, *args, **kwargs):
            ours = [f for f in traceback.extract_stack()[:-1]
                    if f.filename.startswith(str(_PACKAGE_ROOT))]  # fmt: skip
            where = " <- ".join(f"{Path(f.filename).relative_to(_PACKAGE_ROOT)}:{f.lineno}"
                                for f in ours[::-1][:depth])  # fmt: skip
            hits[(name, where)] += 1
            return method(tensor, *args, **kwargs)

        return counted

    for name, method in saved.items():
        setattr(torch.Tensor, name, counting(name, method))
    try:
        yield hits
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
