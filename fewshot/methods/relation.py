"""Relation Networks (Sung et al. 2018): a learned metric between feature maps.

The embedding module is Conv-4 whose last two blocks keep their spatial size (28x28 -> 64x7x7,
84x84 -> 64x21x21). Each class's feature map (the sum over its K support maps) is concatenated in
depth with each query's feature map, and the relation module (two conv blocks with 2x2 max-pool,
then FC -> ReLU -> FC -> sigmoid) scores the pair in [0, 1]. Training regresses the scores onto the
one-hot labels with mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..backbones import Conv4, conv_block, feature_shape, make_backbone
from ..learner import EpisodicLearner, ModelSpec, embed_episode
from ..registry import register


def class_feature_maps(support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Sum of each class's support feature maps: ``[T, S, C, h, w]``, labels ``[T, S]`` ->
    ``[T, N, C, h, w]``."""
    onehot = F.one_hot(support_y, n_way).to(support.dtype)  # [T, S, N]
    summed = onehot.transpose(1, 2) @ support.flatten(2)
    return summed.view(*summed.shape[:2], *support.shape[2:])


def relation_pairs(classes: Tensor, query: Tensor) -> Tensor:
    """Every (class, query) pair concatenated in depth: classes ``[T, N, C, h, w]``, query
    ``[T, M, C, h, w]`` -> ``[T, M, N, 2C, h, w]`` (class map first, as ``C(f(x_i), f(x_j))``)."""
    t, n = classes.shape[:2]
    m = query.shape[1]
    return torch.cat([classes.unsqueeze(1).expand(t, m, *classes.shape[1:]),
                      query.unsqueeze(2).expand(t, m, n, *query.shape[2:])], dim=3)


def relation_scores(module: nn.Module, support: Tensor, support_y: Tensor, query: Tensor,
                    n_way: int) -> Tensor:
    """Relation scores of every query with every class: support ``[T, S, C, h, w]``, query
    ``[T, M, C, h, w]`` -> ``[T, M, N]``.

    ``module`` maps concatenated pairs ``[B, 2C, h, w]`` to ``[B, 1]``; a :class:`RelationModule`
    scores all pairs without building them (:meth:`RelationModule.score_all_pairs`).
    """
    classes = class_feature_maps(support, support_y, n_way)
    if isinstance(module, RelationModule):
        return module.score_all_pairs(classes, query)
    pairs = relation_pairs(classes, query)
    t, m, n = pairs.shape[:3]
    return module(pairs.flatten(0, 2)).view(t, m, n)


class RelationModule(nn.Module):
    """Two conv blocks (3x3 conv, BN, ReLU, 2x2 max-pool) then FC -> ReLU -> FC -> sigmoid.

    ``[B, 2C, h, w] -> [B, 1]`` scores in [0, 1]. ``padding`` of the convs is 1 for small maps
    (Omniglot's 7x7 -> 64x1x1, as the authors' code) and 0 for large ones (mini-ImageNet's
    21x21 -> 64x3x3 = 576, the paper's H).
    """

    def __init__(self, in_channels: int, map_size: tuple[int, int], hidden: int = 64,
                 fc_hidden: int = 8, padding: int | None = None) -> None:
        super().__init__()
        if padding is None:
            padding = 1 if min(map_size) < 10 else 0
        blocks = [conv_block(2 * in_channels, hidden), conv_block(hidden, hidden)]
        for block in blocks:
            block[0].padding = (padding, padding)
        self.convs = nn.Sequential(*blocks)
        h, w = map_size
        for _ in range(2):
            h, w = (h + 2 * padding - 2) // 2, (w + 2 * padding - 2) // 2
        if h < 1 or w < 1:
            raise ValueError(f"feature maps of {map_size} are too small for the relation module's "
                             f"two conv/pool blocks with padding {padding}: use larger images, "
                             "fewer pooled embedding blocks, or padding=1")
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(hidden * h * w, fc_hidden),
                                nn.ReLU(inplace=True), nn.Linear(fc_hidden, 1), nn.Sigmoid())

    def forward(self, pairs: Tensor) -> Tensor:
        """Scores of concatenated pairs ``[B, 2C, h, w]`` -> ``[B, 1]``."""
        return self.fc(self.convs(pairs))

    def score_all_pairs(self, classes: Tensor, query: Tensor) -> Tensor:
        """``forward`` on every (class, query) pair of :func:`relation_pairs`, without building
        the ``[T, M, N, 2C, h, w]`` pairs: the first convolution is linear, so
        ``conv([a; b]) = conv_a(a) + conv_b(b)`` is computed on the N class and M query maps
        and broadcast over the pairs (about N*M/(N+M) times fewer first-layer FLOPs).

        classes ``[T, N, C, h, w]``, query ``[T, M, C, h, w]`` -> ``[T, M, N]``.
        """
        (t, n, c), m = classes.shape[:3], query.shape[1]
        conv = self.convs[0][0]
        a = F.conv2d(classes.flatten(0, 1), conv.weight[:, :c], None, padding=conv.padding)
        b = F.conv2d(query.flatten(0, 1), conv.weight[:, c:], conv.bias, padding=conv.padding)
        z = a.view(t, 1, n, *a.shape[1:]) + b.view(t, m, 1, *b.shape[1:])
        z = self.convs[1](self.convs[0][1:](z.flatten(0, 2)))
        return self.fc(z).view(t, m, n)


class RelationNet(EpisodicLearner):
    """An embedding module producing feature maps ``[B, C, h, w]`` and a :class:`RelationModule`.

    ``forward`` returns relation scores ``[T, M, N]`` in [0, 1]; ``loss`` is their mean squared
    error against the one-hot labels.
    """

    def __init__(self, embedding: nn.Module, relation: nn.Module) -> None:
        super().__init__()
        self.embedding, self.relation = embedding, relation

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        s, q = embed_episode(self.embedding, support_x, query_x)
        if s.dim() != 5:
            raise ValueError(f"the relation network's embedding must return feature maps "
                             f"[B, C, h, w], got features of shape {tuple(s.shape[2:])}")
        return relation_scores(self.relation, s, support_y, q, n_way)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Mean squared error of scores ``[T, M, N]`` against one-hot labels ``[T, M]``."""
        return F.mse_loss(logits, F.one_hot(query_y, logits.shape[-1]).to(logits.dtype))


@dataclass
class RelationConfig:
    """Options of ``--method relation``: ``hidden`` (embedding and relation filters),
    ``fc_hidden`` (relation module's hidden units), ``unpooled_last`` (Conv-4 blocks without
    pooling), ``padding`` (of the relation convs; None: 1 for maps under 10x10, else 0)."""

    hidden: int = 64
    fc_hidden: int = 8
    unpooled_last: int = 2
    padding: int | None = None

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "hidden", ">= 1", self.hidden)
        check(self.fc_hidden >= 1, "fc_hidden", ">= 1", self.fc_hidden)
        check(0 <= self.unpooled_last <= 4, "unpooled_last", "between 0 and 4",
              self.unpooled_last)
        check(self.padding is None or self.padding >= 0, "padding", ">= 0 or none", self.padding)


@register("relation", RelationConfig)
def build_relation(spec: ModelSpec, config: RelationConfig) -> RelationNet:
    """Backbones: ``conv4``, or any whose constructor takes ``flatten=False`` to return feature
    maps (``resnet12``: 640 x 5 x 5 at 84x84)."""
    hidden, fc_hidden, unpooled, padding = (config.hidden, config.fc_hidden,
                                            config.unpooled_last, config.padding)
    if spec.backbone == "conv4":
        embedding: nn.Module = Conv4(spec.in_channels, hidden, flatten=False, unpooled_last=unpooled)
    else:  # the backbone's feature maps (before any global pooling)
        embedding = make_backbone(spec.backbone, spec.in_channels, flatten=False)
    shape = feature_shape(embedding, spec.in_channels, spec.image_size)
    if len(shape) != 3:
        raise ValueError(f"backbone {spec.backbone!r} returns flat features {tuple(shape)}; the "
                         "relation network needs feature maps: use --backbone conv4")
    return RelationNet(embedding, RelationModule(shape[0], tuple(shape[1:]), hidden, fc_hidden,
                                                 padding))
