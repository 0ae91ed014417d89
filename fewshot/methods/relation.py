"""Relation Networks (Sung et al. 2018): a learned metric between feature maps.

The embedding module is Conv-4 whose last two blocks keep their spatial size. Each class's feature
map (the sum over its K support maps) is concatenated in depth with each query's feature map, and
the relation module (two conv blocks with 2x2 max-pool, then FC -> ReLU -> FC -> sigmoid) scores
the pair in [0, 1]. Training regresses the scores onto the one-hot labels with mean squared error.

Compared with the authors' code (floodsung/LearningToCompare_FSL, ``omniglot_train_*_shot.py``
and ``miniimagenet_train_*_shot.py``); the defaults follow it, each point has an option:

- Encoder geometry (``encoder_padding=0``): their two pooled conv blocks have no padding, the two
  unpooled ones padding 1: 28x28 -> 64x5x5, 84x84 -> 64x19x19 (padding 1 everywhere gave 7x7 and
  21x21). Relation convs: padding 1 on Omniglot (5x5 -> 64x1x1), 0 on mini-ImageNet (19x19 ->
  64x3x3 = 576); ``padding=None`` picks that from the map size.
- Initialisation (``init="authors"``): conv weights normal(0, sqrt(2 / (k*k*out_channels))),
  bias 0; BatchNorm weight 1, bias 0; Linear weights normal(0, 0.01), bias 1 -- on both modules.
- BatchNorm (``separate_passes=True``, ``batch_stats_at_test=True``): they run the support images
  and the query images through the encoder in two forward passes, one episode per step, and never
  call ``eval()`` (their ``momentum=1`` running averages are never used): every BatchNorm, the
  relation module's too, normalises with the statistics of its current batch, at test as in
  training. We do the same per episode (one pass for the support, one for the queries, one for
  the episode's pairs). At test this is transductive: a query's score depends on the other
  queries of its episode (their Omniglot test has one query per class, ours all queries at once).
  ``batch_stats_at_test=False`` gives the usual running averages at evaluation;
  ``separate_passes=False`` embeds the support and queries of all episodes in one pass.
- Gradient clipping (``grad_clip=0.5``): the norm of each module's gradient (embedding and
  relation separately) is clipped to 0.5; the training loop applies it unless its own
  ``grad_clip`` is set.
- Not learner options (training settings, given to ``fewshot train``): they use Adam 1e-3 for both
  modules with StepLR halving every 100,000 episodes (``--lr 1e-3 --lr-decay-every 100000``), one
  episode per step, and queries per class Omniglot 5w1s 19, 5w5s 15, 20w1s 10, 20w5s 5;
  mini-ImageNet 5w1s 15, 5w5s 10 (``--query``). Their Omniglot is not inverted and normalised
  with mean 0.922, std 0.084, with a random rotation of each training episode (we use rotations as
  classes, ink = 1); these data differences are not reproduced.

``separate_passes=false batch_stats_at_test=false init=pytorch encoder_padding=1 grad_clip=none``
sets all five of these choices the other way, not as the authors' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..models.backbones import Conv4, conv_block, feature_shape, spec_backbone
from ..models.input_norm import add_input_norm
from ..models.learner import EpisodicLearner, ModelSpec, embed_episode
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


def authors_init(module: nn.Module) -> None:
    """The authors' ``weights_init`` on every submodule: conv weights normal(0, sqrt(2 / (k_h *
    k_w * out_channels))), bias 0; BatchNorm weight 1, bias 0; Linear weights normal(0, 0.01),
    bias 1."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.ones_(m.bias)


def batch_stats_everywhere(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` in ``module`` by one without running averages, which
    normalises with the statistics of its batch in training and evaluation alike (what the
    authors' code does by never calling ``eval()``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, child.eps, child.momentum,
                                                 child.affine, track_running_stats=False))
        else:
            batch_stats_everywhere(child)


def feature_maps(embedding: nn.Module, x: Tensor) -> Tensor:
    """``embedding`` on images ``[B, C, H, W]``, checked to return feature maps ``[B, C', h, w]``."""
    out = embedding(x)
    if out.dim() != 4:
        raise ValueError(f"the relation network's embedding must return feature maps "
                         f"[B, C, h, w], got features of shape {tuple(out.shape[1:])}")
    return out


class RelationNet(EpisodicLearner):
    """An embedding module producing feature maps ``[B, C, h, w]`` and a :class:`RelationModule`.

    ``forward`` returns relation scores ``[T, M, N]`` in [0, 1]; ``loss`` is their mean squared
    error against the one-hot labels.

    Args:
        separate_passes: per episode, embed the support and the queries in two forward passes and
            score the episode's pairs in a third (BatchNorm statistics per episode and per set, as
            the authors' code); False: one pass over the support and queries of all episodes.
        grad_clip: gradient-norm limit of each module (embedding, relation) for the training loop
            (None: no clipping).
    """

    per_episode_norm = True

    def __init__(self, embedding: nn.Module, relation: nn.Module, separate_passes: bool = True,
                 grad_clip: float | None = 0.5) -> None:
        super().__init__()
        self.embedding, self.relation = embedding, relation
        self.separate_passes, self.grad_clip = separate_passes, grad_clip

    @property
    def backbone(self) -> nn.Module:
        """The embedding module (feature maps ``[B, C, h, w]``)."""
        return self.embedding

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        if self.separate_passes:  # BatchNorm statistics per episode (PerEpisodeNorm) and set
            t = support_x.shape[0]
            s = feature_maps(self.embedding, support_x.flatten(0, 1))
            q = feature_maps(self.embedding, query_x.flatten(0, 1))
            s, q = s.view(t, -1, *s.shape[1:]), q.view(t, -1, *q.shape[1:])
        else:
            s, q = embed_episode(self.embedding, support_x, query_x)
            if s.dim() != 5:
                raise ValueError(f"the relation network's embedding must return feature maps "
                                 f"[B, C, h, w], got features of shape {tuple(s.shape[2:])}")
        return self.head(s, support_y, q, n_way)

    def features_per_image(self) -> bool:
        """False when the embedding normalises with batch statistics at test time
        (``batch_stats_at_test``): an image's features then depend on its batch."""
        return all(m.track_running_stats for m in self.embedding.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def embed(self, x: Tensor) -> Tensor:
        return feature_maps(self.embedding, x)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        """Relation scores from feature maps ``[T, S, C, h, w]``, ``[T, M, C, h, w]`` ->
        ``[T, M, N]``."""
        return relation_scores(self.relation, support, support_y, query, n_way)

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the gradient norm of the embedding and of the relation module, each to
        ``max_norm`` (the authors clip each module's parameters separately)."""
        for module in (self.embedding, self.relation):
            torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Mean squared error of scores ``[T, M, N]`` against one-hot labels ``[T, M]``."""
        return F.mse_loss(logits, F.one_hot(query_y, logits.shape[-1]).to(logits.dtype))


@dataclass
class RelationConfig:
    """Options of ``--method relation``: ``hidden`` (embedding and relation filters),
    ``fc_hidden`` (relation module's hidden units), ``unpooled_last`` (Conv-4 blocks without
    pooling), ``encoder_padding`` (of Conv-4's pooled blocks' convs), ``padding`` (of the relation
    convs; None: 1 for maps under 10x10, else 0), ``init`` (``authors`` or ``pytorch``'s defaults),
    ``separate_passes`` and ``batch_stats_at_test`` (BatchNorm as the authors' code),
    ``grad_clip`` (per module; none: off). See the module docstring."""

    hidden: int = 64
    fc_hidden: int = 8
    unpooled_last: int = 2
    encoder_padding: int = 0
    padding: int | None = None
    init: Literal["authors", "pytorch"] = "authors"
    separate_passes: bool = True
    batch_stats_at_test: bool = True
    grad_clip: float | None = 0.5

    def __post_init__(self) -> None:
        check(self.hidden >= 1, "hidden", ">= 1", self.hidden)
        check(self.fc_hidden >= 1, "fc_hidden", ">= 1", self.fc_hidden)
        check(0 <= self.unpooled_last <= 4, "unpooled_last", "between 0 and 4",
              self.unpooled_last)
        check(self.encoder_padding in (0, 1), "encoder_padding", "0 or 1", self.encoder_padding)
        check(self.padding is None or self.padding >= 0, "padding", ">= 0 or none", self.padding)
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "> 0 or none",
              self.grad_clip)


@register("relation", RelationConfig, "episodic",
          "Relation Networks (Sung et al. 2018): a learned relation module scores query-class "
          "feature-map pairs")
def build_relation(spec: ModelSpec, config: RelationConfig) -> RelationNet:
    """Backbones: ``conv4``, or any whose constructor takes ``flatten=False`` to return feature
    maps (``resnet12``: 640 x 5 x 5 at 84x84; ``encoder_padding`` applies to Conv-4 only)."""
    hidden, fc_hidden, unpooled = config.hidden, config.fc_hidden, config.unpooled_last
    if spec.backbone == "conv4":
        embedding: nn.Module = add_input_norm(
            Conv4(spec.in_channels, hidden, flatten=False, unpooled_last=unpooled), spec.normalize)
        for block in embedding.blocks[:4 - unpooled]:  # the pooled blocks
            block[0].padding = (config.encoder_padding, config.encoder_padding)
    else:  # the backbone's feature maps (before any global pooling)
        embedding = spec_backbone(spec, flatten=False)
    shape = feature_shape(embedding, spec.in_channels, spec.image_size)
    if len(shape) != 3:
        raise ValueError(f"backbone {spec.backbone!r} returns flat features {tuple(shape)}; the "
                         "relation network needs feature maps: use --backbone conv4")
    learner = RelationNet(embedding, RelationModule(shape[0], tuple(shape[1:]), hidden, fc_hidden,
                                                    config.padding),
                          separate_passes=config.separate_passes, grad_clip=config.grad_clip)
    if config.batch_stats_at_test:
        batch_stats_everywhere(learner)
    if config.init == "authors":
        authors_init(learner)
    return learner
