"""What every semi-supervised learner shares: a backbone and a linear classifier over the training
classes, trained on a labelled batch and an unlabelled batch ``mu`` times as large at every step
(:class:`episodes.SemiSupervisedBatch`, ``fewshot pretrain --method NAME --labels-per-class N``).

A :class:`SemiSupervisedLearner` is an :class:`~fewshot.models.learner.EpisodicLearner` trained
by the one training loop (:mod:`fewshot.engine.train`): :meth:`semi_loss` maps a batch to the
method's loss. On episodes it is a prototype head on the backbone's features (as the supervised
and self-supervised pre-training methods), which is how the loop validates it and ``fewshot
eval`` scores it; ``fewshot eval --head`` and ``fewshot train --init`` take its ``backbone``.
Teachers (EMA or frozen) are parameters of the learner, so ``last.pt`` resumes exactly.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from episodes.options import check
from episodes.randaugment import WEAK, StrongAugment, View

from ..functional import accuracy, protonet_logits
from ..models.backbones import feature_dim, spec_backbone
from ..models.learner import BackboneLearner, ModelSpec
from ..registry import data_field, require_data


@dataclass
class SemiSupConfig:
    """Options every semi-supervised method has (``--option KEY=VALUE``).

    Attributes:
        num_classes: the training classes (set from the data).
        mu: unlabelled images per labelled image in a step (``mu * --batch-size`` unlabelled).
        lambda_u: weight of the unlabelled loss.
        hidden: Conv-4 width (None: 64).
        distance: of the prototype head on episodes (validation, ``eval`` without ``--head``).
    """

    num_classes: int | None = data_field("classes")
    mu: int = 7
    lambda_u: float = 1.0
    hidden: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"

    def __post_init__(self) -> None:
        check(self.mu >= 1, "mu", ">= 1", self.mu)
        check(self.lambda_u >= 0, "lambda_u", ">= 0", self.lambda_u)
        check(self.hidden is None or self.hidden >= 1, "hidden", ">= 1 (conv4 width)", self.hidden)


class SemiSupervisedLearner(BackboneLearner):
    """Base of the semi-supervised learners (see the module text). Subclasses set
    ``unlabelled_views`` and implement :meth:`semi_loss`.

    Args:
        backbone: maps images ``[B, C, H, W]`` to features ``[B, *F]`` (flattened to ``[B, D]``).
        feat_dim: ``D``; num_classes: ``N``, the training classes.
        mu, lambda_u, distance: as :class:`SemiSupConfig`.
    """

    labelled_view: View = WEAK
    unlabelled_views: tuple[View, ...] = (WEAK,)
    one_process = ("semi-supervised pre-training runs in one process (teachers and the pair of "
                   "labelled and unlabelled batches are not split across ranks)")

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, mu: int = 7,
                 lambda_u: float = 1.0, distance: str = "euclidean") -> None:
        super().__init__()
        self.backbone, self.feat_dim = backbone, feat_dim
        self.classifier = nn.Linear(feat_dim, num_classes)
        self.num_classes, self.mu, self.lambda_u, self.distance = num_classes, mu, lambda_u, distance
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.total_steps = 0
        self._metrics: dict[str, float] = {}

    def view_augments(self) -> tuple[View, tuple[View, ...]]:
        """The labelled view and the unlabelled views this learner trains on."""
        return self.labelled_view, self.unlabelled_views

    def begin_training(self, sampler: Any, steps: int) -> None:
        self.total_steps = steps

    def end_step(self) -> None:
        self.steps_done += 1

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        return protonet_logits(support.flatten(2), support_y, query.flatten(2), n_way,
                               self.distance)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits ``[B, C, H, W] -> [B, N]``."""
        return self.classifier(self.backbone(x).flatten(1))

    def labelled_and_views(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor]:
        """One pass over the labelled images and every unlabelled view together (one set of
        BatchNorm statistics, USB's ``use_cat``): logits ``[B, N]`` and ``[V, U, N]``."""
        v, u = batch.views.shape[:2]
        out = self.logits(torch.cat([batch.images, batch.views.flatten(0, 1)]))
        return out[:len(batch.images)], out[len(batch.images):].view(v, u, -1)

    def progress(self) -> float:
        """The fraction of the run's steps done (0 when the loop did not say how many)."""
        return float(self.steps_done) / self.total_steps if self.total_steps else 0.0

    @abstractmethod
    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The method's loss on ``batch``, the accuracy on its labelled images, and values to
        log (e.g. ``sup_loss``, ``unsup_loss``, ``mask``: the fraction of confident images)."""

    def batch_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, SemiSupervisedBatch):
            return super().batch_loss(batch)
        loss, acc, metrics = self.semi_loss(batch)
        self._metrics = {k: float(v) for k, v in metrics.items()}
        return loss, acc.detach().float()

    def train_metrics(self) -> dict[str, float]:
        return dict(self._metrics)


def supervised(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy and accuracy of the labelled batch's ``[B, N]`` logits."""
    return F.cross_entropy(logits, labels), accuracy(logits, labels)


def build_common(spec: ModelSpec, config: Any) -> tuple[nn.Module, int, dict[str, Any]]:
    """The backbone of ``spec`` (Conv-4 width ``config.hidden``), its flattened feature size and
    the base class's keyword arguments from ``config``."""
    require_data(config, "num_classes")
    backbone = spec_backbone(spec, config.hidden)
    return backbone, feature_dim(backbone, spec.in_channels, spec.image_size), {
        "num_classes": config.num_classes, "mu": config.mu, "lambda_u": config.lambda_u,
        "distance": config.distance}


STRONG = StrongAugment()
