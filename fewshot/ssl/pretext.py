"""Pretext transforms and clustering as pure functions: rotations (RotNet), jigsaw puzzles and
their permutation set, spherical k-means (DeepCluster). Batched; no loop per image."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def jigsaw_permutations(count: int, grid: int = 3, seed: int = 0) -> Tensor:
    """``count`` permutations of the ``grid * grid`` tiles, chosen greedily for large Hamming
    distances (Noroozi & Favaro 2016, "maximal" set): a random first one, then each time the
    permutation with the largest mean Hamming distance to those already chosen (ties: the first
    in lexicographic order). Returns long ``[count, grid * grid]``."""
    tiles = grid * grid
    every = np.array(list(itertools.permutations(range(tiles))), dtype=np.int8).T.copy()
    if not 1 <= count <= every.shape[1]:
        raise ValueError(f"jigsaw permutations must be between 1 and {every.shape[1]} for a "
                         f"{grid}x{grid} grid, got {count}")
    first = int(torch.randint(every.shape[1], (1,), generator=torch.Generator().manual_seed(seed)))
    # mean Hamming distance to the chosen set = tiles - (matching positions summed) / |set|
    chosen, matches = [first], np.zeros(every.shape[1], dtype=np.int64)
    taken = np.zeros(every.shape[1], dtype=bool)
    for _ in range(count - 1):  # numpy: many tiny ops, faster than torch's threaded ones
        last = every[:, chosen[-1]]
        for i in range(tiles):
            matches += every[i] == last[i]
        taken[chosen[-1]] = True
        chosen.append(int(np.where(taken, np.iinfo(np.int64).max, matches).argmin()))
    every = torch.from_numpy(every.T.copy())
    return every[chosen].long()


def jigsaw_tiles(x: Tensor, perms: Tensor, choice: Tensor, grid: int = 3,
                 tile_fraction: float = 0.85, generator: torch.Generator | None = None) -> Tensor:
    """Cut each image into ``grid x grid`` cells, take a random square crop of side
    ``tile_fraction`` of the cell inside each (no shared edges to exploit, as the paper's 64-pixel
    tiles in 75-pixel cells) and shuffle the tiles by permutation ``perms[choice]``.

    Args:
        x: ``[B, C, H, W]``; perms: ``[P, grid * grid]``; choice: ``[B]`` in ``0..P-1``.
    Returns:
        tiles ``[B, grid * grid, C, t, t]`` with ``tiles[b, i]`` the tile of cell
        ``perms[choice[b], i]`` (cells numbered row by row); the label of image ``b`` is
        ``choice[b]``.
    """
    b, c, h, w = x.shape
    cell = min(h, w) // grid
    t = max(1, round(cell * tile_fraction))
    n = grid * grid
    offset = torch.randint(0, cell - t + 1, (b, n, 2), generator=generator).to(x.device)
    origin = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"),
                         -1).view(n, 2).to(x.device) * cell  # (row, col) of each cell
    start = origin + offset  # [B, n, 2]
    ar = torch.arange(t, device=x.device)
    rows = (start[..., 0, None] + ar)[:, :, :, None]  # [B, n, t, 1]
    cols = (start[..., 1, None] + ar)[:, :, None, :]  # [B, n, 1, t]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    tiles = x[bi, :, rows, cols]  # [B, n, t, t, C]
    tiles = tiles.permute(0, 1, 4, 2, 3)
    order = perms.to(x.device)[choice]  # [B, n]
    return tiles[torch.arange(b, device=x.device)[:, None], order]


def kmeans(x: Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None
           ) -> tuple[Tensor, Tensor]:
    """Spherical k-means of the L2-normalised rows of ``x`` ``[N, D]``: centroids start at ``k``
    distinct random points; each iteration assigns every point to its most similar centroid
    (cosine) and moves each centroid to the normalised mean of its points; an empty cluster
    restarts at a random point (DeepCluster splits the largest instead).

    Returns: centroids ``[k, D]`` (unit norm) and assignments ``[N]`` in ``0..k-1``.
    """
    x = F.normalize(x.float(), dim=1)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= clusters <= points, got {k} clusters for {n}")
    centroids = x[torch.randperm(n, generator=generator)[:k].to(x.device)]
    assign = (x @ centroids.t()).argmax(1)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if empty.any():
            pick = torch.randint(n, (int(empty.sum()),), generator=generator).to(x.device)
            sums[empty] = x[pick]
        centroids = F.normalize(sums, dim=1)
        assign = (x @ centroids.t()).argmax(1)
    return centroids, assign
