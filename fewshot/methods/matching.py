"""Matching Networks (Vinyals et al. 2016): attention over the support set, with full-context
embeddings (FCE, the paper's appendix).

A query's label distribution is ``P(y | x, S) = sum_i a(x, x_i) y_i`` where ``a`` is a softmax over
the support of ``f(x) . g(x_i) / |g(x_i)|``: the support embedding is L2-normalised, the query
embedding is not (``normalize_query=False``, as the reference code). With FCE, ``g`` is a
bidirectional LSTM over the backbone features of the support set (``g(x_i) = h_fwd_i + h_bwd_i +
g'(x_i)``) and ``f`` an attention LSTM that runs ``K`` processing steps reading attention over
``g(S)``. The learner returns log-probabilities ``log P(y | x, S)``, so its loss is the negative
log-likelihood.

Compared point by point with the reference code: facebookresearch/low-shot-shrink-hallucinate
``matching_network.py`` (``FullyContextualEmbedding``, ``MatchingNetwork``) and easyfsl's
``matching_networks.py``, which follows it:

- Final attention: both compute ``softmax(F @ normalize(G).T)``, the query ``F`` left unnormalised
  (easyfsl: "we don't normalize query features to keep 'sharp' vectors after softmax"). Kept as the
  default. The paper writes a cosine, but with both sides normalised the logits lie in [-1, 1]
  and at 5-way 1-shot no class can get more than ``e / (e + 4/e) = 0.65``; the query's norm acts
  as a learned, per-query inverse temperature. ``normalize_query=True`` (with ``scale``)
  gives the cosine of the paper.
- Support normalisation: the low-shot code divides by ``|G| + 1e-5``, we use ``F.normalize``
  (``max(|G|, 1e-12)``); the same for any non-degenerate embedding.
- Class probabilities: the references take ``log(softmax @ Y)`` (easyfsl adds 1e-6 inside the
  log); we sum the attention per class in log space (``logsumexp``), the same value without the
  epsilon and without underflow.
- FCE support encoder: one-layer bidirectional LSTM of hidden size D, ``G = S + fwd + bwd`` -- the
  same. We shuffle the support order before the biLSTM while training (the support is a set; the
  references feed it in sampling order, class by class) and undo the shuffle on the outputs.
- FCE query encoder: ``h_0 = f'``, ``c_0 = 0``, attention ``softmax(h @ G.T)`` over the
  *unnormalised* ``G``, read ``r = a @ G``, ``LSTMCell([f', r], (h, c))``, ``h = h + f'`` -- the
  same, as the paper's appendix. Steps: ``fce_steps=5`` as the low-shot code's ``K`` (easyfsl
  runs as many steps as there are support images).
- Without FCE (``fce=False``, not in either reference) the same attention is applied to the
  backbone features directly.
- ``scale`` multiplies the logits (1 in the references); it is kept as an option.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..models.backbones import feature_shape, spec_backbone
from ..models.learner import BackboneLearner, ModelSpec, embed_episode
from ..modules import add_rotation
from ..registry import register


def cosine_attention(query: Tensor, support: Tensor, scale: float = 1.0,
                     normalize_query: bool = False) -> Tensor:
    """Log of the attention ``a(x, x_i)``: log-softmax over the support of
    ``scale * q . s_i / |s_i|``, with ``q`` L2-normalised too when ``normalize_query`` (then the
    cosine similarity). query ``[T, M, D]``, support ``[T, S, D]`` -> ``[T, M, S]``."""
    q = F.normalize(query, dim=-1) if normalize_query else query
    logits = q @ F.normalize(support, dim=-1).transpose(1, 2)
    return torch.log_softmax(scale * logits, dim=-1)


def attention_to_class_log_probs(log_attention: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Sum the attention per class, in log space: ``log sum_{i: y_i = c} a_i``.

    log_attention ``[T, M, S]``, support_y ``[T, S]`` in 0..N-1 -> log-probabilities ``[T, M, N]``
    (each row sums to 1 in probability space; a class without support gets ``-inf``).
    """
    member = F.one_hot(support_y, n_way).transpose(1, 2).bool()  # [T, N, S]
    masked = log_attention.unsqueeze(2).masked_fill(~member.unsqueeze(1), float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def matching_log_probs(support: Tensor, support_y: Tensor, query: Tensor, n_way: int,
                       scale: float = 1.0, normalize_query: bool = False) -> Tensor:
    """Matching Networks' ``log P(y | x, S)`` from embeddings: support ``[T, S, D]``, labels
    ``[T, S]``, query ``[T, M, D]`` -> ``[T, M, N]`` (see :func:`cosine_attention`)."""
    return attention_to_class_log_probs(cosine_attention(query, support, scale, normalize_query),
                                        support_y, n_way)


def permute_support(x: Tensor, perm: Tensor) -> Tensor:
    """Reorder each episode's support: x ``[T, S, D]``, perm long ``[T, S]`` -> ``x[t, perm[t]]``."""
    return x.gather(1, perm.unsqueeze(-1).expand_as(x))


def support_context(lstm: nn.LSTM, support: Tensor, shuffle: bool) -> Tensor:
    """Full-context support embeddings ``g(x_i) = h_fwd_i + h_bwd_i + g'(x_i)``.

    Args:
        lstm: bidirectional, ``batch_first``, hidden size D.
        support: backbone features ``g'`` ``[T, S, D]``.
        shuffle: feed each episode's support to the biLSTM in a random order (training); the
            outputs are put back in the original order, so row i still belongs to support item i.
    Returns: ``[T, S, D]``.
    """
    t, s, d = support.shape
    if shuffle:
        perm = torch.rand(t, s, device=support.device).argsort(dim=1)
        out, _ = lstm(permute_support(support, perm))
        out = permute_support(out, perm.argsort(dim=1))  # inverse permutation
    else:
        out, _ = lstm(support)
    return out[..., :d] + out[..., d:] + support


def query_context(cell: nn.LSTMCell, query: Tensor, support: Tensor, steps: int) -> Tensor:
    """Attention-LSTM query embeddings ``f(x, S)`` (the paper's appendix), for all T*M queries.

    With ``h_0 = f'(x)``, ``c_0 = 0``, for ``k = 1..K``:
    ``r_{k-1} = sum_i softmax_i(h_{k-1} . g(x_i)) g(x_i)``,
    ``h_hat_k, c_k = LSTM([f'(x), r_{k-1}], h_{k-1}, c_{k-1})``, ``h_k = h_hat_k + f'(x)``.
    (Feeding ``r`` with the input rather than the hidden state gives the same gate equations.)

    Args:
        cell: ``LSTMCell(2D, D)``; query: ``f'`` ``[T, M, D]``; support: ``g(S)`` ``[T, S, D]``.
    Returns: ``h_K`` ``[T, M, D]`` (``f'`` itself when ``steps`` is 0).
    """
    t, m, d = query.shape
    h, c = query, torch.zeros_like(query)
    for _ in range(steps):
        read = torch.softmax(h @ support.transpose(1, 2), dim=-1) @ support  # [T, M, D]
        h, c = cell(torch.cat([query, read], -1).flatten(0, 1), (h.flatten(0, 1), c.flatten(0, 1)))
        h, c = h.view(t, m, d) + query, c.view(t, m, d)
    return h


class FullContextEmbedding(nn.Module):
    """The biLSTM over the support set and the attention LSTM for queries, for features of size D.

    ``forward(support [T, S, D], query [T, M, D]) -> (g(S) [T, S, D], f(x, S) [T, M, D])``; the
    support order is shuffled before the biLSTM while training.
    """

    def __init__(self, dim: int, steps: int = 5) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"fce_steps must be >= 0, got {steps}")
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def forward(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        g = support_context(self.support_lstm, support, shuffle=self.training)
        return g, query_context(self.query_cell, query, g, self.steps)


class MatchingNet(BackboneLearner):
    """A backbone, optional full-context embeddings, attention over the normalised support
    embeddings; returns log-probabilities.

    Args:
        backbone: maps images ``[B, C, H, W]`` to features (flattened to ``[B, D]``).
        feature_dim: D, needed when ``fce`` is on.
        fce: use full-context embeddings; fce_steps: K, processing steps of the attention LSTM.
        scale: multiplies the attention logits before the softmax (1 in the references).
        normalize_query: L2-normalise the query embedding too (cosine attention, logits in
            [-scale, scale]); False as the reference code.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None, fce: bool = True,
                 fce_steps: int = 5, scale: float = 1.0, normalize_query: bool = False) -> None:
        super().__init__()
        if fce and feature_dim is None:
            raise ValueError("full-context embeddings need feature_dim (the backbone's output size)")
        self.backbone, self.scale, self.normalize_query = backbone, scale, normalize_query
        self.fce = FullContextEmbedding(feature_dim, fce_steps) if fce else None

    def attention(self, support_x: Tensor, query_x: Tensor) -> Tensor:
        """Log of each query's attention over the support set (with FCE when on): support_x
        ``[T, S, C, H, W]``, query_x ``[T, M, C, H, W]`` -> ``[T, M, S]`` (``exp`` sums to 1 over S)."""
        return self.feature_attention(*embed_episode(self.backbone, support_x, query_x))

    def feature_attention(self, support: Tensor, query: Tensor) -> Tensor:
        """:meth:`attention` from features ``[T, S, *F]``, ``[T, M, *F]`` -> ``[T, M, S]``."""
        s, q = support.flatten(2), query.flatten(2)
        if self.fce is not None:
            s, q = self.fce(s, q)
        return cosine_attention(q, s, self.scale, self.normalize_query)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        """``log P(y | x, S)`` ``[T, M, N]`` (log-probabilities, usable as logits) from features
        ``[T, S, *F]``, ``[T, M, *F]``."""
        return attention_to_class_log_probs(self.feature_attention(support, query), support_y,
                                            n_way)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Negative log-likelihood of log-probabilities ``[T, M, N]`` against labels ``[T, M]``."""
        return F.nll_loss(logits.flatten(0, 1), query_y.flatten())


@dataclass
class MatchingConfig:
    """Options of ``--method matching``: full-context embeddings (``fce``) with ``fce_steps``
    processing steps, ``scale`` of the attention logits, ``normalize_query`` (cosine attention;
    ``normalize_query=true scale=1``: the paper's cosine), ``hidden`` (Conv-4 width;
    None: 64), ``rotation_weight`` (auxiliary rotation loss, as ProtoNet's; 0: off)."""

    fce: bool = True
    fce_steps: int = 5
    scale: float = 1.0
    normalize_query: bool = False
    hidden: int | None = None
    rotation_weight: float = 0.0

    def __post_init__(self) -> None:
        check(self.rotation_weight >= 0, "rotation_weight", ">= 0", self.rotation_weight)
        check(self.fce_steps >= 0, "fce_steps", ">= 0", self.fce_steps)
        check(self.scale > 0, "scale", "> 0", self.scale)
        check(self.hidden is None or self.hidden >= 1, "hidden", ">= 1 (conv4 width)", self.hidden)


@register("matching", MatchingConfig, "episodic",
          "Matching Networks (Vinyals et al. 2016): attention over the support set, full-context "
          "embeddings")
def build_matching(spec: ModelSpec, config: MatchingConfig) -> MatchingNet:
    backbone = spec_backbone(spec, config.hidden)
    dim = feature_shape(backbone, spec.in_channels, spec.image_size).numel()
    return add_rotation(MatchingNet(backbone, dim, fce=config.fce, fce_steps=config.fce_steps,
                                    scale=config.scale, normalize_query=config.normalize_query),
                        spec, config.rotation_weight)
