"""Pretext-task pre-training: rotation prediction (RotNet) and jigsaw puzzles.

Compared with the authors' code (read, not copied):

* RotNet (Gidaris et al. 2018, gidariss/FeatureLearningRotNet): every image of a batch in all
  four rotations in the same batch (their best setting), cross-entropy over the 4 rotations.
  Their classifier is the network's later conv blocks; here a ``Linear-BN-ReLU-Linear`` head on
  the backbone's features (the backbone is what transfers). Views: one, the ``standard`` preset
  (flip, crop, colour jitter; theirs: crop and flip).
* Jigsaw (Noroozi & Favaro 2016): 3x3 cells, a random crop of 0.85 of each cell (their 64 of
  75 pixels), each tile normalised on its own (mean and standard deviation per channel), the
  tiles shuffled by one of a set of permutations of maximal mean Hamming distance, every tile
  through the shared backbone, the nine features concatenated, ``Linear-ReLU-Linear`` to the
  permutation classes. Deviations: 100 permutations by default (their default set has 1000;
  they also report 100), option ``permutations``; tiles smaller than 16 pixels are resized to 16
  so that a Conv-4 or ResNet-12 (four 2x2 poolings) keeps a pixel; views: the ``standard``
  preset (they add grayscale and per-channel jitter against chromatic aberration).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..functional import accuracy
from ..models.backbones import feature_dim
from ..models.learner import ModelSpec
from ..modules import RotationHead, mlp
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .pretext import jigsaw_permutations, jigsaw_tiles, prepare_tiles


class Rotation(SelfSupervisedLearner):
    """RotNet: predict which of 4 rotations each image went through."""

    num_views = 1

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "standard",
                 distance: str = "euclidean", head_hidden: int = 256) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.rotation = RotationHead(feat_dim, head_hidden)

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.rotation.loss(self.backbone, views[0])


class Jigsaw(SelfSupervisedLearner):
    """Jigsaw puzzles: predict which permutation shuffled an image's tiles."""

    num_views = 1

    def __init__(self, backbone: nn.Module, in_channels: int, image_size: int,
                 views: str = "standard", distance: str = "euclidean", grid: int = 3,
                 permutations: int = 100, head_hidden: int = 512) -> None:
        super().__init__(backbone, feature_dim(backbone, in_channels, image_size), views, distance)
        self.grid, self.tile_size = grid, max(16, round(image_size // grid * 0.85))
        self.register_buffer("permutations", jigsaw_permutations(permutations, grid),
                             persistent=False)
        tile_dim = feature_dim(backbone, in_channels, self.tile_size)
        self.classifier = mlp([grid * grid * tile_dim, head_hidden, permutations], bn=False)

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = views[0]
        b = x.shape[0]
        choice = torch.randint(len(self.permutations), (b,)).to(x.device)
        tiles = prepare_tiles(jigsaw_tiles(x, self.permutations, choice, self.grid).flatten(0, 1),
                              self.tile_size)
        feats = self.backbone(tiles).flatten(1)  # [B * 9, D]
        logits = self.classifier(feats.view(b, -1))
        return F.cross_entropy(logits, choice), accuracy(logits, choice), feats


@dataclass
class RotationConfig(SSLConfig):
    """``--method rotation``: the rotation head's hidden width ``head_hidden``."""

    views: ViewName = "standard"
    head_hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.head_hidden >= 1, "head_hidden", ">= 1", self.head_hidden)


@dataclass
class JigsawConfig(SSLConfig):
    """``--method jigsaw``: ``grid`` x ``grid`` tiles (2 or 3), ``permutations`` classes (at most
    ``grid**2!``), the classifier's hidden width ``head_hidden``."""

    views: ViewName = "standard"
    grid: int = 3
    permutations: int = 100
    head_hidden: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.grid in (2, 3), "grid", "2 or 3", self.grid)
        most = 24 if self.grid == 2 else 362880
        check(1 <= self.permutations <= most, "permutations", f"in 1..{most}", self.permutations)
        check(self.head_hidden >= 1, "head_hidden", ">= 1", self.head_hidden)


@register("rotation", RotationConfig, "self-supervised",
          "RotNet (Gidaris et al. 2018): predict which of four rotations an image went through")
def build_rotation(spec: ModelSpec, c: RotationConfig) -> Rotation:
    return Rotation(*build_common(spec, c), c.views, c.distance, c.head_hidden)


@register("jigsaw", JigsawConfig, "self-supervised",
          "Jigsaw puzzles (Noroozi & Favaro 2016): predict the permutation of 3x3 tiles")
def build_jigsaw(spec: ModelSpec, c: JigsawConfig) -> Jigsaw:
    backbone, _ = build_common(spec, c)
    return Jigsaw(backbone, spec.in_channels, spec.image_size, c.views, c.distance, c.grid,
                  c.permutations, c.head_hidden)
