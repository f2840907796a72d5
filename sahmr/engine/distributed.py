"""torch.distributed set-up from torchrun's environment, DDP wrapping, rank-0 helpers.

Launch several processes with ``torchrun --nproc_per_node N tools/train.py ...``; each reads
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment. NCCL is used on CUDA, gloo
on CPU. Without those variables (or with ``WORLD_SIZE=1``) everything runs in one process and
every helper here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank.
        local_rank: Rank on this host (selects the CUDA device).
        world_size: Number of processes.
        device: This process's device.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Initialise the process group from torchrun's environment (if any).

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; under torchrun CUDA processes take
            ``cuda:<LOCAL_RANK>``.

    Returns:
        This process's `DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        logger.info("process group: %s, rank %d/%d on %s", backend, rank, world, dev)
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def cleanup() -> None:
    """Destroy the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    """Whether a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_dist():
        dist.barrier()


def wrap_ddp(
    model: nn.Module, info: DistInfo, *, find_unused_parameters: bool = False
) -> nn.Module:
    """DistributedDataParallel around ``model`` under a process group, else the model itself.

    Methods without trainable parameters are returned unwrapped. On CUDA every BatchNorm layer
    becomes a `torch.nn.SyncBatchNorm` first (in place: ``model`` keeps its identity), so the
    running statistics are those of the global batch and the same on every rank - the model
    validated and saved by rank 0 is the model every rank trained. (On CPU process groups,
    gloo, SyncBatchNorm is unsupported and each rank keeps its own statistics.)
    """
    if not info.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    if info.device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when ``model`` itself is a BatchNorm layer
            raise ValueError("wrap_ddp expects a method module, not a bare BatchNorm layer")
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list without a process group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a copy; the input is untouched)."""
    out = tensor.detach().clone()
    if is_dist():
        if dist.get_backend() == "nccl" and out.device.type != "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
            out = out.to(dev)
            dist.all_reduce(out)
            return out.to(tensor.device)
        dist.all_reduce(out)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a time budget ran out)."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)
