"""Supervised pre-training: a backbone and a classifier over all training classes, trained on
ordinary mini-batches (``fewshot pretrain``) by the one training loop (:mod:`fewshot.engine.train`).

As an :class:`EpisodicLearner` it classifies an episode's queries by the nearest prototype of
the backbone's features (the classifier over the base classes is not used): this is how the
training loop validates it on fixed val episodes and how ``fewshot eval`` scores it without
``--head``; any other head is ``fewshot eval --head``.

Compared with the references (read, not copied): Chen et al. 2019's Baseline / Baseline++
(CloserLookFewShot ``methods/baselinetrain.py``) train ``backbone -> nn.Linear`` (bias zeroed) or
``distLinear`` (``classifier=cosine``: scale 2 up to 200 classes, else 10) with cross-entropy,
Adam 1e-3, batch 16, 400 epochs on mini-ImageNet, keeping the last model (their validation of
the Baseline does nothing on mini-ImageNet). Tian et al. 2020 (RFS ``train_supervised.py``):
``nn.Linear``, SGD 0.05 momentum 0.9 weight decay 5e-4, batch 64, 100 epochs, steps or cosine
annealing, last model. Chen et al. 2021's Classifier-Baseline (few-shot-meta-baseline
``configs/train_classifier_mini.yaml``): SGD 0.1, weight decay 5e-4, batch 128, 100 epochs,
validated by few-shot accuracy with a cosine prototype head. Here: any of these through
``fewshot pretrain`` options; validation by prototype accuracy on fixed val episodes, best kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from episodes import LabelledBatch
from episodes.options import check

from ..functional import protonet_logits
from ..models.backbones import feature_dim, spec_backbone
from ..models.learner import EpisodicLearner, ModelSpec, embed_episode
from ..registry import data_field, register, require_data


class CosineClassifier(nn.Module):
    """Baseline++'s classifier: ``scale * cos(x, w_c) * |w_c|``-style scores with class-wise
    learnable norms: ``[B, D] -> [B, C]`` (see :func:`fewshot.heads.functional.
    cosine_classifier_logits`)."""

    def __init__(self, dim: int, classes: int, scale: float) -> None:
        super().__init__()
        linear = nn.Linear(dim, classes, bias=False)
        self.direction = nn.Parameter(linear.weight.detach().clone())
        self.norm = nn.Parameter(self.direction.detach().norm(dim=1))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        w = F.normalize(self.direction, dim=1) * self.norm.unsqueeze(1)
        return self.scale * F.normalize(x, dim=1) @ w.t()


class SupervisedClassifier(EpisodicLearner):
    """``backbone -> classifier`` over ``num_classes`` base classes.

    Args:
        classifier: "linear" (Baseline, bias starting at zero) or "cosine" (Baseline++).
        scale: the cosine classifier's scale (None: 2 for at most 200 classes, else 10).
        label_smoothing: of the cross-entropy.
        distance: of the prototype head used on episodes.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int,
                 classifier: str = "linear", scale: float | None = None,
                 label_smoothing: float = 0.0, distance: str = "euclidean") -> None:
        super().__init__()
        self.backbone = backbone
        if classifier == "cosine":
            self.classifier: nn.Module = CosineClassifier(
                feat_dim, num_classes, scale if scale is not None else
                (2.0 if num_classes <= 200 else 10.0))
        else:
            self.classifier = nn.Linear(feat_dim, num_classes)
            nn.init.zeros_(self.classifier.bias)
        self.label_smoothing, self.distance = label_smoothing, distance

    def classify(self, images: Tensor) -> Tensor:
        """Logits over the base classes: ``[B, C, H, W] -> [B, num_classes]``."""
        return self.classifier(self.backbone(images).flatten(1))

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        """Nearest-prototype logits ``[T, M, N]`` of an episode batch (see the module text)."""
        s, q = embed_episode(self.backbone, support_x, query_x)
        return protonet_logits(s.flatten(2), support_y, q.flatten(2), n_way, self.distance)

    def batch_logits(self, batch: Any) -> tuple[Tensor, Tensor]:
        if isinstance(batch, LabelledBatch):
            return self.classify(batch.images), batch.labels
        return super().batch_logits(batch)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy (with ``label_smoothing``) of ``[B, classes]`` logits against ``[B]``
        labels; episode logits ``[T, M, N]`` as every learner."""
        if logits.dim() == 2:
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return super().loss(logits, labels)


@dataclass
class ClassifierConfig:
    """Options of the pre-training model (``fewshot pretrain --option KEY=VALUE``).

    Attributes:
        num_classes: base classes (set by ``fewshot pretrain`` from the training split).
        classifier: "linear" (Baseline) or "cosine" (Baseline++).
        scale: the cosine classifier's scale (none: 2 up to 200 classes, else 10).
        label_smoothing: of the cross-entropy, in [0, 1).
        distance: the prototype head's distance on episodes (validation, eval without --head).
    """

    num_classes: int | None = data_field("classes")
    classifier: Literal["linear", "cosine"] = "linear"
    scale: float | None = None
    label_smoothing: float = 0.0
    distance: Literal["euclidean", "cosine"] = "euclidean"

    def __post_init__(self) -> None:
        check(self.num_classes is None or self.num_classes >= 2, "num_classes", ">= 2",
              self.num_classes)
        check(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)",
              self.label_smoothing)
        check(self.scale is None or self.scale > 0, "scale", "> 0", self.scale)


@register("classifier", ClassifierConfig, "supervised",
          "Baseline / Baseline++ (Chen et al. 2019): a linear or cosine classifier over every "
          "training class (fewshot pretrain --method supervised)")
def build_classifier(spec: ModelSpec, config: ClassifierConfig) -> SupervisedClassifier:
    require_data(config, "num_classes")
    backbone = spec_backbone(spec)
    return SupervisedClassifier(backbone, feature_dim(backbone, spec.in_channels, spec.image_size),
                                config.num_classes, config.classifier, config.scale,
                                config.label_smoothing, config.distance)
