"""The collectives of a distributed run (every rank must call them): sums, broadcasts and gathers
of tensors and objects, a result computed on rank 0 only, a barrier. Part of
:mod:`fewshot.engine.distributed`."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from episodes.shard import shard_range

from .process_group import current


def comm_device() -> torch.device:
    """Where tensors go for a collective: the current CUDA device under NCCL, else the CPU."""
    return (torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl" else torch.device("cpu"))


def all_reduce_(tensors: list[Tensor], scale: float = 1.0) -> None:
    """Replace each tensor (all of one dtype) by ``scale`` times its sum over the ranks, with one
    all-reduce of their concatenation."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(comm_device())
    if scale != 1.0:
        flat.mul_(scale)
    dist.all_reduce(flat)
    for t, piece in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(piece.view_as(t))


def average_buffers(module: nn.Module, share: float) -> None:
    """Set every floating buffer of ``module`` to the ``share``-weighted sum over the ranks (the
    shares sum to 1): the running statistics of the whole batch."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for b in module.buffers():
        if b.is_floating_point():
            by_dtype.setdefault(b.dtype, []).append(b)
    for group in by_dtype.values():
        all_reduce_(group, share)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.detach().to(comm_device())
            dist.broadcast(buf, 0)
            t.copy_(buf)


def gather_shards(local: Tensor, n: int) -> Tensor:
    """Every rank's part (:meth:`Context.part`) of ``n`` results ``[n_r, ...]`` put back in order:
    ``[n, ...]`` on every rank (on ``local``'s device)."""
    ctx = current()
    size = -(-n // ctx.world_size)
    padded = torch.zeros(size, *local.shape[1:], dtype=local.dtype, device=comm_device())
    padded[:len(local)] = local
    pieces = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(pieces, padded)
    parts = [shard_range(n, r, ctx.world_size) for r in range(ctx.world_size)]
    return torch.cat([p[:s.stop - s.start] for p, s in zip(pieces, parts, strict=True)]
                     ).to(local.device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    out: list[Any] = [None] * current().world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    t = torch.tensor([float(flag)], device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def on_main(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` run on rank 0 only, its result returned on every rank; an exception there
    is raised on every rank (as ``type(e)(message)``), so no rank waits for one that failed."""
    result, error = None, None
    if current().main:
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001 - passed to every rank, then raised
            error = e
    if current().active:
        box = [(result, None if error is None else
                (type(error), str(error.args[0]) if error.args else str(error)))]
        dist.broadcast_object_list(box, 0)
        result, failed = box[0]
        if failed is not None and error is None:
            raise failed[0](failed[1])
    if error is not None:
        raise error
    return result


def barrier() -> None:
    """Wait for every rank (nothing for a single process)."""
    if current().active:
        dist.barrier()
