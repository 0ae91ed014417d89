"""Image decoders of the generative pre-training methods (the autoencoder's decoder, the GAN's
generator, colourisation's colour head) and the image grids that show their outputs.

:class:`ImageDecoder` is a DCGAN generator (Radford et al. 2016) that ends at any size: a vector
``[B, D]`` (backbone features, or noise) projected to ``4 * width`` channels at ``s0 x s0``
(``Linear -> BatchNorm -> ReLU``, DCGAN's first transposed convolution from 1x1), then ``k``
transposed convolutions of kernel 4, stride 2, padding 1, each doubling the side and halving the
channels (down to ``width``) with BatchNorm and ReLU, the last one to the output channels without
them; ``k`` is the least number of doublings that brings ``s0 <= 4`` to at least the output size,
and a bilinear resize takes ``s0 * 2**k`` to the exact size when they differ (28 from 32, 84 from
96).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..engine.logs import preview_file


class ImageDecoder(nn.Module):
    """Vectors ``[B, in_dim]`` -> maps ``[B, out_channels, size, size]`` (logits: no output
    activation), DCGAN's generator layout (see the module text); ``width``: the channels of its
    last hidden layer (the first has ``4 * width``)."""

    def __init__(self, in_dim: int, out_channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        self.size = size
        self.stages = max(1, math.ceil(math.log2(size / 4))) if size > 1 else 1
        self.s0 = max(1, math.ceil(size / 2 ** self.stages))
        channels = [max(width, 4 * width // 2 ** i) for i in range(self.stages)]
        self.project = nn.Sequential(nn.Linear(in_dim, channels[0] * self.s0 ** 2, bias=False),
                                     nn.BatchNorm1d(channels[0] * self.s0 ** 2), nn.ReLU(True))
        layers: list[nn.Module] = []
        for i in range(self.stages):
            last = i == self.stages - 1
            out = out_channels if last else channels[i + 1]
            layers.append(nn.ConvTranspose2d(channels[i], out, 4, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(out), nn.ReLU(True)]
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], -1, self.s0, self.s0)
        x = self.up(x)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


def image_grid(images: Tensor, rows: int = 1, pad: int = 2) -> Tensor:
    """Images ``[N, C, H, W]`` in ``[0, 1]`` laid out row by row in ``rows`` rows on a white
    background with ``pad`` pixels between them: ``[C, rows * (H + pad) + pad, cols * (W + pad) +
    pad]``."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    grid = images.new_ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):  # a few dozen preview images, once per validation
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def save_image(image: Tensor, path: str | os.PathLike, scale: int = 2) -> None:
    """Write ``[C, H, W]`` in ``[0, 1]`` (C 1 or 3) as a PNG, each pixel ``scale`` x ``scale``;
    written to a temporary name and renamed, so a half-written file never stands."""
    x = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    x = x.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    array = x[0].numpy() if x.shape[0] == 1 else np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def preview_monitor(folder: str | os.PathLike) -> Callable[[nn.Module], dict[str, float]]:
    """A training-loop monitor (:func:`fewshot.engine.train.train`'s ``monitors``) that writes the
    learner's :meth:`~fewshot.ssl.base.SelfSupervisedLearner.preview` (a GAN's samples at fixed
    noise, an autoencoder's reconstructions) as ``preview-step{N}.png`` in ``folder`` at each
    validation; it logs nothing."""

    def monitor(learner: nn.Module) -> dict[str, float]:
        grid = learner.preview() if hasattr(learner, "preview") else None
        if grid is not None:
            save_image(grid, Path(folder) / preview_file(int(learner.steps_done)))
        return {}

    return monitor
