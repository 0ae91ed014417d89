"""The process group of a run launched by ``torchrun``: this process's place in it
(:class:`Context`), joining and leaving it (:func:`init`, :func:`shutdown`), the device of each
process, and the one-line message of a run whose processes lost each other. Part of
:mod:`fewshot.engine.distributed`."""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

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
