"""Triplet pre-training: a siamese embedding in which an image is nearer to a random affine
transform of itself than to the other images of the batch, by a margin.

Each image is an anchor ``a``; its positive ``p`` is the same image under a random affine map
(the episode augmentation's rotation, scale and translation, :class:`episodes.AugmentConfig`,
the batch's second view); its negative ``n`` another image of the batch (its anchor embedding),
mined within the batch (``mining``): ``semihard`` (FaceNet, Schroff et al. 2015, as TensorFlow
Addons' ``triplet_semihard_loss``: the nearest negative farther than the positive, else the
farthest negative), ``hard`` (the nearest negative) or ``random``. The loss
``mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)`` on L2-normalised embeddings (a projection
head ``Linear-BN-ReLU-Linear`` to ``emb_dim`` on the backbone's features, FaceNet's unit
hypersphere) with the Euclidean distance (pytorch-metric-learning's default ``LpDistance``;
FaceNet squares it), margin 0.2 (FaceNet's); the logged accuracy is the fraction of anchors
nearer their positive than their negative.

The loss and miner are :func:`triplet_loss`, a small pure function, not pytorch-metric-learning's
(``TripletMarginLoss`` with ``TripletMarginMiner``/``BatchHardMiner``): those mine over every
embedding that shares a label, so with an image's two views as one label they would also take
the transformed views as anchors and other images' transformed views as negatives, and their
semi-hard miner keeps every triplet inside the margin band rather than one per anchor: another
definition. The loss on given triplets is tested against theirs (``tests/test_ssl_generative.py``,
when pytorch-metric-learning is installed: ``pip install 'fewshot[metric-learning]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import AugmentConfig
from episodes.options import check

from ..models.learner import ModelSpec
from ..modules import mlp
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, build_common

Mining = Literal["semihard", "hard", "random"]


def mine_negatives(d_ap: Tensor, d_an: Tensor, mining: str,
                   generator: torch.Generator | None = None) -> Tensor:
    """The negative of each anchor: ``d_ap`` ``[B]`` anchor-positive distances, ``d_an``
    ``[B, B]`` distances from anchor ``i`` to the other images ``j`` (the diagonal, the anchor
    itself, is never chosen). Returns indices ``[B]`` (see the module text for the rules)."""
    b = d_an.shape[0]
    if b < 2:
        raise ValueError("triplet mining needs at least 2 images in a batch")
    self_ = torch.eye(b, dtype=torch.bool, device=d_an.device)
    if mining == "hard":
        return d_an.masked_fill(self_, float("inf")).argmin(1)
    if mining == "semihard":
        farther = (d_an > d_ap[:, None]) & ~self_
        nearest_farther = d_an.masked_fill(~farther, float("inf")).argmin(1)
        farthest = d_an.masked_fill(self_, float("-inf")).argmax(1)
        return torch.where(farther.any(1), nearest_farther, farthest)
    if mining == "random":
        shift = torch.randint(1, b, (b,), generator=generator).to(d_an.device)
        return (torch.arange(b, device=d_an.device) + shift) % b
    raise ValueError(f"mining must be semihard, hard or random, got {mining!r}")


def triplet_loss(anchor: Tensor, positive: Tensor, margin: float = 0.2, mining: str = "semihard",
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Triplet margin loss of embeddings ``anchor`` and ``positive`` ``[B, D]`` (row ``i`` of
    both the same image), each anchor's negative another anchor mined by :func:`mine_negatives`.

    Returns: the loss (mean over the B triplets of ``max(0, d_ap - d_an + margin)``, Euclidean
    distances), the fraction of triplets with ``d_ap < d_an`` and the negatives' indices ``[B]``.
    """
    d_ap = (anchor - positive).norm(dim=1)
    with torch.no_grad():
        d_an = torch.cdist(anchor, anchor)
    neg = mine_negatives(d_ap.detach(), d_an, mining, generator)
    d_n = (anchor - anchor[neg]).norm(dim=1)
    loss = F.relu(d_ap - d_n + margin).mean()
    return loss, (d_ap < d_n).float().mean(), neg


class Triplet(SelfSupervisedLearner):
    """Anchor, its random affine transform, a mined other image of the batch."""

    num_views = 2

    def __init__(self, backbone: nn.Module, feat_dim: int, distance: str = "euclidean",
                 affine: AugmentConfig | None = None, margin: float = 0.2,
                 mining: str = "semihard", proj_hidden: int = 512, emb_dim: int = 128) -> None:
        super().__init__(backbone, feat_dim, "none", distance)
        self.affine = affine or AugmentConfig(rotate=15.0, zoom=(0.9, 1.1), translate=0.1)
        self.margin, self.mining = margin, mining
        self.projector = mlp([feat_dim, proj_hidden, emb_dim])

    def view_augments(self) -> tuple[AugmentConfig | None, ...]:
        """The anchor as it is, the positive under a random affine map."""
        return None, self.affine

    def embed_projected(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.features(x)), dim=1)

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.embed_projected(views.flatten(0, 1))  # one pass: anchors, then positives
        anchor, positive = z.chunk(2)
        loss, acc, _ = triplet_loss(anchor, positive, self.margin, self.mining)
        return loss, acc, anchor


@dataclass
class TripletConfig(SSLConfig):
    """``--method triplet``: the positive's affine map (``rotate`` degrees, zoom in ``1 +-
    scale``, shift ``translate`` of the side), the ``margin``, the negative ``mining``
    (semihard|hard|random), the projection head ``proj_hidden`` -> ``emb_dim``. The views are
    fixed (the image and its affine transform): option ``views`` is not used."""

    views: Literal["none"] = "none"
    rotate: float = 15.0
    scale: float = 0.1
    translate: float = 0.1
    margin: float = 0.2
    mining: Mining = "semihard"
    proj_hidden: int = 512
    emb_dim: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.rotate >= 0, "rotate", ">= 0", self.rotate)
        check(0 <= self.scale < 1, "scale", "in [0, 1)", self.scale)
        check(self.translate >= 0, "translate", ">= 0", self.translate)
        check(self.margin > 0, "margin", "> 0", self.margin)
        check(min(self.proj_hidden, self.emb_dim) >= 1, "proj_hidden/emb_dim", ">= 1",
              (self.proj_hidden, self.emb_dim))


@register("triplet", TripletConfig, "self-supervised",
          "Triplet embedding: an image nearer its random affine transform than the batch's other "
          "images (margin loss, semi-hard mining)")
def build_triplet(spec: ModelSpec, c: TripletConfig) -> Triplet:
    affine = AugmentConfig(rotate=c.rotate, zoom=(1 - c.scale, 1 + c.scale),
                           translate=c.translate)
    return Triplet(*build_common(spec, c), c.distance, affine, c.margin, c.mining,
                   c.proj_hidden, c.emb_dim)
