"""What every self-supervised learner shares: the backbone it pre-trains, its views, projection
heads, momentum (EMA) target networks, and how the training loop and evaluation see it.

A :class:`SelfSupervisedLearner` is an :class:`~fewshot.models.learner.EpisodicLearner` trained by the one
training loop (:mod:`fewshot.engine.train`) on :class:`episodes.ViewBatch` mini-batches (``fewshot
pretrain --method NAME``): :meth:`batch_loss` maps the views to the method's loss; the labels in
the batch are never read. On episodes it is a prototype head on the backbone's features (as the
supervised :class:`~fewshot.methods.classifier.SupervisedClassifier`), which is how the loop
validates it on fixed val episodes and ``fewshot eval`` scores it; any other head is ``fewshot
eval --head``, and ``fewshot train --init`` starts a meta-learner from its ``backbone``. Momentum
encoders, queues and pseudo-labels are parameters or buffers, so ``last.pt`` resumes exactly.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from episodes import AugmentConfig, ViewBatch, view_configs
from episodes.options import check

from ..functional import protonet_logits
from ..models.backbones import feature_dim, spec_backbone
from ..models.learner import BackboneLearner, ModelSpec
from .losses import embedding_std

ViewName = Literal["simclr", "mocov2", "byol", "crop", "standard", "none"]  # VIEW_PRESETS


@dataclass
class SSLConfig:
    """Options every self-supervised method has (``--option KEY=VALUE``).

    Attributes:
        views: augmentation preset of the views (:data:`episodes.VIEW_PRESETS`: simclr, mocov2,
            byol, crop, standard, none); each method has its paper's default.
        hidden: Conv-4 width (None: 64).
        distance: of the prototype head on episodes (validation, ``eval`` without ``--head``).
    """

    views: ViewName = "simclr"
    hidden: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"

    def __post_init__(self) -> None:
        check(self.hidden is None or self.hidden >= 1, "hidden", ">= 1 (conv4 width)", self.hidden)


class SelfSupervisedLearner(BackboneLearner):
    """Base of the self-supervised learners (see the module text). Subclasses set
    ``num_views`` and implement :meth:`views_loss`.

    Args:
        backbone: maps images ``[B, C, H, W]`` to features ``[B, *F]`` (flattened to ``[B, D]``).
        feat_dim: ``D``.
        views: the view preset (:data:`episodes.VIEW_PRESETS`).
        distance: the prototype head's distance on episodes.
    """

    num_views: int = 2
    one_process = ("self-supervised pre-training runs in one process (momentum queues, "
                   "cross-view batches and per-image pseudo-labels are not split across ranks)")

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "simclr",
                 distance: str = "euclidean") -> None:
        super().__init__()
        self.backbone, self.feat_dim = backbone, feat_dim
        self.view_preset, self.distance = views, distance
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._monitor: dict[str, Tensor] = {}

    def view_augments(self) -> tuple[AugmentConfig | None, ...]:
        """The augmentation of each view this learner trains on."""
        return view_configs(self.view_preset, self.num_views)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        return protonet_logits(support.flatten(2), support_y, query.flatten(2), n_way,
                               self.distance)

    def features(self, x: Tensor) -> Tensor:
        """Backbone features ``[B, C, H, W] -> [B, D]``."""
        return self.backbone(x).flatten(1)

    @abstractmethod
    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """The method's loss on ``views`` ``[V, B, C, H, W]`` of images at ``index`` ``[B]``.

        Returns: the scalar loss, its accuracy (of a pretext classification or of finding the
        positive; None when the method has none) and embeddings ``[B, D']`` for the collapse
        monitor (:func:`fewshot.ssl.losses.embedding_std`).
        """

    def batch_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, ViewBatch):
            return super().batch_loss(batch)
        loss, acc, z = self.views_loss(batch.views, batch.index)
        std = embedding_std(z.detach())
        self._monitor = {"emb_std": std, "emb_std_ratio": std * math.sqrt(z.shape[1])}
        return loss, (acc.detach().float() if acc is not None else loss.new_zeros(()))

    def train_metrics(self) -> dict[str, float]:
        """The last batch's embedding standard deviation (``emb_std``, per-dimension std of the
        L2-normalised embeddings) and its ratio to ``1/sqrt(D)`` (``emb_std_ratio``: about 1
        when spread out, 0 when collapsed)."""
        return {k: float(v) for k, v in self._monitor.items()}

    def end_step(self) -> None:
        self.steps_done += 1

    def preview(self) -> Tensor | None:
        """An image ``[C, H, W]`` in ``[0, 1]`` that shows what the method produces (a GAN's
        samples, an autoencoder's reconstructions), written into the run folder at each
        validation (:func:`fewshot.ssl.decoders.preview_monitor`); None (the default): nothing
        to show."""
        return None


def build_common(spec: ModelSpec, config: SSLConfig) -> tuple[nn.Module, int]:
    """The backbone of ``spec`` (Conv-4 width ``config.hidden``) and its flattened feature size."""
    backbone = spec_backbone(spec, config.hidden)
    return backbone, feature_dim(backbone, spec.in_channels, spec.image_size)


