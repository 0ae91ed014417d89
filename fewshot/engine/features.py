"""Features of many images through a frozen backbone, a chunk of images per forward pass."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from episodes import to_unit_float

from .memory import image_chunk, memory_budget


def extract_features(backbone: nn.Module, images: Tensor, chunk_size: int | None = None,
                     max_memory: int | None = None) -> Tensor:
    """Flattened features of ``images`` ``[B, C, H, W]`` -> ``[B, D]``.

    ``chunk_size`` images per forward pass (None: as many as fit the memory budget,
    :func:`fewshot.engine.memory.memory_budget` with ``max_memory``), each chunk moved to the
    backbone's device (and, if uint8, turned into floats in [0, 1] there), in eval mode
    (BatchNorm running statistics: each image's features do not depend on the others) and
    without autograd. The backbone's mode is
    restored afterwards.
    """
    device = next(iter(backbone.parameters()), images).device
    was_training = backbone.training
    backbone.eval()
    try:
        if chunk_size is None:
            chunk_size = image_chunk(backbone, tuple(images.shape[1:]), device,
                                     memory_budget(device, max_memory), total=images.shape[0])
        with torch.no_grad():
            out = []
            for i in range(0, images.shape[0], chunk_size):
                x = images[i:i + chunk_size].to(device, non_blocking=True)
                out.append(backbone(to_unit_float(x) if x.dtype == torch.uint8 else x).flatten(1))
            return torch.cat(out)
    finally:
        backbone.train(was_training)
