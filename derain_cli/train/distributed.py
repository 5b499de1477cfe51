"""Data-parallel plumbing: launch ranks, average gradients, agree on flags.

``--gpus N`` without a launcher spawns N processes with :mod:`torch.multiprocessing`; under
``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) every process is already a rank and
joins the group from the environment, so multi-node training works through torchrun. NCCL on
GPUs, gloo on CPU. Only rank 0 writes files.

Why not ``DistributedDataParallel``: NLCL's update is two backward passes per step (D, then G)
through several methods of one objective, with the discriminator used -- frozen -- inside the
generator step. DDP hooks a single ``forward`` and would need ``find_unused_parameters`` plus
no_sync juggling. Averaging each optimiser's gradients with one flattened all-reduce right
after its backward is exactly DDP's arithmetic (mean over the global batch) and
``tests/test_distributed.py`` checks it against a single-process run with the same global batch.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from derain_cli.errors import UsageError, setting
from derain_cli.torchrun import rank_env


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank ``rank`` of ``world``, computing on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def under_launcher() -> bool:
    """True when torchrun (or another launcher) set up the rank environment."""
    return rank_env().launched


def check_gpus(device: torch.device, gpus: int) -> None:
    """Refuse more CUDA ranks than devices (CPU ranks are just processes)."""
    if device.type == "cuda" and gpus > torch.cuda.device_count():
        raise UsageError(
            f"{setting('train.gpus')} {gpus}: only {torch.cuda.device_count()} CUDA device(s) here"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_process_group(
    base: torch.device, *, rank: int, world: int, local_rank: int, init_method: str | None = None
) -> DistContext:
    """Join the group (NCCL for CUDA, gloo for CPU) and pin this rank's device."""
    if base.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # Ranks share the cores: without this each one spawns a thread per core and they thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, world)))
    kwargs: dict[str, Any] = {"timeout": timedelta(minutes=30)}
    if init_method is not None:
        kwargs["init_method"] = init_method
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device)


def context_from_env(base: torch.device) -> DistContext:
    """torchrun: RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT) come from the environment."""
    ranks = rank_env()
    rank, world = ranks.rank, ranks.world
    local_rank = ranks.local_rank if ranks.local_rank is not None else rank
    if world == 1:
        device = torch.device("cuda", local_rank) if base.type == "cuda" else base
        return DistContext(rank=0, world=1, local_rank=local_rank, device=device)
    return init_process_group(base, rank=rank, world=world, local_rank=local_rank)


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start)."""
    if not ctx.active:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: Sequence[nn.Parameter], ctx: DistContext) -> None:
    """Mean of every rank's gradients, in one flattened all-reduce (DDP's arithmetic).

    A parameter without a gradient on this rank counts as zero only if another rank has one;
    parameters no rank touched keep ``grad = None`` so Adam skips them as in a single process.
    """
    if not ctx.active or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    touched = [p for p, flag in zip(params, has.tolist(), strict=True) if flag]
    if not touched:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in touched]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for param in touched:
        count = param.numel()
        chunk = flat[offset : offset + count].view_as(param).to(param.dtype)
        if param.grad is None:
            param.grad = chunk.clone()
        else:
            param.grad.copy_(chunk)
        offset += count


def mean_across_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Average a float tensor over ranks (used for logged losses)."""
    if ctx.active:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world
    return values


def gather_strings(value: str, ctx: DistContext) -> list[str]:
    """Every rank's ``value`` (e.g. weight checksums), in rank order."""
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return [str(v) for v in out]


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def spawn(
    worker: Callable[..., None], args: Iterable[Any], nprocs: int
) -> torch.multiprocessing.ProcessContext:
    """Start ``nprocs`` processes running ``worker(rank, *args)`` (not joined)."""
    import torch.multiprocessing as mp

    context = mp.start_processes(
        worker, args=tuple(args), nprocs=nprocs, join=False, start_method="spawn"
    )
    assert context is not None
    return context
