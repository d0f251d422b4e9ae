"""Data-parallel training over several processes (one per GPU) with DistributedDataParallel.

Launch any training entry point under torchrun and call `init_from_env()` first; `run_training`
then notices the process group (`active_context()`) and, without any change to the recipes:

- wraps each trainable network the recipe calls through an attribute (self.generator, ...) in
  DDP, so gradients are averaged across processes at every backward pass; the recipe's `modules`
  dict keeps the bare networks, so checkpoints are the same as a single-process run's;
- on CUDA, turns batch norm into SyncBatchNorm, so statistics come from the whole global batch
  and a step computes what one process would on that batch (gloo on CPU has no SyncBatchNorm:
  there each rank normalises its slice, and rank 0's running statistics are copied to all at the end);
- gives every rank its slice of each batch: the global batch is the configured batch size and
  batch (epoch, index) is still decided by the seed alone, so a resumed run sees the same data;
- lets only rank 0 write checkpoints, the metrics log, the exported model and the progress bar.

Backends: nccl on CUDA, gloo on CPU (what the tests use). In a single process nothing here is
active and training is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from imgsteal.errors import ImgstealError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def wrap_recipe(self, recipe: Any) -> Any:
        """Replace, in place, each recipe attribute that holds one of `recipe.modules` with trainable
        parameters by a DistributedDataParallel wrapper of it. Returns the recipe.

        A network must use all or none of its parameters in each backward pass (true of the pix2pix
        and SRGAN recipes: a frozen discriminator in the generator step gets no gradient at all); a
        recipe that breaks this sets `ddp_find_unused_parameters = True`.
        """
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            for module in recipe.modules.values():
                # In place for nested layers (same Parameter objects, so the optimizers still hold them).
                nn.SyncBatchNorm.convert_sync_batchnorm(module)
        trainable = {id(m): m for m in recipe.modules.values() if any(p.requires_grad for p in m.parameters())}
        find_unused = bool(getattr(recipe, "ddp_find_unused_parameters", False))
        device_ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
        # broadcast_buffers=False: a discriminator called twice before one backward (real, then fake)
        # would otherwise get its batch-norm buffers overwritten in place between the two calls, which
        # autograd rejects on some torch releases (seen with 2.11); sync_buffers() aligns them at the end.
        wrappers = {key: DistributedDataParallel(m, device_ids=device_ids, find_unused_parameters=find_unused,
                                                 broadcast_buffers=False)
                    for key, m in trainable.items()}
        replaced = set()
        for attr, value in list(vars(recipe).items()):
            if isinstance(value, nn.Module) and id(value) in wrappers:
                setattr(recipe, attr, wrappers[id(value)])
                replaced.add(id(value))
        missing = [name for name, m in recipe.modules.items() if id(m) in trainable and id(m) not in replaced]
        if missing:
            raise ImgstealError(f"{type(recipe).__name__} does not call {', '.join(missing)} through an attribute, "
                                "so distributed training cannot wrap it")
        return recipe

    def sync_buffers(self, recipe: Any) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every rank, so all ranks end
        with the same state as the model rank 0 exports."""
        for module in recipe.modules.values():
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def shard(self, source: Any) -> "ShardedSource":
        return ShardedSource(source, self.rank, self.world_size)


@dataclass
class ShardedSource:
    """A batch source whose batch (epoch, index) is rank's slice [rank::world_size] of the full batch."""

    source: Any
    rank: int
    world_size: int

    @property
    def batches_per_epoch(self) -> int:
        return self.source.batches_per_epoch

    def batch(self, epoch: int, index: int) -> tuple:
        full = self.source.batch(epoch, index)
        if len(full[0]) < self.world_size:
            raise ImgstealError(f"a batch of {len(full[0])} cannot be split over {self.world_size} processes; "
                                "raise the batch size to at least the number of processes")
        return tuple(t[self.rank :: self.world_size] for t in full)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the variables torchrun sets; (0, 1, 0) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_from_env(device: str = "auto") -> DistributedContext | None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    device: auto -> this rank's GPU (cuda:LOCAL_RANK, nccl) when CUDA is there, else CPU (gloo);
    cpu forces gloo. Returns None (and does nothing) outside torchrun or with a single process.
    """
    rank, world, local_rank = env_world()
    if world <= 1:
        return None
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        ctx_device = torch.device("cuda", local_rank)
    else:
        ctx_device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistributedContext(rank, world, local_rank, ctx_device)


def active_context() -> DistributedContext | None:
    """The context of an initialised process group of more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    _, _, local_rank = env_world()
    use_cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
