"""Training on several processes with PyTorch's own engine, so that a run scales past one machine
without a scheduler of ours:

    torchrun --nproc_per_node=2 train.py --data data/fer2013 --arch paper ...      # one machine, 2 processes
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 train.py ...   # and so on

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``setup`` reads them and joins the process
group (gloo on CPUs, NCCL on GPUs). Each rank keeps only its shard of the in-memory training images
and trains on ``batch_size / world`` of every global batch; DistributedDataParallel averages the
gradients, so one step is the same step a single process takes on the whole batch. Only rank 0
writes the run folder, the checkpoints and the resume state; it alone evaluates, and sends the
other ranks what they need to decide alike (the validation accuracy, whether to stop).

Without torchrun every function here is a no-op and training is the single-process loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


class RemoteFailure(RuntimeError):
    """Rank 0 failed a step every rank depends on; the message is rank 0's."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        """Whether this process is one of several (started by torchrun)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and evaluates."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each rank on its own GPU of the machine."""
        return torch.device("cuda", self.local_rank) if self.active and device.type == "cuda" else device

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's share of the training images (every ``world``-th one, from its rank)."""
        return tensor[self.rank::self.world].clone() if self.active else tensor

    def steps(self, n_train: int, batch_size: int) -> int:
        """Steps per epoch, the same on every rank (a rank that stepped once more would wait forever)."""
        return (n_train // self.world) // self.per_rank_batch(batch_size) or 1

    def per_rank_batch(self, batch_size: int) -> int:
        return batch_size // self.world

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give every rank its result. Any error on rank 0 (an expected
        ``TrainingError`` or a full disk alike) is raised on every rank, as ``RemoteFailure`` on the
        others, so that no rank is left waiting in a collective the failed rank never joins."""
        if not self.active:
            return fn()
        result: Any = None
        failure: BaseException | None = None
        if self.main:
            try:
                result = fn()
            except BaseException as exc:  # re-raised below, once the other ranks have heard of it
                failure = exc
        outcome = self.broadcast((result, (str(failure) or type(failure).__name__) if failure else None))
        if failure is not None:
            raise failure
        if outcome[1] is not None:
            raise RemoteFailure(outcome[1])
        return outcome[0]

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """The values summed over every rank (one collective for all of them)."""
        if not self.active:
            return list(values)
        flat = torch.stack([v.to(values[0].device, torch.float64).reshape(()) for v in values])  # NCCL: on the GPU
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return list(flat.unbind())

    def epoch_generator(self, gen: torch.Generator, seed: int, epoch: int) -> None:
        """Under torchrun, each rank's data order, augmentation and dropout follow from (seed, epoch,
        rank) alone, so a resumed run needs no rank's generator state but its own epoch number."""
        if self.active:
            stream = seed * 1_000_003 + epoch * 1_009 + self.rank
            gen.manual_seed(stream)
            torch.manual_seed(stream)  # dropout


def setup(device: str = "auto") -> Ranks:
    """Join the process group torchrun describes (once per process); the single-process ``Ranks`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                  local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(ranks.local_rank)
        else:  # the machine's cores shared among its ranks, not each rank using all of them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return ranks


def is_main_process() -> bool:
    """Rank 0, or the only process; known from torchrun's environment, with or without a process group."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
