"""Random streams of the processes of a run, saved in and restored from checkpoints.

Every process keeps its own global RNG and sampler state; in a distributed run
(:mod:`fewshot.engine.distributed`) the sampler takes the process's part of each batch and processes
other than 0 draw augmentation and other random numbers from streams seeded by ``(seed, rank)``
(:func:`episodes.shard.rank_seed`). ``last.pt`` holds every rank's state, so a run resumed on as
many processes continues exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from episodes.shard import rank_seed

from .distributed import Context


def rng_state() -> dict:
    """This process's global RNG states (CPU, and every CUDA device)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def shard_sampler(sampler: Any, ctx: Context) -> None:
    """Give this rank its part of every batch and, on ranks > 0, RNG streams of their own."""
    if not ctx.active:
        return
    if not hasattr(sampler, "shard"):
        raise ValueError(f"a {type(sampler).__name__} cannot be split across processes: train "
                         f"it in one process")
    sampler.shard(ctx.rank, ctx.world_size)
    if ctx.rank:
        torch.manual_seed(rank_seed(torch.initial_seed(), ctx.rank))


def restore_streams(sampler: Any, ckpt: dict, ctx: Context) -> None:
    """This rank's sampler and RNG state from a checkpoint: its own when the run had as many
    ranks, else rank 0's episode stream with new augmentation and RNG streams on ranks > 0."""
    ranks = ckpt.get("ranks")
    same = (len(ranks) if ranks else 1) == ctx.world_size
    own = ranks[ctx.rank] if same and ranks else {"sampler": ckpt["sampler"], "rng": ckpt["rng"]}
    sampler.load_state_dict(own["sampler"])
    set_rng_state(own["rng"])
    if not same and ctx.main:
        warnings.warn(f"resuming a run of {len(ranks) if ranks else 1} process(es) on "
                      f"{ctx.world_size}: the weights, optimizer, schedule, step and drawn "
                      f"episodes continue; the augmentation and random draws of processes other "
                      f"than 0 differ, so the run is not bit-identical to an uninterrupted one",
                      stacklevel=2)
    if ctx.active and not same:
        sampler.shard(ctx.rank, ctx.world_size, salt=ckpt["step"])
        if ctx.rank:
            torch.manual_seed(rank_seed(getattr(sampler, "seed", 0), ctx.rank, ckpt["step"]))
