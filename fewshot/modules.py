"""Reusable modules that several learners build on: MLP heads (projectors, predictors,
classifiers), momentum (EMA) targets, and the rotation-prediction head with its auxiliary loss
(Gidaris et al. 2019), shared by RotNet pre-training and the metric learners' ``rotation_weight``.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import accuracy, rotate_batch
from .models.backbones import feature_dim
from .models.learner import BackboneLearner, ModelSpec


class ScaleBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over ``[B, D]`` with a learned scale and no shift (SimCLR's last projector layer:
    ``batch_norm(center=False)`` in google-research/simclr)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.bias = None  # unregisters the shift


def mlp(dims: list[int], bn: bool = True, last_bn: Literal["plain", "scale"] | None = None,
        last_bias: bool = True) -> nn.Sequential:
    """``Linear -> [BatchNorm] -> ReLU`` between consecutive ``dims``, a plain ``Linear`` last.

    ``last_bn``: the last ``Linear`` (then without bias) followed by a BatchNorm without affine
    parameters (``"plain"``, SimSiam's projector) or with a learned scale only (``"scale"``,
    :class:`ScaleBatchNorm1d`, SimCLR's)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=(last_bias and last_bn is None) if last else not bn))
        if not last:
            layers += [nn.BatchNorm1d(b)] if bn else []
            layers.append(nn.ReLU(inplace=True))
        elif last_bn is not None:
            layers.append(ScaleBatchNorm1d(b) if last_bn == "scale"
                          else nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Momentum update of ``target``'s parameters from ``online``'s, in place:
    ``theta_t <- tau * theta_t + (1 - tau) * theta_o`` (MoCo eq. 2, BYOL eq. 1). Buffers (BatchNorm
    running statistics) are the target's own, from its own forward passes, as in both papers'
    code."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_lerp_(t, o, 1.0 - tau)


def cosine_momentum(base: float, step: int, total: int) -> float:
    """BYOL's target decay at step ``k`` of ``K``: ``1 - (1 - base) (cos(pi k / K) + 1) / 2``,
    from ``base`` up to 1 (``total`` 0: ``base``)."""
    if total <= 0:
        return base
    return 1 - (1 - base) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters take no gradient (a momentum target)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class RotationHead(nn.Module):
    """The 4-way rotation classifier on backbone features ``[B, D] -> [B, 4]`` and its loss;
    shared by RotNet pre-training and the auxiliary loss of meta-training (Gidaris et al. 2019,
    :func:`add_rotation`)."""

    def __init__(self, feat_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.classifier = mlp([feat_dim, hidden, 4])

    def loss(self, backbone: nn.Module, images: Tensor, episodes: int = 1
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-entropy of predicting the rotation of the four rotations of ``images``
        ``[B, C, H, W]`` (``episodes`` consecutive episodes: the rotated batch is episode-major,
        :func:`~fewshot.ssl.pretext.rotate_batch`); returns the loss, its accuracy and the
        features ``[4B, D]``."""
        rotated, labels = rotate_batch(images, episodes)
        feats = backbone(rotated).flatten(1)
        logits = self.classifier(feats)
        return F.cross_entropy(logits, labels), accuracy(logits, labels), feats


def add_rotation(learner: BackboneLearner, spec: ModelSpec, weight: float) -> BackboneLearner:
    """``learner`` with rotation prediction as an auxiliary loss of ``weight`` (Gidaris et al.
    2019; nothing when 0): a :class:`RotationHead` on its backbone's features."""
    if weight > 0:
        dim = feature_dim(learner.backbone, spec.in_channels, spec.image_size)
        learner.add_rotation_loss(RotationHead(dim), weight)
    return learner
