"""Context prediction (Doersch et al. 2015, "Unsupervised visual representation learning by
context prediction"): which of the 8 positions around a centre patch a second patch came from.

Compared with the paper and the authors' code (cdoersch/deepcontext, read, not copied): the image
cut into a 3x3 grid, the centre patch and one of its 8 neighbours drawn uniformly, the label its
position (8-way classification); both patches through the same network (the backbone, their
shared ``fc6``), the two feature vectors concatenated, then ``Linear-ReLU-Linear`` to the 8
positions (their ``fc7``, ``fc8``). Gaps and jitter: each patch is a random crop of
``tile_fraction`` (0.7) of its cell (:func:`fewshot.ssl.pretext.context_pairs`, jigsaw's tiling),
so two patches are at least ``0.3`` of a cell apart on average and their offsets vary by up to
that much (theirs: 96-pixel patches, a 48-pixel gap and up to 7 pixels of jitter); tiles smaller
than 16 pixels are resized to 16 and every patch is normalised on its own
(:func:`fewshot.ssl.pretext.prepare_tiles`, as jigsaw). Against chromatic aberration (a cue of
the position in the image): ``aberration=drop`` (the default) keeps one random channel of each
patch and replaces the others by Gaussian noise of 1/100 of its standard deviation (their "colour
dropping"; their released ``train.py`` mean-subtracts the kept channel and fills the others
with uniform noise of width 1 on the 0-255 scale, then scales the patch to a fixed RMS), ``gray``
turns each patch gray (its mean over channels in every channel), ``none`` keeps the colours
(one-channel images are unaffected); they also tried projecting towards green and magenta, not
done here. Views: ``none`` (they sample patches from the images themselves).

Deviations from their ``train.py``: they lay a grid of 96-pixel patches over a large image and
train on every pair of adjacent patches in both directions, here one pair per image (the centre
and one neighbour, as the paper describes); their pair head is ``fc7 (4096, BatchNorm) -> fc8
(4096) -> fc9 (8)``, here one hidden layer (``head_hidden``, 512); they also downsample a third
of the patches to as few as 100 pixels (against reliance on fine detail), not done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..functional import accuracy
from ..models.backbones import feature_dim
from ..models.learner import ModelSpec
from ..modules import mlp
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .pretext import context_pairs, drop_colours, prepare_tiles


class Context(SelfSupervisedLearner):
    """Context prediction: the position (8-way) of a neighbour patch relative to the centre."""

    num_views = 1

    def __init__(self, backbone: nn.Module, in_channels: int, image_size: int,
                 views: str = "none", distance: str = "euclidean", tile_fraction: float = 0.7,
                 aberration: str = "drop", head_hidden: int = 512) -> None:
        super().__init__(backbone, feature_dim(backbone, in_channels, image_size), views, distance)
        self.tile_fraction, self.aberration = tile_fraction, aberration
        self.tile_size = max(16, round(image_size // 3 * tile_fraction))
        tile_dim = feature_dim(backbone, in_channels, self.tile_size)
        self.classifier = mlp([2 * tile_dim, head_hidden, 8], bn=False)

    def guard(self, tiles: Tensor) -> Tensor:
        """The chromatic-aberration guard of tiles ``[N, C, t, t]`` (option ``aberration``)."""
        if self.aberration == "drop":
            return drop_colours(tiles)
        if self.aberration == "gray":
            return tiles.mean(1, keepdim=True).expand_as(tiles)
        return tiles

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        centre, other, label = context_pairs(views[0], self.tile_fraction)
        b = centre.shape[0]
        tiles = prepare_tiles(self.guard(torch.cat([centre, other])), self.tile_size)
        feats = self.backbone(tiles).flatten(1)  # [2B, D]: centres, then neighbours
        logits = self.classifier(torch.cat([feats[:b], feats[b:]], 1))
        return F.cross_entropy(logits, label), accuracy(logits, label), feats[:b]


@dataclass
class ContextConfig(SSLConfig):
    """``--method context``: each patch a crop of ``tile_fraction`` of its cell (the rest is gap
    and jitter), the chromatic-aberration guard ``aberration`` (drop|gray|none), the classifier's
    hidden width ``head_hidden``."""

    views: ViewName = "none"
    tile_fraction: float = 0.7
    aberration: Literal["drop", "gray", "none"] = "drop"
    head_hidden: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.tile_fraction <= 1, "tile_fraction", "in (0, 1]", self.tile_fraction)
        check(self.head_hidden >= 1, "head_hidden", ">= 1", self.head_hidden)


@register("context", ContextConfig, "self-supervised",
          "Context prediction (Doersch et al. 2015): the position of a patch relative to the "
          "centre patch, 8-way")
def build_context(spec: ModelSpec, c: ContextConfig) -> Context:
    backbone, _ = build_common(spec, c)
    return Context(backbone, spec.in_channels, spec.image_size, c.views, c.distance,
                   c.tile_fraction, c.aberration, c.head_hidden)
