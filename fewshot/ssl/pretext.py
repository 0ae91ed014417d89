"""Pretext transforms and clustering as pure functions: rotations (RotNet), jigsaw puzzles and
their permutation set, context-prediction patch pairs, the chromatic-aberration guard, input
corruptions of denoising and masked autoencoders, spherical k-means (DeepCluster). Batched; no
loop per image."""

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


def prepare_tiles(tiles: Tensor, size: int) -> Tensor:
    """Tiles ``[N, C, t, t]`` resized (bilinear) to at least ``size`` pixels (so a Conv-4 or
    ResNet-12, four 2x2 poolings, keeps a pixel) and normalised each on its own (mean and
    standard deviation per channel, as jigsaw's and context prediction's patches)."""
    if tiles.shape[-1] < size:
        tiles = F.interpolate(tiles, size=size, mode="bilinear", align_corners=False)
    mean = tiles.mean((2, 3), keepdim=True)
    return (tiles - mean) / tiles.std((2, 3), keepdim=True).clamp(min=1e-3)


NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # the 3x3 cells around the centre (4), row by row


def context_pairs(x: Tensor, tile_fraction: float = 0.7, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Context prediction's pairs (Doersch et al. 2015): for each image, the centre tile of a 3x3
    grid and one of its 8 neighbours, chosen uniformly, each a random crop of ``tile_fraction``
    of its cell (:func:`jigsaw_tiles`: a gap and a jitter between the two).

    Args:
        x: ``[B, C, H, W]``.
    Returns:
        centre tiles ``[B, C, t, t]``, neighbour tiles ``[B, C, t, t]`` and the neighbour's
        position ``[B]`` in ``0..7`` (:data:`NEIGHBOURS`: 0 top-left, 1 top, 2 top-right, 3 left,
        4 right, 5 bottom-left, 6 bottom, 7 bottom-right).
    """
    b = x.shape[0]
    label = torch.randint(8, (b,), generator=generator).to(x.device)
    identity = torch.arange(9)[None]
    tiles = jigsaw_tiles(x, identity, torch.zeros(b, dtype=torch.long, device=x.device), 3,
                         tile_fraction, generator)  # [B, 9, C, t, t], cells in order
    cells = torch.tensor(NEIGHBOURS, device=x.device)[label]
    return tiles[:, 4], tiles[torch.arange(b, device=x.device), cells], label


def drop_colours(x: Tensor, noise: float = 0.01, generator: torch.Generator | None = None
                 ) -> Tensor:
    """Colour dropping against chromatic aberration (Doersch et al. 2015): each image ``[B, C,
    H, W]`` keeps one random channel, the others replaced by Gaussian noise of ``noise`` times
    that channel's standard deviation. One channel: unchanged."""
    b, c = x.shape[:2]
    if c == 1:
        return x
    keep = torch.randint(c, (b,), generator=generator).to(x.device)
    kept = x[torch.arange(b, device=x.device), keep][:, None]  # [B, 1, H, W]
    std = kept.std((2, 3), keepdim=True)
    fill = torch.randn(x.shape, generator=generator).to(x.device) * noise * std
    mask = torch.arange(c, device=x.device)[None, :, None, None] == keep[:, None, None, None]
    return torch.where(mask, kept.expand_as(x), fill)


def patch_mask(b: int, size: int, patch: int, ratio: float, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> Tensor:
    """Masked-image modelling's mask (MAE, He et al. 2022, on a pixel grid as SimMIM): the image
    cut into ``patch`` x ``patch`` squares (the last row and column may be smaller), of which
    ``round(ratio * count)`` per image, chosen uniformly without replacement, are masked.
    Returns bool ``[B, 1, size, size]``, True where masked."""
    n = -(-size // patch)
    masked = round(ratio * n * n)
    order = torch.rand(b, n * n, generator=generator).argsort(1)
    grid = torch.zeros(b, n * n, dtype=torch.bool).scatter_(1, order[:, :masked], True)
    grid = grid.view(b, 1, n, n).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return grid[:, :, :size, :size].to(device)


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
