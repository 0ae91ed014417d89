"""Prototypes refined with unlabelled images (Ren et al. 2018, "Meta-learning for semi-supervised
few-shot classification"): pure functions batched over episodes, and :class:`PrototypeRefiner`,
the small module that holds their learned parts.

Every function takes features: support ``[T, S, D]`` with labels ``[T, S]`` in 0..N-1,
unlabelled ``[T, U, D]`` (their classes never enter), and returns prototypes ``[T, N, D]`` (or the
query logits ``[T, M, N]``). Compared point by point with the authors' TensorFlow code
(few-shot-ssl-public ``fewshot/models/kmeans_utils.py``, ``kmeans_refine_model.py``,
``kmeans_refine_radius_model.py``, ``kmeans_refine_mask_model.py``; read, not copied):

* soft k-means (:func:`soft_kmeans`): start from the class means; each step gives every
  unlabelled embedding the softmax over classes of its negative squared distances to the
  prototypes, and sets each prototype to the mean of its support embeddings (weight 1) and the
  unlabelled ones (weight = assignment), a class with zero total weight keeping the zero
  denominator guarded as theirs (``+ 1`` where 0). Same. The query logits are the negative
  squared distances to the last prototypes (their ``logits_list[-1]``).
* distractor cluster (:func:`distractor_kmeans`): a cluster N + 1 starting at the origin; the
  logits of cluster k are ``-d / (2 r_k^2) - log r_k - log(2 pi) / 2`` with radius 1 for the
  classes and ``radius`` (learned as ``log radius``, from 100, ``init_radius``/``learn_radius``)
  for the distractor cluster, which moves with the update as every cluster does (their
  ``update_cluster`` without ``fix_last_row``). Same, except: their query logits keep the
  distractor column (N + 1 scores); here the query logits are the N class columns, so every
  learner returns ``[T, M, N]`` (the argmax over classes is theirs whenever a query is not
  closest to the distractor cluster).
* masked soft k-means (:func:`masked_kmeans`): statistics of the normalised distances of each
  prototype to the unlabelled embeddings (min, max, variance, skewness, kurtosis; distances over
  their mean, gradients stopped) go through an MLP 5 -> 20 (tanh) -> 3 (weights drawn with std
  0.01) giving per class a threshold start ``exp(a)``, its change over the steps ``b`` and a
  slope ``exp(c)``; at step i of n the mask is ``sigmoid((-d / mean d + start + i / (n - 1) *
  change) * slope)`` and the unlabelled weights are assignment times mask (paper eq. 4-6). Same,
  except: their code multiplies the assignment by the mask twice (once in
  ``assign_cluster_soft_mask``, again when building ``prob_all``); here once, as the paper's
  equation.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import euclidean_logits, prototypes

Refine = Literal["none", "soft-kmeans", "distractor", "masked"]
REFINES: tuple[str, ...] = ("none", "soft-kmeans", "distractor", "masked")


def cluster_update(support: Tensor, support_y: Tensor, unlabelled: Tensor, weights: Tensor,
                   clusters: int) -> Tensor:
    """Weighted means: support ``[T, S, D]`` (weight 1 for its class), unlabelled ``[T, U, D]``
    with weights ``[T, U, clusters]`` -> centres ``[T, clusters, D]`` (support labels may leave
    clusters >= N without support)."""
    onehot = F.one_hot(support_y, clusters).to(support.dtype)  # [T, S, clusters]
    total = onehot.sum(1) + weights.sum(1)  # [T, clusters]
    total = total + (total == 0).to(total.dtype)
    return (onehot.transpose(1, 2) @ support + weights.transpose(1, 2) @ unlabelled) / total.unsqueeze(-1)


def soft_kmeans(support: Tensor, support_y: Tensor, unlabelled: Tensor, n_way: int,
                steps: int = 1) -> Tensor:
    """Prototypes ``[T, N, D]`` after ``steps`` soft k-means steps over the unlabelled features
    (0 steps: the class means)."""
    protos = prototypes(support, support_y, n_way)
    for _ in range(steps):
        weights = euclidean_logits(unlabelled, protos).softmax(-1)  # [T, U, N]
        protos = cluster_update(support, support_y, unlabelled, weights, n_way)
    return protos


def radius_logits(x: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """Log-densities of isotropic Gaussians: x ``[T, M, D]``, centres ``[T, K, D]``, radii
    ``[K]`` -> ``[T, M, K]``: ``-d / (2 r^2) - log r - log(2 pi) / 2``."""
    return euclidean_logits(x, centres) / (2 * radii ** 2) - radii.log() - 0.5 * math.log(2 * math.pi)


def distractor_kmeans(support: Tensor, support_y: Tensor, unlabelled: Tensor, n_way: int,
                      steps: int, radius: Tensor) -> tuple[Tensor, Tensor]:
    """Soft k-means with a distractor cluster: centres ``[T, N + 1, D]`` (the last one, the
    distractors', starts at the origin) and their radii ``[N + 1]`` (1 for the classes,
    ``radius`` (a scalar tensor) for the distractors); score queries with
    :func:`radius_logits`."""
    protos = prototypes(support, support_y, n_way)
    centres = torch.cat([protos, torch.zeros_like(protos[:, :1])], 1)
    radii = torch.cat([torch.ones(n_way, dtype=radius.dtype, device=radius.device),
                       radius.reshape(1)])
    for _ in range(steps):
        weights = radius_logits(unlabelled, centres, radii).softmax(-1)  # [T, U, N + 1]
        centres = cluster_update(support, support_y, unlabelled, weights, n_way + 1)
    return centres, radii


def distance_statistics(protos: Tensor, unlabelled: Tensor) -> Tensor:
    """Per prototype, statistics of its squared distances to the unlabelled features divided by
    their mean: protos ``[T, N, D]``, unlabelled ``[T, U, D]`` -> ``[T, N, 5]`` (min, max,
    variance, skewness, kurtosis - 3), gradients stopped."""
    d = -euclidean_logits(protos, unlabelled).detach()  # [T, N, U]
    d = d / d.mean(-1, keepdim=True)
    mean = d.mean(-1, keepdim=True)
    var = d.var(-1, unbiased=False, keepdim=True)
    mean = mean + (mean == 0).to(mean.dtype)  # their guards
    var = var + (var == 0).to(var.dtype)
    skew = ((d - mean) ** 3 / var ** 1.5).mean(-1, keepdim=True)
    kurt = ((d - mean) ** 4 / var ** 2 - 3).mean(-1, keepdim=True)
    return torch.cat([d.amin(-1, keepdim=True), d.amax(-1, keepdim=True), var, skew, kurt], -1)


def masked_kmeans(support: Tensor, support_y: Tensor, unlabelled: Tensor, n_way: int,
                  steps: int, mask_mlp: nn.Module) -> Tensor:
    """Prototypes ``[T, N, D]`` after ``steps`` masked soft k-means steps; ``mask_mlp`` maps the
    :func:`distance_statistics` ``[T, N, 5]`` to ``[T, N, 3]`` (threshold start, change, slope,
    before the exponentials)."""
    protos = prototypes(support, support_y, n_way)
    out = mask_mlp(distance_statistics(protos, unlabelled))  # [T, N, 3]
    start, change, slope = out[..., 0].exp(), out[..., 1], out[..., 2].exp()
    for i in range(steps):
        neg_d = euclidean_logits(unlabelled, protos)  # [T, U, N]
        mean_d = -neg_d.mean(1, keepdim=True)  # [T, 1, N]
        mean_d = mean_d + (mean_d == 0).to(mean_d.dtype)
        bias = start + (i / (steps - 1) if steps > 1 else 0.0) * change
        mask = torch.sigmoid((neg_d / mean_d + bias.unsqueeze(1)) * slope.unsqueeze(1))
        protos = cluster_update(support, support_y, unlabelled, neg_d.softmax(-1) * mask, n_way)
    return protos


def mask_mlp() -> nn.Module:
    """The MLP of :func:`masked_kmeans`: 5 -> 20 (tanh) -> 3, weights drawn with std 0.01."""
    mlp = nn.Sequential(nn.Linear(5, 20), nn.Tanh(), nn.Linear(20, 3))
    for layer in (mlp[0], mlp[2]):
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
    return mlp


class PrototypeRefiner(nn.Module):
    """Query logits ``[T, M, N]`` from prototypes refined with unlabelled features, holding the
    learned parts: the distractor radius (``log_radius``) or the mask MLP (``mask``).

    Args:
        mode: ``soft-kmeans``, ``distractor`` or ``masked``; steps: refinement steps (>= 1).
        init_radius: the distractor cluster's starting radius; learn_radius: learn it.
    """

    def __init__(self, mode: str, steps: int = 1, init_radius: float = 100.0,
                 learn_radius: bool = True) -> None:
        super().__init__()
        if mode not in REFINES[1:]:
            raise ValueError(f"refine must be one of {', '.join(REFINES[1:])}, got {mode!r}")
        if steps < 1:
            raise ValueError(f"refine steps must be >= 1, got {steps}")
        self.mode, self.steps = mode, steps
        if mode == "distractor":
            log_r = torch.tensor(math.log(init_radius))
            if learn_radius:
                self.log_radius = nn.Parameter(log_r)
            else:
                self.register_buffer("log_radius", log_r)
        if mode == "masked":
            self.mask = mask_mlp()

    def forward(self, support: Tensor, support_y: Tensor, query: Tensor, unlabelled: Tensor,
                n_way: int) -> Tensor:
        """support ``[T, S, D]``, support_y ``[T, S]``, query ``[T, M, D]``, unlabelled
        ``[T, U, D]`` -> logits ``[T, M, N]``."""
        if self.mode == "soft-kmeans":
            return euclidean_logits(query, soft_kmeans(support, support_y, unlabelled, n_way,
                                                       self.steps))
        if self.mode == "distractor":
            centres, radii = distractor_kmeans(support, support_y, unlabelled, n_way, self.steps,
                                               self.log_radius.exp())
            return radius_logits(query, centres[:, :n_way], radii[:n_way])
        return euclidean_logits(query, masked_kmeans(support, support_y, unlabelled, n_way,
                                                     self.steps, self.mask))
