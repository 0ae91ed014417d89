"""Contrastive pre-training: SimCLR and MoCo v2 (instance discrimination against negatives).

Compared with the authors' code (read, not copied):

* SimCLR (Chen et al. 2020, google-research/simclr): two views of every image under the SimCLR
  pipeline; projector ``Linear-BN-ReLU-Linear-BN`` to 128, the last BatchNorm with a scale and
  no shift, as their ``projection_head`` (their hidden width is the feature size, 2048 for
  ResNet-50: here ``proj_hidden``, default 512; option ``proj_last_bn=false``: no last
  BatchNorm, the head of checkpoints written before it had one); NT-Xent with temperature 0.5 (their
  CIFAR-10 setting; 0.1 on ImageNet with LARS and batch 4096), all ``2B - 2`` other views as
  negatives. Deviations: the loop's SGD/Adam, not LARS; each view through the backbone on its own
  (BatchNorm statistics per view; theirs are over both views' joint batch).
* MoCo v2 (Chen et al. 2020, facebookresearch/moco ``moco/builder.py``): a query encoder and a
  key encoder (backbone + ``Linear-ReLU-Linear`` projector to 128, hidden 2048 there, 512 here),
  the key encoder a momentum average (``m = 0.999``) updated after each optimizer step (theirs
  before each forward: the same sequence of weights); a queue of past keys as negatives,
  temperature 0.2, queue initialised with normalised Gaussian noise, enqueued after the loss;
  views: their ``--aug-plus`` pipeline (the ``mocov2`` preset). Shuffling BatchNorm: batch
  statistics over a whole batch let a query find its key through them (the paper's "leak");
  they compute the keys' statistics on other GPUs' shuffled sub-batches. On one device this
  follows their single-GPU demo (``colab/moco_cifar10_demo.ipynb``): every BatchNorm of both
  encoders normalises each of ``bn_splits`` sub-batches on its own (their ``SplitBatchNorm``,
  default 8 splits) and the key batch is shuffled before the key encoder and unshuffled after,
  so a query and its key are normalised with statistics of different images. Their split takes
  every ``bn_splits``-th image, here consecutive slices (the same for a batch in random order).
  Deviations: queue 4096 by default, not 65536 (the reduced mini-ImageNet has 6400 training
  images: a larger queue would hold several stale keys of the same image as negatives; the
  queue must be a multiple of the batch size and should stay well below the split's size).
  Checkpoints written before the split have none (``bn_splits=1``) and their ``simclr`` views.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..functional import accuracy
from ..models.episode_norm import PerEpisodeNorm
from ..models.learner import ModelSpec
from ..modules import ema_update, frozen_copy, mlp
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .losses import info_nce, nt_xent


class SimCLR(SelfSupervisedLearner):
    """SimCLR: ``nt_xent`` of the projected features of two views (see the module text)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "simclr",
                 distance: str = "euclidean", proj_hidden: int = 512, proj_dim: int = 128,
                 temperature: float = 0.5, proj_last_bn: bool = True) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_hidden, proj_dim],
                             last_bn="scale" if proj_last_bn else None)
        self.temperature = temperature

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z1, z2 = (self.projector(self.features(v)) for v in views)
        loss, logits, positive = nt_xent(z1, z2, self.temperature)
        return loss, accuracy(logits, positive), z1


class MoCo(SelfSupervisedLearner):
    """MoCo v2: queries from view 1, keys from view 2 through the momentum encoder, a queue of
    past keys ``[queue_size, proj_dim]`` as negatives (see the module text)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "mocov2",
                 distance: str = "euclidean", proj_hidden: int = 512, proj_dim: int = 128,
                 temperature: float = 0.2, momentum: float = 0.999, queue_size: int = 4096,
                 bn_splits: int = 8) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.bn_splits = bn_splits
        self.projector = mlp([feat_dim, proj_hidden, proj_dim], bn=False)
        self.target_backbone, self.target_projector = frozen_copy(backbone), frozen_copy(
            self.projector)
        self.temperature, self.momentum = temperature, momentum
        noise = torch.randn(queue_size, proj_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("queue", F.normalize(noise, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def begin_training(self, sampler: Any, steps: int) -> None:
        b = getattr(sampler, "batch_size", None)
        if b is not None:
            self.check_batch_size(b)

    def check_batch_size(self, b: int) -> None:
        """Refuse a batch size ``b`` the queue size is not a multiple of or the BatchNorm
        sub-batches do not divide."""
        if len(self.queue) % b:
            raise ValueError(f"MoCo's queue_size {len(self.queue)} must be a multiple of the "
                             f"batch size {b}: change option queue_size or --batch-size")
        if b % self.bn_splits:
            raise ValueError(f"MoCo's bn_splits {self.bn_splits} must divide the batch size {b}: "
                             f"change option bn_splits or --batch-size")

    def split_norm(self) -> AbstractContextManager:
        """BatchNorm statistics of each of ``bn_splits`` consecutive sub-batches (their demo's
        ``SplitBatchNorm``; running statistics move by the mean of the sub-batches')."""
        return PerEpisodeNorm(self.bn_splits) if self.bn_splits > 1 else nullcontext()

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with self.split_norm():
            q = self.projector(self.features(views[0]))
            with torch.no_grad():
                keys = views[1]
                if self.bn_splits > 1:  # shuffle, so that a key's sub-batch is not its query's
                    order = torch.randperm(len(keys), device=keys.device)
                    keys = keys[order]
                k = F.normalize(self.target_projector(self.target_backbone(keys).flatten(1)),
                                dim=1)
                if self.bn_splits > 1:
                    k = k[order.argsort()]
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
class ContrastiveConfig(SSLConfig):
    """Options SimCLR and MoCo share (see :class:`SSLConfig` for views, hidden, distance):
    projector ``proj_hidden`` -> ``proj_dim``; the loss's ``temperature``."""

    proj_hidden: int = 512
    proj_dim: int = 128
    temperature: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "temperature", "> 0", self.temperature)
        check(min(self.proj_hidden, self.proj_dim) >= 1, "proj_hidden/proj_dim", ">= 1",
              (self.proj_hidden, self.proj_dim))


@dataclass
class SimCLRConfig(ContrastiveConfig):
    """``--method simclr`` options: as :class:`ContrastiveConfig`, plus ``proj_last_bn`` (the
    projector's last BatchNorm, the authors'; false: none)."""

    BEFORE: ClassVar[dict[str, Any]] = {"proj_last_bn": False}  # of specs stored without them
    proj_last_bn: bool = True


@dataclass
class MoCoConfig(ContrastiveConfig):
    """``--method moco`` options: as :class:`ContrastiveConfig` (temperature 0.2), plus the key
    encoder's ``momentum``, the ``queue_size`` (a multiple of the batch size) and ``bn_splits``
    (sub-batches of shuffling BatchNorm, dividing the batch size; 1: none)."""

    BEFORE: ClassVar[dict[str, Any]] = {"bn_splits": 1}  # of specs stored without them
    views: ViewName = "mocov2"
    temperature: float = 0.2
    momentum: float = 0.999
    queue_size: int = 4096
    bn_splits: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        check(self.queue_size >= 1, "queue_size", ">= 1", self.queue_size)
        check(self.bn_splits >= 1, "bn_splits", ">= 1", self.bn_splits)


@register("simclr", SimCLRConfig, "self-supervised",
          "SimCLR (Chen et al. 2020): NT-Xent between two views of each image")
def build_simclr(spec: ModelSpec, c: SimCLRConfig) -> SimCLR:
    return SimCLR(*build_common(spec, c), c.views, c.distance, c.proj_hidden, c.proj_dim,
                  c.temperature, c.proj_last_bn)


@register("moco", MoCoConfig, "self-supervised",
          "MoCo v2 (He et al. 2020, Chen et al. 2020): InfoNCE against a queue of momentum keys")
def build_moco(spec: ModelSpec, c: MoCoConfig) -> MoCo:
    return MoCo(*build_common(spec, c), c.views, c.distance, c.proj_hidden, c.proj_dim,
                c.temperature, c.momentum, c.queue_size, c.bn_splits)
