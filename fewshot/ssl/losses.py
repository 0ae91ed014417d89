"""Self-supervised losses as small pure functions (each tested against a hand computation).

Notation: ``B`` images, ``D`` embedding dimensions, ``z1, z2`` ``[B, D]`` the embeddings of two
views of the same images (row ``i`` of both is image ``i``), ``sim(a, b) = a.b / (|a| |b|)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def full_precision(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a loss outside autocast with half-precision tensor arguments turned into float32
    (similarities, correlations and variances lose too much in bfloat16 under ``--amp``)."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if isinstance(a, Tensor) and a.dtype in (torch.float16,
                                                                        torch.bfloat16) else a
                     for a in args)
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)
    return wrapped


@full_precision
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1), averaged over all ``2B`` anchors.

    With ``u = [z1; z2]`` ``[2B, D]`` and ``s_ij = sim(u_i, u_j) / t``, the positive of anchor
    ``i`` is the other view of its image, ``p(i) = i + B mod 2B``::

        loss = 1/(2B) sum_i -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )

    Returns the scalar loss, the logits ``[2B, 2B]`` (``-inf`` on the diagonal) and the
    positives' columns ``[2B]``.
    """
    b = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    s = u @ u.t() / temperature
    s = s.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=s.device), float("-inf"))
    positive = torch.arange(2 * b, device=s.device).roll(b)
    return F.cross_entropy(s, positive), s, positive


@full_precision
def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> tuple[Tensor, Tensor]:
    """MoCo's InfoNCE (He et al. 2020, eq. 1) of queries ``q`` ``[B, D]`` against their keys
    ``k`` ``[B, D]`` (no gradient flows into them) and ``K`` negative keys ``queue`` ``[K, D]``,
    all compared after L2 normalisation::

        loss = 1/B sum_i -log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_n exp(q_i.queue_n / t)) )

    Returns the scalar loss and the logits ``[B, 1 + K]`` (the positive in column 0).
    """
    q, k, queue = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1), F.normalize(queue, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / temperature
    return F.cross_entropy(logits, logits.new_zeros(len(q), dtype=torch.long)), logits


@full_precision
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss (Grill et al. 2020, eq. 2) of online predictions ``p`` ``[B, D]``
    to target projections ``z`` ``[B, D]`` (no gradient flows into the target)::

        loss = 1/B sum_i | p_i/|p_i| - z_i/|z_i| |^2 = 1/B sum_i (2 - 2 sim(p_i, z_i))

    (The paper sums the two views' symmetric terms: call it twice, view roles swapped.)"""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


@full_precision
def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's loss term (Chen & He 2021, eq. 1 with the stop-gradient of eq. 3):
    ``-1/B sum_i sim(p_i, stopgrad(z_i))`` for ``[B, D]`` predictions and projections; the
    symmetric loss is ``(D(p1, z2) + D(p2, z1)) / 2``."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square ``[D, D]`` matrix as a flat ``[D * (D - 1)]``."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


@full_precision
def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021, eq. 1): with each dimension standardised over the batch
    (``zn = (z - mean_b z) / sqrt(var_b z + eps)``, the biased variance, as a BatchNorm without
    affine parameters) and the cross-correlation ``C = zn1^T zn2 / B`` ``[D, D]``::

        loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2
    """
    b = z1.shape[0]

    def standardise(z: Tensor) -> Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = standardise(z1).t() @ standardise(z2) / b
    return (torch.diagonal(c) - 1).pow(2).sum() + lambd * off_diagonal(c).pow(2).sum()


@full_precision
def vicreg_loss(z1: Tensor, z2: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg (Bardes et al. 2022, eqs. 1-6)::

        invariance  s = 1/(B D) sum_{i,d} (z1_id - z2_id)^2
        variance    v(z) = 1/D sum_d max(0, gamma - sqrt(Var_b z_d + eps))   (unbiased Var)
        covariance  c(z) = 1/D sum_{d != e} Cov(z)_de^2,  Cov(z) = (z - mean)^T (z - mean)/(B - 1)
        loss = sim_coeff * s + std_coeff * (v(z1) + v(z2)) / 2 + cov_coeff * (c(z1) + c(z2))

    (the authors' code halves the variance term of the two branches and sums their covariance
    terms, as here)."""
    b, d = z1.shape
    invariance = F.mse_loss(z1, z2)

    def variance(z: Tensor) -> Tensor:
        return F.relu(gamma - torch.sqrt(z.var(0) + eps)).mean()

    def covariance(z: Tensor) -> Tensor:
        z = z - z.mean(0)
        return off_diagonal(z.t() @ z / (b - 1)).pow(2).sum() / d

    return (sim_coeff * invariance + std_coeff * (variance(z1) + variance(z2)) / 2
            + cov_coeff * (covariance(z1) + covariance(z2)))


@full_precision
def balanced_cross_entropy(logits: Tensor, labels: Tensor, counts: Tensor) -> Tensor:
    """Cross-entropy of ``[B, K]`` logits against pseudo-labels ``[B]``, each image weighted by
    ``1 / counts[label]`` (``counts`` ``[K]``: images per pseudo-class over the whole split),
    normalised by the weights' sum: the expectation of DeepCluster's sampling of images
    uniformly over the pseudo-classes::

        loss = sum_i w_i CE_i / sum_i w_i,   w_i = 1 / counts[y_i]
    """
    w = 1.0 / counts[labels].clamp(min=1).to(logits.dtype)
    return (w * F.cross_entropy(logits, labels, reduction="none")).sum() / w.sum()


def embedding_std(z: Tensor) -> Tensor:
    """Collapse monitor (BYOL/SimSiam, Chen & He 2021 sec. 4.1): the mean over dimensions of the
    per-dimension standard deviation over the batch of the L2-normalised embeddings ``[B, D]``.
    About ``1 / sqrt(D)`` for spread-out embeddings, 0 when they collapse to one point."""
    return F.normalize(z.float(), dim=1).std(0).mean()
