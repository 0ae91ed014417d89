"""Training and evaluation on several processes (GPUs, machines) with ``torch.distributed``.

Launch the usual command under ``torchrun`` (``torchrun --nproc-per-node 4 -m fewshot.cli train
...``); without torchrun's environment nothing here is used: no process group, no overhead.

- :func:`init` reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` and joins the process
  group (NCCL on CUDA, gloo on the CPU) with a bounded timeout for every collective.
- Each step's T episodes (or B images) are split across the ranks: every rank draws the indices of
  the whole batch from the same seeded generator and loads its own contiguous part
  (:mod:`episodes.shard`), so the ranks together train on exactly the batch one process would.
- :class:`GradientSync` makes every rank's gradient the gradient of the mean loss over the whole
  batch, whatever the ranks' shares: each rank weights its loss by its share of the batch and
  the gradients are summed across ranks, with ``DistributedDataParallel`` (its all-reduce
  overlaps the backward; metric learners, pre-training) or with one explicit all-reduce of the
  meta-gradient after the step's backward (learners whose ``gradient_sync`` is ``"all_reduce"``:
  MAML, whose functional inner loop DDP's hooks do not follow).
- Floating buffers (BatchNorm running statistics) are averaged across ranks after each step,
  weighted by the shares, which for per-episode statistics (:mod:`fewshot.models.episode_norm`) is
  exactly the single-process update. Pre-training normalises each rank's B/W images with their
  own statistics, so it matches a single process with BatchNorm over B/W images, not B.
- :func:`gather_shards` puts per-episode results of sharded evaluation back in episode order.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from episodes.shard import shard_range

DEFAULT_TIMEOUT = 600.0  # seconds a collective may wait for the other ranks


@dataclass(frozen=True)
class Context:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, logs, ``run.json`` and prints."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (:func:`episodes.shard.shard_range`)."""
        return shard_range(n, self.rank, self.world_size)


class Stopped(RuntimeError):
    """The launcher stopped this process (another rank failed)."""


COMMUNICATION_ERRORS = ("gloo", "NCCL", "Connection closed", "Connection reset", "timed out",
                        "Timed out", "ProcessGroup")


def lost_peers(e: BaseException) -> bool:
    """Whether ``e`` means that the other processes of a distributed run are gone or silent
    (gloo raises a plain ``RuntimeError`` naming itself when a peer's connection closes)."""
    if isinstance(e, Stopped | dist.DistError):
        return True
    return (isinstance(e, RuntimeError) and dist.is_available() and dist.is_initialized()
            and any(k in str(e) for k in COMMUNICATION_ERRORS))


def failure(e: BaseException, out: str | None) -> str:
    """One line for a distributed run that stopped: what happened and how to continue."""
    ctx = current() if dist.is_available() and dist.is_initialized() else launched()
    what = (str(e).strip().splitlines() or [type(e).__name__])[0]
    what = re.sub(r"^\[[^\]]*\]\s*", "", what).split(". ")[0]  # gloo: no source path, no advice
    if not isinstance(e, Stopped):
        what = (f"rank {ctx.rank} of {ctx.world_size} lost the other processes (a process failed, "
                f"was killed or did not answer within --dist-timeout): {type(e).__name__}: {what}")
    resume = (f": the last checkpoint is {out}/last.pt; continue with --resume (any number of "
              f"processes)" if out else "")
    return f"distributed run stopped: {what}{resume}"


def launched() -> Context:
    """The context torchrun's environment describes (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    return Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def current() -> Context:
    """The context of the initialised process group (a single process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), launched().local_rank)


def refuse_several_processes(learner: nn.Module | type) -> None:
    """Raise ValueError in a run on several processes when ``learner`` (or its class) trains in
    one only (its ``one_process`` reason, :class:`fewshot.models.learner.EpisodicLearner`)."""
    reason = getattr(learner, "one_process", None)
    if reason and current().active:
        raise ValueError(f"{reason}: run it without torchrun")


def local_device(device: torch.device) -> torch.device:
    """``device`` for this process: a CUDA device without an index becomes ``cuda:LOCAL_RANK``
    when launched by torchrun. Raises ``ValueError`` for ``cuda:N`` with several processes per
    node (they would share one GPU)."""
    ctx = launched()
    if device.type != "cuda" or not ctx.active:
        return device
    if device.index is None:
        return torch.device("cuda", ctx.local_rank)
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise ValueError(f"--device {device} would put every process of this node on one GPU: "
                         f"use --device cuda (each process takes GPU LOCAL_RANK)")
    return device


def init(device: torch.device, timeout: float = DEFAULT_TIMEOUT) -> Context:
    """Join the process group torchrun's environment describes (nothing for a single process).

    Args:
        device: this process's device (:func:`local_device`): NCCL for CUDA, gloo otherwise.
        timeout: seconds any collective waits for the other ranks before failing.
    """
    ctx = launched()
    if not ctx.active or dist.is_initialized():
        return current()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout),
                            device_id=device if cuda else None)
    # torchrun's agent stops the other workers with SIGTERM when one fails: end with one line
    signal.signal(signal.SIGTERM, _terminated)
    return current()


def _terminated(signum: int, frame: Any) -> None:
    raise Stopped(f"rank {current().rank} was stopped by the launcher (signal {signum}) because "
                  f"another process of the run failed")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    return (torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl" else torch.device("cpu"))


def all_reduce_(tensors: list[Tensor], scale: float = 1.0) -> None:
    """Replace each tensor (all of one dtype) by ``scale`` times its sum over the ranks, with one
    all-reduce of their concatenation."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(_comm_device())
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
            buf = t.detach().to(_comm_device())
            dist.broadcast(buf, 0)
            t.copy_(buf)


def gather_shards(local: Tensor, n: int) -> Tensor:
    """Every rank's part (:meth:`Context.part`) of ``n`` results ``[n_r, ...]`` put back in order:
    ``[n, ...]`` on every rank (on ``local``'s device)."""
    ctx = current()
    size = -(-n // ctx.world_size)
    padded = torch.zeros(size, *local.shape[1:], dtype=local.dtype, device=_comm_device())
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
    t = torch.tensor([float(flag)], device=_comm_device())
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


class _BatchLoss(nn.Module):
    """``learner.batch_loss`` (loss and accuracy) as a module's forward, for
    DistributedDataParallel."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        return self.learner.batch_loss(batch)


class GradientSync:
    """Makes a step's gradients on every rank those of the mean loss over the whole batch.

    Each rank multiplies its loss by :attr:`loss_weight`: its ``share`` of the batch (its
    episodes / T), times the world size under DDP, which divides the summed gradient by it.
    Single process (``ctx`` not active): a plain forward, weight 1, nothing to synchronise.

    Args:
        learner: the learner (its ``gradient_sync``: ``"ddp"`` or ``"all_reduce"``).
        ctx: the run's context; share: this rank's fraction of each step's batch.
        device: the learner's device.
    """

    def __init__(self, learner: nn.Module, ctx: Context, share: float, device: torch.device
                 ) -> None:
        self.learner, self.ctx, self.share, self.ddp = learner, ctx, share, None
        self.loss_weight = share
        if not ctx.active:
            return
        if getattr(learner, "gradient_sync", "ddp") == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # buffers are synchronised at construction, then averaged by finish(), not copied
            # from rank 0 at every forward (newer torch: forward_sync_buffers; older:
            # broadcast_buffers, which newer torch deprecates)
            params = inspect.signature(DistributedDataParallel).parameters
            no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in params
                       else "broadcast_buffers": False}
            ids = None
            if device.type == "cuda":
                ids = [torch.cuda.current_device() if device.index is None else device.index]
            self.ddp = DistributedDataParallel(_BatchLoss(learner), device_ids=ids, **no_sync)
            self.loss_weight = share * ctx.world_size
        else:
            broadcast_module(learner)

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``learner.batch_loss(batch)``: loss and accuracy (through DDP when it
        synchronises)."""
        return self.ddp(batch) if self.ddp is not None else self.learner.batch_loss(batch)

    def chunk(self, last: bool) -> contextlib.AbstractContextManager:
        """Context of one chunk's forward and backward: DDP synchronises on the last only."""
        return self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()

    def finish(self) -> None:
        """After the step's backward: sum the gradients across ranks (all-reduce learners) and
        average the floating buffers."""
        if not self.ctx.active:
            return
        if self.ddp is None:
            self._check_same_gradients()
            grads: dict[torch.dtype, list[Tensor]] = {}
            for p in self.learner.parameters():
                if p.grad is not None:
                    grads.setdefault(p.grad.dtype, []).append(p.grad)
            for group in grads.values():
                all_reduce_(group)
        average_buffers(self.learner, self.share)

    def _check_same_gradients(self) -> None:
        """Raise RuntimeError on every rank unless all ranks have gradients for the same
        parameters: the all-reduce of differently sized lists would otherwise wait for the
        collective's timeout (one small all-reduce of a mask ``[P]``)."""
        named = list(self.learner.named_parameters())
        has = torch.tensor([float(p.grad is not None) for _, p in named], device=_comm_device())
        dist.all_reduce(has)
        differ = [n for (n, _), c in zip(named, has.tolist(), strict=True)
                  if c not in (0, self.ctx.world_size)]
        if differ:
            raise RuntimeError(f"the ranks' backward passes reached different parameters "
                               f"({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''} "
                               f"have a gradient on some ranks only): every rank's loss must use "
                               f"the same parameters")
