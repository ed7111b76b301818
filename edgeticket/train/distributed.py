"""torchrun support: process group set-up, rank helpers, buffer and object broadcast.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) the trainer wraps the model
in DistributedDataParallel; NCCL on GPU, gloo on CPU. Without them everything is rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: bool = False  # a process group is initialised (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Data-parallel: DDP, a DistributedSampler, collectives. torchrun --nproc_per_node 1
        turns it on too, so that one GPU runs the same NCCL/DDP path as eight."""
        return self.group


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_from_env(device: str) -> DistInfo:
    """Join the process group torchrun describes; a no-op for a plain single process."""
    if not launched_by_torchrun():
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        # Rank 0 may prepare a 2.8 GB dataset while the others wait: allow it time.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return DistInfo(rank, world, local, group=True)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                        group=True)
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """BN running statistics drift apart per rank; take rank 0's."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for b in module.buffers():
        dist.broadcast(b, src)


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank raised ``flag`` (one all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
