"""Heads fitted on each episode's support set on top of a (pre-trained) backbone, by name.

``fewshot eval --head NAME --head-option KEY=VALUE`` scores a backbone with a head on the same
fixed episodes as the meta-learners (:class:`HeadLearner` is an :class:`EpisodicLearner`, scored
by the one :func:`fewshot.engine.evaluate.evaluate`):

| head | what |
| --- | --- |
| ``prototype`` | nearest class mean (ProtoNet's classifier), Euclidean or cosine |
| ``linear`` | Chen et al. 2019's Baseline: a new linear layer trained on the support features |
| ``cosine`` | Baseline++: a cosine classifier with class-wise learnable norms, scale 2 |
| ``logistic`` | Tian et al. 2020 (RFS): L2-normalised features, logistic regression to convergence |
| ``knn`` | nearest support feature (k=1) or k-nearest vote |
| ``finetune`` | a new head and the backbone (all or named layers) trained on the support set |
| ``two-stage`` | the head alone on the frozen backbone, then head and backbone at a lower rate |

Each head has a typed options dataclass (checked when parsed, valid names in the error). The
first five fit on features extracted once, in chunks of images, in eval mode without autograd
(:func:`fewshot.engine.features.extract_features`); the backbone's parameters and buffers are never
changed by any head (tested bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from episodes.options import check
from episodes.registry import Registry

from ..engine.features import extract_features
from ..functional import protonet_logits
from ..models.learner import EpisodicLearner
from .finetune import FinetuneHead, TwoStageHead, finetune_logits
from .functional import (
    StepHook,
    cosine_classifier_logits,
    episode_loss,
    episode_optimizer,
    fit,
    knn_logits,
    linear_logits,
    support_batches,
    take,
    uniform_init,
)
from .logistic import logistic_logits


@dataclass
class PrototypeHead:
    """``--head prototype``: distance between queries and class means (cosine: scaled by 10)."""

    distance: Literal["euclidean", "cosine"] = "euclidean"


@dataclass
class KnnHead:
    """``--head knn``: ``k`` nearest support features; features L2-normalised first when
    ``normalize`` (as RFS)."""

    k: int = 1
    distance: Literal["euclidean", "cosine"] = "euclidean"
    normalize: bool = True

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", ">= 1", self.k)


@dataclass
class LinearHead:
    """``--head linear`` (Baseline): SGD (``lr``, ``momentum``, ``dampening``, ``weight_decay``)
    for ``epochs`` over the support set in shuffled mini-batches of ``batch_size`` (0: the whole
    support set); ``seed`` of the initialisation and shuffles, drawn afresh for every batch of
    episodes fitted together (so the draws an episode gets depend on its place in the batch).
    Defaults: CloserLookFewShot's."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 0.001
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 0, "epochs", ">= 0", self.epochs)
        check(self.batch_size >= 0, "batch_size", ">= 0", self.batch_size)
        check(self.lr > 0, "lr", "> 0", self.lr)


@dataclass
class CosineHead(LinearHead):
    """``--head cosine`` (Baseline++): trained as ``linear``; ``scale`` of the cosine scores,
    ``learn_norm``: class-wise learnable weight norms (CloserLookFewShot's WeightNorm)."""

    scale: float = 2.0
    learn_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scale > 0, "scale", "> 0 (scores times 0 are all 0)", self.scale)


@dataclass
class LogisticHead:
    """``--head logistic`` (RFS): inverse L2 penalty ``C`` (scikit-learn's), features
    L2-normalised when ``normalize``, L-BFGS for at most ``max_iter`` iterations until the largest
    gradient entry is below ``tol``."""

    C: float = 1.0
    normalize: bool = True
    max_iter: int = 1000
    tol: float = 1e-6

    def __post_init__(self) -> None:
        check(self.C > 0, "C", "> 0", self.C)
        check(self.max_iter >= 1, "max_iter", ">= 1", self.max_iter)


def fit_linear_head(support: Tensor, support_y: Tensor, query: Tensor, n_way: int,
                    config: LinearHead, on_step: StepHook | None = None) -> Tensor:
    """Baseline and Baseline++ (:mod:`fewshot.heads.functional`): query logits ``[T, M, N]``."""
    t, s, d = support.shape
    g = torch.Generator().manual_seed(config.seed)
    weight = uniform_init((t, n_way, d), d, g, support).requires_grad_()
    if isinstance(config, CosineHead):
        norm = weight.detach().norm(dim=-1).requires_grad_(config.learn_norm)
        params = [weight, norm] if config.learn_norm else [weight]

        def logits(x: Tensor) -> Tensor:
            return cosine_classifier_logits(x, weight, norm, config.scale)
    else:
        bias = uniform_init((t, n_way), d, g, support).requires_grad_()
        params = [weight, bias]

        def logits(x: Tensor) -> Tensor:
            return linear_logits(x, weight, bias)
    opt = episode_optimizer(params, "sgd", config.lr, config.momentum, config.weight_decay,
                            config.dampening)
    batches = support_batches(t, s, config.batch_size, config.epochs, g, support.device)
    with torch.enable_grad():
        fit(opt, lambda idx: episode_loss(logits(take(support, idx)), take(support_y, idx)),
            batches, "head", on_step)
    with torch.no_grad():
        return logits(query)


def _prototype(s: Tensor, y: Tensor, q: Tensor, n: int, c: PrototypeHead) -> Tensor:
    return protonet_logits(s, y, q, n, c.distance)


def _knn(s: Tensor, y: Tensor, q: Tensor, n: int, c: KnnHead) -> Tensor:
    if c.normalize:
        s, q = nn.functional.normalize(s, dim=-1), nn.functional.normalize(q, dim=-1)
    return knn_logits(s, y, q, n, c.k, c.distance)


def _logistic(s: Tensor, y: Tensor, q: Tensor, n: int, c: LogisticHead) -> Tensor:
    return logistic_logits(s, y, q, n, c.C, c.normalize, c.max_iter, c.tol)


HEADS = Registry("head", "fewshot.heads")
HEAD_KINDS = {"features": "computed from frozen features, no training",
              "fitted": "trained on frozen features (autograd)",
              "finetune": "trains backbone layers on the support images"}


@dataclass(frozen=True)
class Head:
    """What a registered head does: ``logits(support, support_y, query, n_way, config)`` of
    frozen features ``[T, S, D]``, ``[T, M, D]`` -> ``[T, M, N]`` (None: fine-tuning heads, which
    need the images), and whether fitting it needs autograd."""

    logits: Callable[..., Tensor] | None
    needs_grad: bool


def register_head(name: str, config: type, kind: str, summary: str,
                  logits: Callable[..., Tensor] | None = None) -> None:
    """Register a head: its options dataclass, kind (:data:`HEAD_KINDS`), summary and, for the
    feature heads, the function of features."""
    if kind not in HEAD_KINDS or (logits is None) != (kind == "finetune"):
        raise ValueError(f"head {name}: kind must be one of {', '.join(HEAD_KINDS)}, with a "
                         f"logits function unless it is finetune")
    HEADS.register(name, config, kind, summary)(Head(logits, kind != "features"))


def registered(name: str) -> Head:
    """The registered head ``name`` (a ValueError lists the heads)."""
    return HEADS.get(name).build


for _args in (
        ("prototype", PrototypeHead, "features", "nearest class mean", _prototype),
        ("linear", LinearHead, "fitted", "Baseline: a new linear layer", fit_linear_head),
        ("cosine", CosineHead, "fitted", "Baseline++: a cosine classifier", fit_linear_head),
        ("logistic", LogisticHead, "fitted", "RFS: logistic regression to convergence",
         _logistic),
        ("knn", KnnHead, "features", "nearest support features", _knn),
        ("finetune", FinetuneHead, "finetune", "a new head and backbone layers", None),
        ("two-stage", TwoStageHead, "finetune", "the head, then head and backbone layers", None)):
    register_head(*_args)


def head_config(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The typed options of head ``name`` (text values converted), or a ValueError naming the
    heads or the valid options."""
    return HEADS.config(name, options)


class HeadLearner(EpisodicLearner):
    """A backbone and a head fitted on each episode's support set.

    Args:
        backbone: any module mapping images ``[B, C, H, W]`` to features; never changed.
        head: a name of :data:`HEADS`; config: its options (:func:`head_config`).
        chunk_size: images per backbone forward pass when extracting features.
        on_step: called after every optimizer step of the trained heads (logging, tests).
    """

    def __init__(self, backbone: nn.Module, head: str, config: Any | None = None,
                 chunk_size: int | None = None, on_step: StepHook | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.config = config if config is not None else head_config(head)
        self.chunk_size, self.on_step = chunk_size, on_step
        self.grad_at_eval = registered(head).needs_grad

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        """support_x ``[T, N*K, C, H, W]``, support_y ``[T, N*K]``, query_x ``[T, M, C, H, W]``
        -> logits ``[T, M, N]``."""
        spec = registered(self.head)
        if spec.logits is None:
            return finetune_logits(self.backbone, support_x, support_y, query_x, n_way,
                                   self.config, self.chunk_size, self.on_step)
        t, s = support_y.shape
        feats = extract_features(self.backbone, torch.cat([support_x, query_x], 1).flatten(0, 1),
                                 self.chunk_size).view(t, s + query_x.shape[1], -1)
        extra = {"on_step": self.on_step} if spec.logits is fit_linear_head else {}
        return spec.logits(feats[:, :s], support_y, feats[:, s:], n_way, self.config, **extra)


__all__ = ["HEADS", "HEAD_KINDS", "CosineHead", "FinetuneHead", "HeadLearner", "KnnHead", "LinearHead",
           "LogisticHead", "PrototypeHead", "TwoStageHead", "head_config", "register_head",
           "registered"]
