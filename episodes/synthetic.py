"""The embedded default dataset: Omniglot-like characters drawn from random stroke programs.

Needs no download and no network. Each of the 1,200 classes is a "character": a program of 2 to 4
pen strokes, each a quadratic Bezier curve. Each of its 20 images is a new drawing of that program:
the control points are jittered (by 0.09 of the half-width), the whole character gets a random
affine distortion (rotation, scale, shear, translation) and a random pen width, and the strokes
are rasterised with antialiasing at 28x28 (ink 255, paper 0). Generation is deterministic
(seeded) and takes seconds; the result is cached. Classes are split 900 train / 100 val / 200 test.

The images are generated, not decoded, but the dataset records the pipeline that makes a raw file
look like them: ``ImagePipeline(1, image_size, "area", invert=False)``. The rasteriser's coverage
antialiasing is an area average of the ideal drawing, hence "area"; and there is no inversion, so a
file to be labelled by a model trained on these characters must show light ink on a dark ground
(invert dark-on-white drawings before, or state ``invert=true``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from .cache import load_cache, save_cache
from .dataset import TensorClassDataset
from .io import default_cache_dir
from .pipeline import ImagePipeline

VERSION = 2
NUM_CLASSES, IMAGES_PER_CLASS = 1200, 20
SPLIT_SIZES = {"train": 900, "val": 100, "test": 200}
MAX_STROKES, POINTS_PER_STROKE = 4, 40


def character_programs(num_classes: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Control points ``[num_classes, MAX_STROKES, 3, 2]`` in [-0.75, 0.75] and a stroke mask
    ``[num_classes, MAX_STROKES]`` (2 to 4 strokes; later strokes often start where one ended)."""
    pts = (torch.rand(num_classes, MAX_STROKES, 3, 2, generator=g) * 2 - 1) * 0.75
    chain = torch.rand(num_classes, MAX_STROKES, generator=g) < 0.5
    pts[:, 1:, 0] = torch.where(chain[:, 1:, None], pts[:, :-1, 2], pts[:, 1:, 0])
    count = torch.randint(2, MAX_STROKES + 1, (num_classes, 1), generator=g)
    return pts, torch.arange(MAX_STROKES) < count


def draw(pts: Tensor, mask: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Draw one jittered, distorted rendering of each program.

    Args:
        pts: control points ``[B, S, 3, 2]``; mask: ``[B, S]`` strokes in use.
    Returns:
        uint8 ``[B, 1, size, size]``.
    """
    b = pts.shape[0]
    pts = pts + 0.09 * torch.randn(pts.shape, generator=g)
    angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(18)
    scale = 0.85 + 0.25 * torch.rand(b, generator=g)
    shear = (torch.rand(b, generator=g) * 2 - 1) * 0.15
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    affine = torch.stack([torch.stack([cos, -sin + shear], -1), torch.stack([sin, cos], -1)], -2)
    shift = (torch.rand(b, 1, 1, 2, generator=g) * 2 - 1) * 0.12
    pts = torch.einsum("bij,bskj->bski", affine, pts) + shift
    # Dense points along each Bezier curve, unused strokes moved far away: [B, S*P, 2].
    t = torch.linspace(0, 1, POINTS_PER_STROKE).view(1, 1, -1, 1)
    p0, p1, p2 = pts[:, :, 0:1], pts[:, :, 1:2], pts[:, :, 2:3]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    curve = curve.masked_fill(~mask[:, :, None, None], 1e3).reshape(b, -1, 2)
    coords = (torch.arange(size) + 0.5) / size * 2 - 1
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij")[::-1], -1).view(1, -1, 2)
    dist = torch.cdist(grid.expand(b, -1, -1), curve).amin(-1)  # [B, H*W]
    width = (0.05 + 0.04 * torch.rand(b, 1, generator=g))
    pixel = 2.0 / size
    ink = ((width - dist) / pixel + 0.5).clamp(0, 1)
    return (ink * 255).round().to(torch.uint8).view(b, 1, size, size)


def generate(seed: int = 0, size: int = 28, num_classes: int = NUM_CLASSES, chunk: int = 1200
             ) -> tuple[Tensor, Tensor]:
    """All images ``[num_classes * IMAGES_PER_CLASS, 1, size, size]`` (class-major) and their
    targets; the same for the same arguments."""
    g = torch.Generator().manual_seed(seed)
    pts, mask = character_programs(num_classes, g)
    targets = torch.arange(num_classes).repeat(IMAGES_PER_CLASS)
    images = torch.cat([draw(pts[targets[s:s + chunk]], mask[targets[s:s + chunk]], size, g)
                        for s in range(0, len(targets), chunk)])
    order = torch.argsort(targets, stable=True)
    return images[order], targets[order]


def stroke_characters(split: str = "train", cache_dir: str | os.PathLike | None = None,
                      seed: int = 0, image_size: int = 28) -> TensorClassDataset:
    """One split (``train``/``val``/``test``/``all``) of the embedded dataset, generated on first
    use and cached. Classes are named ``char0000`` ... ``char1199``."""
    bounds = {"train": (0, 900), "val": (900, 1000), "test": (1000, 1200), "all": (0, 1200)}
    if split not in bounds:
        raise ValueError(f"split must be one of {list(bounds)}, got {split!r}")
    path = Path(cache_dir or default_cache_dir()) / f"strokes-v{VERSION}-s{seed}-{image_size}px.pt"
    d = load_cache(path)
    if d is not None:
        images, targets = d["images"], d["targets"]
    else:
        images, targets = generate(seed, image_size)
        save_cache(path, {"images": images, "targets": targets})
    lo, hi = bounds[split]
    keep = (targets >= lo) & (targets < hi)
    names = [f"char{c:04d}" for c in range(lo, hi)]
    return TensorClassDataset(images[keep], targets[keep] - lo, names,
                              ImagePipeline(1, image_size, "area", invert=False),
                              name="embedded", split=split)
