"""Pure functions of semi-supervised learning: sharpening, confidence masks, label guessing,
MixUp, consistency losses and ramp-ups. Logits ``[U, N]`` of U unlabelled images over N classes;
probabilities the same shape; masks ``[U]`` of 0/1 floats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """MixMatch's sharpening ``p_i^(1/T) / sum_j p_j^(1/T)`` over the last dim (``[..., N]``)."""
    p = probs.pow(1 / temperature)
    return p / p.sum(-1, keepdim=True)


def confidence_mask(probs: Tensor, threshold: float) -> Tensor:
    """1 where the largest probability of a row of ``[U, N]`` is at least ``threshold``: ``[U]``
    (USB ``FixedThresholdingHook``: ``max_probs.ge(p_cutoff)``)."""
    return (probs.max(-1).values >= threshold).to(probs.dtype)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``[U, N]`` logits against target distributions ``[U, N]`` (or class
    indices ``[U]``), per row: ``[U]``."""
    if targets.dtype == torch.long:
        return F.cross_entropy(logits, targets, reduction="none")
    return -(targets * F.log_softmax(logits, -1)).sum(-1)


def masked_consistency(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the U rows of the cross-entropy against ``targets`` (indices ``[U]`` or
    distributions ``[U, N]``) times ``mask`` ``[U]``; masked rows count in the mean, as in
    FixMatch (``1/(mu B) sum 1(max q >= tau) H(q_hat, p)``). A scalar."""
    loss = soft_cross_entropy(logits, targets)
    return (loss if mask is None else loss * mask).mean()


def softmax_mse(logits: Tensor, targets: Tensor) -> Tensor:
    """``||softmax(logits) - targets||^2 / N`` averaged over the rows of ``[U, N]``: Mean
    Teacher's consistency cost and MixMatch's unlabelled loss (USB ``consistency_loss(...,
    'mse')``). A scalar."""
    return F.mse_loss(logits.softmax(-1), targets, reduction="none").mean(-1).mean()


def entropy(logits: Tensor) -> Tensor:
    """Mean entropy (nats) of the predictions ``softmax(logits)`` of ``[U, N]`` (Grandvalet &
    Bengio 2005's entropy minimisation). A scalar."""
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1).mean()


def guess_labels(logits: Tensor, temperature: float) -> Tensor:
    """MixMatch's label guess: the mean of the predictions of K views ``[K, U, N]``, sharpened
    with ``temperature``: ``[U, N]``."""
    return sharpen(logits.softmax(-1).mean(0), temperature)


def mixup(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """MixMatch's MixUp of every item with item ``perm[i]``: ``lam' = max(lam, 1 - lam)``,
    ``x' = lam' x + (1 - lam') x[perm]``, the same for the targets ``y`` ``[M, N]``; ``x``
    ``[M, ...]``. Returns ``(x', y')``."""
    lam = max(lam, 1 - lam)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def linear_rampup(step: int, length: float) -> float:
    """``min(step / length, 1)`` (1 when ``length`` is 0): USB's ``unsup_warm_up`` weight."""
    return 1.0 if length <= 0 else min(step / length, 1.0)


def sigmoid_rampup(step: int, length: float) -> float:
    """Laine & Aila's and Mean Teacher's ``exp(-5 (1 - t)^2)`` with ``t = min(step / length,
    1)`` (1 when ``length`` is 0)."""
    if length <= 0:
        return 1.0
    t = min(step / length, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def tsa_threshold(schedule: str, progress: float, classes: int) -> float:
    """UDA's training-signal annealing: labelled items whose correct-class probability exceeds
    this are left out of the supervised loss; ``alpha(t) (1 - 1/N) + 1/N`` with ``alpha`` of
    ``progress`` ``t`` in [0, 1]: ``linear`` t, ``exp`` ``e^(5(t-1))``, ``log`` ``1 - e^(-5t)``,
    ``none`` 1 (all kept)."""
    if schedule == "none":
        return 1.0
    alpha = {"linear": progress, "exp": math.exp(5 * (progress - 1)),
             "log": 1 - math.exp(-5 * progress)}[schedule]
    return alpha * (1 - 1 / classes) + 1 / classes
