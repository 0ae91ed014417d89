"""What evaluation returns: per-episode accuracies with their mean and 95% interval, and the
calibration of the query probabilities (:mod:`fewshot.calibration`), gathered per episode so
that chunks and processes add up."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from episodes import Episode, FixedEpisodes
from episodes.io import atomic_write_text

from ..calibration import (
    BINS,
    calibration_bins,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
)


def confidence_interval(accuracies: Tensor) -> float:
    """Half-width of the 95% interval of the mean: ``1.96 * std / sqrt(E)`` (sample std, ddof=1)."""
    if accuracies.numel() < 2:
        return float("nan")
    return 1.96 * float(accuracies.double().std(unbiased=True)) / math.sqrt(accuracies.numel())


@dataclass
class EvalResult:
    """Accuracies of E fixed episodes (fractions in [0, 1], ``[E]``) with their summary.

    ``calibration``: the query predictions' per-bin sums (:func:`fewshot.calibration.
    calibration_bins`, summed over the episodes: ``[3, B]``), or None; ``temperature``: the
    temperature the probabilities were computed at (logits divided by it); ``before_fit``: when
    that temperature was fitted on these episodes, ``{"temperature": ..., "ece": ...}`` before
    (:func:`calibrated_result`)."""

    accuracies: Tensor
    n_way: int
    k_shot: int
    q_query: int
    calibration: Tensor | None = None
    temperature: float = 1.0
    before_fit: dict[str, float] | None = None

    @property
    def mean(self) -> float:
        return float(self.accuracies.double().mean())

    @property
    def ci95(self) -> float:
        return confidence_interval(self.accuracies)

    @property
    def ece(self) -> float:
        """Expected calibration error of the query predictions (``nan`` without calibration)."""
        return float("nan") if self.calibration is None else ece_from_bins(self.calibration)

    def __str__(self) -> str:
        ece = "" if self.calibration is None else (
            f", ECE {100 * self.ece:.2f} %" + (f" at T={self.temperature:.3g}"
                                               if self.temperature != 1.0 else ""))
        if self.before_fit is not None:
            ece = (f", ECE {100 * self.before_fit['ece']:.2f} % at "
                   f"T={self.before_fit['temperature']:.3g} -> {100 * self.ece:.2f} % at "
                   f"T={self.temperature:.3g} fitted on these episodes")
        return (f"{self.n_way}-way {self.k_shot}-shot: {100 * self.mean:.2f} +- "
                f"{100 * self.ci95:.2f} % ({len(self.accuracies)} episodes{ece})")

    def to_dict(self) -> dict:
        out = {"n_way": self.n_way, "k_shot": self.k_shot, "q_query": self.q_query,
               "episodes": len(self.accuracies), "mean": self.mean, "ci95": self.ci95}
        if self.calibration is not None:
            out.update(ece=self.ece, ece_bins=self.calibration.shape[-1],
                       temperature=self.temperature)
        if self.before_fit is not None:
            out["before_fit"] = self.before_fit
        return {**out, "accuracies": self.accuracies.tolist()}

    def save_json(self, path: str | os.PathLike, **extra: object) -> None:
        """The summary, ``extra`` and the per-episode accuracies as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps({**self.to_dict(), **extra}, indent=1), path)


SCORES = (1 + 3 * BINS,)  # per episode: accuracy, calibration bins (episode_scores)


def episode_scores(logits: Tensor, query_y: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-episode accuracy and calibration sums of query logits ``[T, M, N]`` against labels
    ``[T, M]``: float64 ``[T, 1 + 3 * BINS]`` on the CPU (accuracy, then
    :func:`~fewshot.calibration.calibration_bins` flattened), additive over episodes so that
    chunks and processes can be gathered (:func:`score_shards`)."""
    acc = (logits.argmax(-1) == query_y).double().mean(1, keepdim=True)
    bins = calibration_bins(logits.float(), query_y, BINS, temperature)
    return torch.cat([acc, bins.flatten(1)], 1).cpu()


def result_from_scores(scores: Tensor, episodes: FixedEpisodes | Episode,
                       temperature: float = 1.0) -> EvalResult:
    """The :class:`EvalResult` of :func:`episode_scores` rows ``[E, 1 + 3 * BINS]``."""
    return EvalResult(scores[:, 0].float(), episodes.n_way, episodes.k_shot, episodes.q_query,
                      scores[:, 1:].reshape(-1, 3, BINS).sum(0), temperature)


def calibrated_result(logits: Tensor, labels: Tensor, episodes: FixedEpisodes,
                      temperature: float = 1.0) -> EvalResult:
    """The :class:`EvalResult` of query logits ``[E, M, N]`` and labels ``[E, M]``
    (:func:`query_logits`) at the temperature fitted on them (:func:`fewshot.calibration.
    fit_temperature`), with the calibration error at ``temperature`` before."""
    fitted = fit_temperature(logits, labels)
    result = result_from_scores(episode_scores(logits, labels, fitted), episodes, fitted)
    result.before_fit = {"temperature": temperature, "ece": expected_calibration_error(
        logits, labels, BINS, temperature)}
    return result
