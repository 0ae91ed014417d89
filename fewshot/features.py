"""Features of many images through a frozen backbone, a chunk of images per forward pass."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from episodes import to_unit_float


def extract_features(backbone: nn.Module, images: Tensor, chunk_size: int = 256) -> Tensor:
    """Flattened features of ``images`` ``[B, C, H, W]`` -> ``[B, D]``.

    ``chunk_size`` images per forward pass, each chunk moved to the backbone's device (and, if
    uint8, turned into floats in [0, 1] there), in eval mode (BatchNorm running statistics: each
    image's features do not depend on the others) and without autograd. The backbone's mode is
    restored afterwards.
    """
    device = next(iter(backbone.parameters()), images).device
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = []
            for i in range(0, images.shape[0], chunk_size):
                x = images[i:i + chunk_size].to(device, non_blocking=True)
                out.append(backbone(to_unit_float(x) if x.dtype == torch.uint8 else x).flatten(1))
            return torch.cat(out)
    finally:
        backbone.train(was_training)
