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

The process group lives in :mod:`fewshot.engine.process_group`, the collectives in
:mod:`fewshot.engine.collectives`; both are importable from here, with :class:`GradientSync`.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .collectives import (
    all_reduce_,
    any_rank,
    average_buffers,
    barrier,
    broadcast_module,
    comm_device,
    gather_objects,
    gather_shards,
    on_main,
)
from .process_group import (
    COMMUNICATION_ERRORS,
    DEFAULT_TIMEOUT,
    Context,
    Stopped,
    current,
    failure,
    init,
    launched,
    local_device,
    lost_peers,
    refuse_several_processes,
    shutdown,
)

__all__ = [
    "COMMUNICATION_ERRORS", "DEFAULT_TIMEOUT", "Context", "GradientSync", "Stopped",
    "all_reduce_", "any_rank", "average_buffers", "barrier", "broadcast_module", "current",
    "failure", "gather_objects", "gather_shards", "init", "launched", "local_device", "lost_peers",
    "on_main", "refuse_several_processes", "shutdown",
]


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
        has = torch.tensor([float(p.grad is not None) for _, p in named], device=comm_device())
        dist.all_reduce(has)
        differ = [n for (n, _), c in zip(named, has.tolist(), strict=True)
                  if c not in (0, self.ctx.world_size)]
        if differ:
            raise RuntimeError(f"the ranks' backward passes reached different parameters "
                               f"({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''} "
                               f"have a gradient on some ranks only): every rank's loss must use "
                               f"the same parameters")
