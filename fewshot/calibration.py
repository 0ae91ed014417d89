"""Calibration of query probabilities: expected calibration error and temperature scaling.

Pure functions on logits; no model, no data.

- :func:`calibration_bins` / :func:`ece_from_bins` / :func:`expected_calibration_error`: the
  expected calibration error (ECE) of Guo et al. 2017 ("On calibration of modern neural
  networks", eq. 3): the predictions are grouped by confidence (the top softmax probability) into
  ``B`` equal-width bins ``(i/B, (i+1)/B]``, and ECE is
  ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)| = sum_b |correct_b - confidence_b| / n``, with
  ``correct_b`` and ``confidence_b`` the sums over the bin. The per-bin sums are additive, so they
  are kept per episode (``[T, 3, B]``) and summed over any set of episodes, chunks or processes.
  Compared with the authors' code (gpleiss/temperature_scaling, ``_ECELoss``): the same 15
  equal-width bins with upper-inclusive edges and the same weighting; the bin sums replace its
  loop over bins (the values agree: tested on a hand-computed example).
- :func:`fit_temperature`: one scalar ``T`` minimising the negative log-likelihood of
  ``softmax(logits / T)`` (Guo et al. 2017, section 4.2). The authors optimise ``T`` with LBFGS;
  here the NLL is minimised over ``log T`` by golden-section search (the NLL is convex in ``1/T``,
  so unimodal in ``log T``), which needs no step size or starting value (theirs starts at 1.5
  with 50 LBFGS iterations at rate 0.01) and converges to the minimiser to ``tol`` (tested on
  logits exactly twice too confident, whose answer is ``T = 2``). Their bin edges come from
  ``linspace(0, 1, 16)``; here a confidence ``c`` falls in bin ``ceil(15 c) - 1``, which can
  differ only for a confidence on an edge, up to rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BINS = 15
T_RANGE = (1e-6, 1e6)  # wide: logits of an untrained model can be ~1e-3 apart


def calibration_bins(logits: Tensor, labels: Tensor, bins: int = BINS,
                     temperature: float = 1.0) -> Tensor:
    """Per-bin sums of the predictions of ``softmax(logits / temperature)``.

    Args:
        logits: ``[*S, N]`` (e.g. ``[T, M, N]``: T episodes of M queries among N classes).
        labels: long ``[*S]``.
    Returns:
        float64 ``[T, 3, bins]``, T the first dimension of ``logits`` ``[T, ..., N]`` (the
        episodes; T = 1 for logits ``[M, N]``): for each bin ``(i/bins, (i+1)/bins]`` the number
        of predictions, the sum of their confidences and the number that are correct.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: "
                         f"logits must be [*S, N] for labels [*S]")
    if logits.dim() == 1:
        raise ValueError("logits must be [*S, N] with at least one prediction dimension")
    probs = (logits.double() / temperature).softmax(-1)
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    which = (conf * bins).ceil().long().clamp_(1, bins) - 1  # (i/B, (i+1)/B] -> i
    one_hot = F.one_hot(which, bins).double()  # [*S, B]
    lead = 1 if logits.dim() == 2 else logits.shape[0]
    one_hot = one_hot.reshape(lead, -1, bins)
    conf, correct = conf.reshape(lead, -1, 1), correct.reshape(lead, -1, 1)
    return torch.stack([one_hot.sum(1), (one_hot * conf).sum(1), (one_hot * correct).sum(1)], 1)


def ece_from_bins(stats: Tensor) -> float:
    """ECE (a fraction in ``[0, 1]``) from :func:`calibration_bins` sums ``[..., 3, B]`` (summed
    over the leading dimensions first); ``nan`` when there is no prediction."""
    total = stats.reshape(-1, *stats.shape[-2:]).sum(0)
    n = float(total[0].sum())
    if n == 0:
        return float("nan")
    return float((total[1] - total[2]).abs().sum()) / n


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = BINS,
                               temperature: float = 1.0) -> float:
    """ECE of ``softmax(logits / temperature)`` (logits ``[*S, N]``, labels ``[*S]``) with
    ``bins`` equal-width confidence bins (Guo et al. 2017)."""
    return ece_from_bins(calibration_bins(logits, labels, bins, temperature))


def temperature_nll(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    flat = logits.reshape(-1, logits.shape[-1]).double()
    return float(F.cross_entropy(flat / temperature, labels.reshape(-1)))


def fit_temperature(logits: Tensor, labels: Tensor, low: float = T_RANGE[0],
                    high: float = T_RANGE[1], tol: float = 1e-7) -> float:
    """The temperature ``T`` in ``[low, high]`` minimising :func:`temperature_nll`.

    Args:
        logits: ``[*S, N]`` (e.g. the query logits of validation episodes ``[E, M, N]``).
        labels: long ``[*S]``.
        tol: the search stops when the bracket on ``log T`` is narrower than this.
    Returns:
        ``T`` (divide logits by it before the softmax); an end of the range when the minimum
        lies beyond it (e.g. every prediction correct: the NLL falls as ``T -> 0``).
    """
    if logits.shape[:-1] != labels.shape or logits.numel() == 0:
        raise ValueError(f"fit_temperature needs logits [*S, N] and labels [*S] with at least one "
                         f"prediction, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    logits, labels = logits.detach().double().cpu(), labels.detach().cpu()
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = (temperature_nll(logits, labels, math.exp(x)) for x in (c, d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = temperature_nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = temperature_nll(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)


def stored_temperature(value: Any, source: str = "checkpoint") -> float:
    """A checkpoint's ``temperature`` as a float (None: 1.0); ``ValueError`` naming ``source``
    unless it is a positive finite number."""
    if value is None:
        return 1.0
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{source} holds temperature {value!r}, not a positive finite number: "
                         f"use a checkpoint written by fewshot train")
    return float(value)
