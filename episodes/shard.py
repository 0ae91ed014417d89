"""Splitting each drawn batch across the processes of a distributed run.

Every process of a run draws the same batch of indices from the same seeded generator (indices
are cheap) and loads only its own contiguous part (:func:`shard_range`), so the union of the
processes' parts is exactly the batch one process would draw: a distributed run sees the
episodes of a single-process run, and its sampler state is the same on every process.
Augmentation draws stay per process, from generators seeded by ``(seed, rank)``
(:func:`rank_seed`).
"""

from __future__ import annotations

import hashlib


def shard_range(n: int, rank: int, world_size: int) -> slice:
    """The part of ``n`` items process ``rank`` of ``world_size`` takes: contiguous, sizes
    ``n // world_size`` plus one for the first ``n % world_size`` ranks (may be empty)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def rank_seed(seed: int, rank: int, salt: int = 0) -> int:
    """A seed for process ``rank`` from a run's ``seed``: ``seed`` itself for rank 0 (salt 0),
    so a single-process run is unchanged; otherwise a 63-bit hash of ``(seed, rank, salt)``."""
    if rank == 0 and salt == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{rank}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_shardable(items: int, world_size: int, what: str, flag: str) -> None:
    """Raise ``ValueError`` if ``items`` per step cannot give every one of ``world_size``
    processes at least one (``what``: "episodes" or "images"; ``flag``: the option to raise)."""
    if items < world_size:
        raise ValueError(f"{items} {what} per step cannot be split across {world_size} processes: "
                         f"raise {flag} to at least {world_size}, or launch fewer processes")
