"""Scoring a learner on fixed episodes: per-episode accuracies, mean, 95% interval, paired tests."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy import stats
from torch import Tensor

from episodes import ClassDataset, FixedEpisodes
from episodes.io import atomic_write_text

from .learner import EpisodicLearner


def confidence_interval(accuracies: Tensor) -> float:
    """Half-width of the 95% interval of the mean: ``1.96 * std / sqrt(E)`` (sample std, ddof=1)."""
    if accuracies.numel() < 2:
        return float("nan")
    return 1.96 * float(accuracies.double().std(unbiased=True)) / math.sqrt(accuracies.numel())


@dataclass
class EvalResult:
    """Accuracies of E fixed episodes (fractions in [0, 1], ``[E]``) with their summary."""

    accuracies: Tensor
    n_way: int
    k_shot: int
    q_query: int

    @property
    def mean(self) -> float:
        return float(self.accuracies.double().mean())

    @property
    def ci95(self) -> float:
        return confidence_interval(self.accuracies)

    def __str__(self) -> str:
        return (f"{self.n_way}-way {self.k_shot}-shot: {100 * self.mean:.2f} +- "
                f"{100 * self.ci95:.2f} % ({len(self.accuracies)} episodes)")

    def to_dict(self) -> dict:
        return {"n_way": self.n_way, "k_shot": self.k_shot, "q_query": self.q_query,
                "episodes": len(self.accuracies), "mean": self.mean, "ci95": self.ci95,
                "accuracies": self.accuracies.tolist()}

    def save_json(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(self.to_dict(), indent=1), path)


def evaluate(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
             batch_size: int = 50, device: torch.device | str | None = None,
             amp: bool = False) -> EvalResult:
    """Accuracy of ``learner`` (in eval mode) on each of ``episodes`` drawn from ``dataset``.

    Args:
        batch_size: episodes per forward pass.
        device: where episodes go (default: the learner's parameters' device).
        amp: bfloat16 autocast.
    """
    if device is None:
        device = next(learner.parameters()).device
    device = torch.device(device)
    was_training = learner.training
    learner.eval()
    accs = []
    try:
        for ep in episodes.batches(dataset, batch_size, device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = learner.infer(ep.support_x, ep.support_y, ep.query_x, ep.n_way)
            accs.append((logits.argmax(-1) == ep.query_y).float().mean(1).cpu())
    finally:
        learner.train(was_training)
    return EvalResult(torch.cat(accs), episodes.n_way, episodes.k_shot, episodes.q_query)


def paired_test(a: EvalResult, b: EvalResult) -> dict[str, float]:
    """Compare two methods scored on the same episodes.

    Returns the mean difference ``a - b`` with its 95% interval, the paired t-test p-value and the
    Wilcoxon signed-rank p-value (``nan`` when every difference is zero).
    """
    if a.accuracies.shape != b.accuracies.shape:
        raise ValueError("paired tests need results on the same episodes")
    diff = (a.accuracies - b.accuracies).double()
    t_p = float(stats.ttest_rel(a.accuracies.numpy(), b.accuracies.numpy()).pvalue)
    w_p = float("nan") if bool((diff == 0).all()) else float(
        stats.wilcoxon(a.accuracies.numpy(), b.accuracies.numpy()).pvalue)
    return {"mean_diff": float(diff.mean()), "ci95": confidence_interval(diff),
            "t_test_p": t_p, "wilcoxon_p": w_p}
