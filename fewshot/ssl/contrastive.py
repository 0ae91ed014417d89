"""Contrastive pre-training: SimCLR and MoCo v2 (instance discrimination against negatives).

Compared with the authors' code (read, not copied):

* SimCLR (Chen et al. 2020, google-research/simclr): two views of every image under the SimCLR
  pipeline; projector ``Linear-BN-ReLU-Linear`` to 128 (their hidden width is the feature size,
  2048 for ResNet-50: here ``proj_hidden``, default 512); NT-Xent with temperature 0.5 (their
  CIFAR-10 setting; 0.1 on ImageNet with LARS and batch 4096), all ``2B - 2`` other views as
  negatives. Deviations: the loop's SGD/Adam, not LARS; each view through the backbone on its own
  (BatchNorm statistics per view; theirs are over both views' joint batch).
* MoCo v2 (Chen et al. 2020, facebookresearch/moco ``moco/builder.py``): a query encoder and a
  key encoder (backbone + ``Linear-ReLU-Linear`` projector to 128, hidden 2048 there, 512 here),
  the key encoder a momentum average (``m = 0.999``) updated after each optimizer step (theirs
  before each forward: the same sequence of weights); a queue of past keys as negatives,
  temperature 0.2, queue initialised with normalised Gaussian noise, enqueued after the loss.
  Deviations: queue 4096 by default, not 65536 (the reduced mini-ImageNet has 6400 training
  images: a larger queue would hold several stale keys of the same image as negatives; the
  queue must be a multiple of the batch size and should stay well below the split's size); no
  shuffling BatchNorm (it needs several devices; a single device's batch statistics leak less
  with per-view forwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..learner import ModelSpec
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, accuracy, build_common, ema_update, frozen_copy, mlp
from .losses import info_nce, nt_xent


class SimCLR(SelfSupervisedLearner):
    """SimCLR: ``nt_xent`` of the projected features of two views (see the module text)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "simclr",
                 distance: str = "euclidean", proj_hidden: int = 512, proj_dim: int = 128,
                 temperature: float = 0.5) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_hidden, proj_dim])
        self.temperature = temperature

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z1, z2 = (self.projector(self.features(v)) for v in views)
        loss, logits, positive = nt_xent(z1, z2, self.temperature)
        return loss, accuracy(logits, positive), z1


class MoCo(SelfSupervisedLearner):
    """MoCo v2: queries from view 1, keys from view 2 through the momentum encoder, a queue of
    past keys ``[queue_size, proj_dim]`` as negatives (see the module text)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "simclr",
                 distance: str = "euclidean", proj_hidden: int = 512, proj_dim: int = 128,
                 temperature: float = 0.2, momentum: float = 0.999, queue_size: int = 4096) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_hidden, proj_dim], bn=False)
        self.target_backbone, self.target_projector = frozen_copy(backbone), frozen_copy(
            self.projector)
        self.temperature, self.momentum = temperature, momentum
        noise = torch.randn(queue_size, proj_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("queue", F.normalize(noise, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def begin_training(self, sampler: Any, steps: int) -> None:
        b = getattr(sampler, "batch_size", None)
        if b is not None and len(self.queue) % b:
            raise ValueError(f"MoCo's queue_size {len(self.queue)} must be a multiple of the "
                             f"batch size {b}: change option queue_size or --batch-size")

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.projector(self.features(views[0]))
        with torch.no_grad():
            k = F.normalize(self.target_projector(self.target_backbone(views[1]).flatten(1)),
                            dim=1)
        loss, logits = info_nce(q, k, self.queue.clone(), self.temperature)
        self.enqueue(k)
        return loss, accuracy(logits, logits.new_zeros(len(q), dtype=torch.long)), q

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Replace the oldest ``B`` keys of the queue by ``keys`` ``[B, proj_dim]``."""
        ptr, b = int(self.queue_ptr), len(keys)
        self.queue[ptr:ptr + b] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + b) % len(self.queue))

    def end_step(self) -> None:
        super().end_step()
        ema_update(self.target_backbone, self.backbone, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)


@dataclass
class SimCLRConfig(SSLConfig):
    """``--method simclr`` options (see :class:`SSLConfig` for views, hidden, distance):
    projector ``proj_hidden`` -> ``proj_dim``; NT-Xent ``temperature``."""

    proj_hidden: int = 512
    proj_dim: int = 128
    temperature: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "temperature", "> 0", self.temperature)
        check(min(self.proj_hidden, self.proj_dim) >= 1, "proj_hidden/proj_dim", ">= 1",
              (self.proj_hidden, self.proj_dim))


@dataclass
class MoCoConfig(SimCLRConfig):
    """``--method moco`` options: as SimCLR's (temperature 0.2), plus the key encoder's
    ``momentum`` and the ``queue_size`` (a multiple of the batch size)."""

    views: Literal["simclr", "byol", "crop", "standard", "none"] = "simclr"
    temperature: float = 0.2
    momentum: float = 0.999
    queue_size: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        check(self.queue_size >= 1, "queue_size", ">= 1", self.queue_size)


@register("simclr", SimCLRConfig)
def build_simclr(spec: ModelSpec, c: SimCLRConfig) -> SimCLR:
    return SimCLR(*build_common(spec, c), c.views, c.distance, c.proj_hidden, c.proj_dim,
                  c.temperature)


@register("moco", MoCoConfig)
def build_moco(spec: ModelSpec, c: MoCoConfig) -> MoCo:
    return MoCo(*build_common(spec, c), c.views, c.distance, c.proj_hidden, c.proj_dim,
                c.temperature, c.momentum, c.queue_size)
