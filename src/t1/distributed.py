"""Process groups for jobs started by `torchrun` or `accelerate launch`.

Both launchers put RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process's
environment. `from_env()` joins that group (gloo: the group only carries barriers and small
Python objects, so it works the same on CPU and GPU machines, on one node or several) and returns
a `Group`; without those variables it returns the one-process group, whose collectives are no-ops.
The world/rank convention is the one of `t1.training.losses.world`: an initialized
`torch.distributed` default group wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# Ranks that finish their shards early wait for the slowest one at a barrier; a launcher that
# loses a rank stops the others, so a long timeout costs nothing.
DEFAULT_TIMEOUT_S = float(os.environ.get("T1_DIST_TIMEOUT", 6 * 3600))


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's `obj`, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


SINGLE = Group()


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher set them; (0, 1, 0) when not launched."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", rank) or 0)
    return rank, world, local


def current() -> Group:
    """The initialized default process group, or the one-process group."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return SINGLE
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()) or 0)
        return Group(dist.get_rank(), dist.get_world_size(), local)
    return SINGLE


def from_env(timeout_s: float | None = None) -> Group:
    """Join the process group a launcher set up (WORLD_SIZE > 1), or reuse one already joined."""
    group = current()
    if group.world > 1:
        return group
    rank, world, local = env_world()
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S))
    return Group(dist.get_rank(), dist.get_world_size(), local)


def leave() -> None:
    """Leave the process group joined by `from_env` (at the end of a command)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(group: Group, device: str | None) -> str | None:
    """The device of this rank: its own GPU when there are GPUs and none was named (or just
    "cuda" was), else the device asked for."""
    if group.world == 1 or device not in (None, "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{group.local_rank % torch.cuda.device_count()}"
    return device
