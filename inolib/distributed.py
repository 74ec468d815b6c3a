"""Process group set-up for ``torchrun`` (one GPU per process, any number of nodes), and a plain single process.

A run started without ``torchrun`` (no ``WORLD_SIZE`` in the environment) is rank 0 of 1 and never touches
``torch.distributed`` (dino #3: a single GPU must not need a launcher). Every collective used elsewhere is
guarded the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on CUDA, gloo on CPU); each
    process takes GPU ``LOCAL_RANK``. Without ``torchrun``: a single process on ``device``."""
    dev = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistInfo(rank, world, local, dev)


def ready() -> bool:
    """Whether a process group is up (False in a plain single process)."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if ready():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average floats over processes (a no-op in a single process): one collective for the whole dict."""
    if not ready() or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(values.keys(), t.tolist()))


def cleanup() -> None:
    """Leave the process group: every process first reaches the barrier, so none tears its connections
    down while another still uses them."""
    if ready():
        dist.barrier()
        dist.destroy_process_group()
