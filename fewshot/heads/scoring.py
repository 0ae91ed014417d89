"""Scoring a backbone with a head on fixed episodes, extracting each image's features once.

Heads that fit on frozen features need each image's features only once, however many episodes
use it: :func:`episode_features` runs the backbone over the distinct images of the episodes (in
chunks of images), and :func:`evaluate_features` fits the head on the gathered features, a batch
of episodes at a time. The episodes, their order and the labels are those of
:meth:`episodes.FixedEpisodes.batches`, so the accuracies are those of
``evaluate(HeadLearner(...), episodes, dataset)`` (tested), at a fraction of the cost. Fine-tuning
heads need the images and are scored by :func:`fewshot.engine.evaluate.evaluate`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from episodes import ClassDataset, FixedEpisodes
from episodes.episode import class_major_labels
from episodes.progress import Meter, bar

from ..engine.evaluate import evaluate, score_shards
from ..engine.features import extract_features
from ..engine.results import SCORES, EvalResult, episode_scores, result_from_scores
from . import HeadLearner, registered


def episode_features(backbone: nn.Module, episodes: FixedEpisodes, dataset: ClassDataset,
                     chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Features ``[U, D]`` of the U distinct images the episodes use (on the backbone's device),
    and where each episode item's features are: long ``[E, N, K+Q]`` rows of them."""
    episodes.check(dataset)
    used, where = torch.unique(episodes.items, return_inverse=True)
    return extract_features(backbone, dataset.load(used), chunk_size), where


def evaluate_features(head: str, config: Any, features: Tensor, where: Tensor,
                      episodes: FixedEpisodes, batch_size: int | None = 50,
                      meter: Meter | None = None) -> EvalResult:
    """:func:`feature_scores` summed: the :class:`EvalResult` of the episodes."""
    return result_from_scores(feature_scores(head, config, features, where, episodes, batch_size,
                                             meter), episodes)


def feature_scores(head: str, config: Any, features: Tensor, where: Tensor,
                   episodes: FixedEpisodes, batch_size: int | None = 50,
                   meter: Meter | None = None) -> Tensor:
    """Accuracy of ``head`` (a feature head of :data:`fewshot.heads.HEADS`) on each episode, and
    the calibration of its query probabilities, from :func:`episode_features`'s ``features`` and
    ``where`` (``batch_size`` episodes per fit; None: 50), as rows ``[E, 1 + 3 * BINS]``
    (:func:`fewshot.engine.evaluate.episode_scores`); ``meter`` (:func:`episodes.progress.bar`)
    counts the episodes scored."""
    batch_size = batch_size or 50
    fit = registered(head).logits
    if fit is None:
        raise ValueError(f"head {head} fine-tunes the backbone: score it on the images "
                         f"(evaluate_head)")
    k, device = episodes.k_shot, features.device
    scores = []
    for s in range(0, len(episodes), batch_size):
        rows = where[s:s + batch_size].to(device)
        t, n, kq = rows.shape
        f = features[rows]  # [t, N, K+Q, D]
        support = f[:, :, :k].reshape(t, n * k, -1)
        query = f[:, :, k:].reshape(t, n * (kq - k), -1)
        query_y = class_major_labels(t, n, kq - k, device)
        with torch.set_grad_enabled(registered(head).needs_grad):
            logits = fit(support, class_major_labels(t, n, k, device), query, n, config)
        scores.append(episode_scores(logits.detach(), query_y))
        if meter is not None:
            meter.update(t)
    return torch.cat(scores)


def evaluate_head(backbone: nn.Module, head: str, config: Any, episodes: FixedEpisodes,
                  dataset: ClassDataset, batch_size: int | None = 50, chunk_size: int | None = None,
                  device: torch.device | str | None = None, progress: bool = False) -> EvalResult:
    """Accuracy of ``backbone`` with ``head`` fitted on each of ``episodes`` (the backbone is
    moved to ``device``, default: where it is; it is never changed). In a distributed run each
    rank scores its part of the episodes (:func:`fewshot.engine.evaluate.score_shards`).
    ``progress``: show how far it is (:func:`episodes.progress.bar`)."""
    if device is not None:
        backbone.to(device)
    if registered(head).logits is None:
        return evaluate(HeadLearner(backbone, head, config, chunk_size), episodes, dataset,
                        batch_size, device, progress=progress)

    def score(part: FixedEpisodes) -> Tensor:
        with bar(total=len(part), desc="eval: embedding images", unit="episode",
                 enabled=progress) as meter:
            features, where = episode_features(backbone, part, dataset, chunk_size)
            meter.set_description(f"eval: fitting {head} heads")
            return feature_scores(head, config, features, where, part, batch_size, meter)

    episodes.check(dataset)
    return result_from_scores(score_shards(episodes, score, SCORES, torch.float64), episodes)
