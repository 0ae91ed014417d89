"""Several augmented views of each image of a mini-batch, for self-supervised pre-training.

A :class:`ViewBatch` holds ``V`` views ``[V, B, C, H, W]`` of the same ``B`` images, each view
drawn by :func:`episodes.augment.augment_images` on the images' device with its own
:class:`~episodes.augment.AugmentConfig` (so BYOL's two views can differ), and the images' indices
in the split (clustering methods keep a pseudo-label per image). Labels are carried but
self-supervised learners ignore them. :class:`~episodes.batches.ImageBatchSampler` draws these
batches when given ``views=``.

The presets (:data:`VIEW_PRESETS`) follow the papers' pipelines: SimCLR (Chen et al. 2020,
appendix A: random resized crop of area 0.08-1, flip, colour jitter 0.8/0.8/0.8/0.2 with
probability 0.8, grayscale 0.2, blur 0.5), BYOL (Grill et al. 2020, table 6: jitter
0.4/0.4/0.2/0.1 with probability 0.8, grayscale 0.2; blur 1.0 and 0.1, solarisation 0 and 0.2 in
the two views; also VICReg's and Barlow Twins' pipeline), MoCo v2 (Chen et al. 2020,
facebookresearch/moco ``--aug-plus``: crop of area 0.2-1, flip, jitter 0.4/0.4/0.4/0.1 with
probability 0.8, grayscale 0.2, blur 0.5), crop (random resized crop and flip: DeepCluster),
standard (:meth:`AugmentConfig.standard`: RotNet's crop and flip with jitter), none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .augment import AugmentConfig

CROP = {"area": (0.08, 1.0), "hflip": 0.5}
SIMCLR = AugmentConfig(**CROP, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                       jitter_p=0.8, grayscale=0.2, blur=0.5)
BYOL = {**CROP, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1,
        "jitter_p": 0.8, "grayscale": 0.2}
MOCO_V2 = AugmentConfig(area=(0.2, 1.0), hflip=0.5, brightness=0.4, contrast=0.4, saturation=0.4,
                        hue=0.1, jitter_p=0.8, grayscale=0.2, blur=0.5)
VIEW_PRESETS: dict[str, tuple[AugmentConfig | None, AugmentConfig | None]] = {
    "simclr": (SIMCLR, SIMCLR),
    "mocov2": (MOCO_V2, MOCO_V2),
    "byol": (AugmentConfig(**BYOL, blur=1.0), AugmentConfig(**BYOL, blur=0.1, solarize=0.2)),
    "crop": (AugmentConfig(**CROP), AugmentConfig(**CROP)),
    "standard": (AugmentConfig.standard(), AugmentConfig.standard()),
    "none": (None, None),
}


def view_configs(preset: str, views: int) -> tuple[AugmentConfig | None, ...]:
    """The augmentation of each of ``views`` views (1 or 2) under ``preset``."""
    if preset not in VIEW_PRESETS:
        raise ValueError(f"unknown view preset {preset!r}: choose one of "
                         f"{', '.join(VIEW_PRESETS)}")
    return VIEW_PRESETS[preset][:views]


@dataclass
class ViewBatch:
    """``V`` augmented views of ``B`` images.

    Attributes:
        views: float ``[V, B, C, H, W]`` in ``[0, 1]``; labels: long ``[B]`` (ignored by
        self-supervised learners); index: long ``[B]``, the images' positions in the split.
    """

    views: Tensor
    labels: Tensor
    index: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ViewBatch:
        return ViewBatch(*(t.to(device, non_blocking=non_blocking)
                           for t in (self.views, self.labels, self.index)))

    def __len__(self) -> int:
        return self.labels.shape[0]
