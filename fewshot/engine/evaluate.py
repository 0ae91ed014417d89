"""Scoring a learner on fixed episodes: per-episode accuracies, mean, 95% interval, paired tests."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from scipy import stats
from torch import Tensor

from episodes import ClassDataset, FixedEpisodes, to_unit_float
from episodes.episode import class_major_labels
from episodes.io import atomic_write_text
from episodes.progress import Meter, bar
from episodes.sampler import gather_episode

from ..models.learner import EpisodicLearner
from . import distributed
from .memory import bytes_per_item, chunks, image_chunk, items_per_chunk, memory_budget
from .precision import autocast, resolve_precision


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
             batch_size: int | None = None, device: torch.device | str | None = None,
             precision: str = "fp32", max_memory: int | None = None, progress: bool = False
             ) -> EvalResult:
    """Accuracy of ``learner`` (in eval mode) on each of ``episodes`` drawn from ``dataset``.

    Memory stays within a budget (:func:`fewshot.engine.memory.memory_budget`: ``max_memory`` bytes, or
    a share of the device's free memory). Learners with per-image features embed each distinct
    image of the episodes once, in chunks of images, and score the episodes from the features;
    the others run whole episodes, as many per forward as fit. Both give the accuracies an
    unchunked pass gives.

    In a distributed run (:mod:`fewshot.engine.distributed`; every rank must call this) each rank scores
    its contiguous part of the episodes and the accuracies are gathered back in episode order, so
    every rank returns those of a single-process run.

    Args:
        batch_size: episodes per pass (of the head, or of the whole learner); None: the most
            that fit the budget.
        device: where episodes go (default: the learner's parameters' device).
        precision: "fp32", or "bf16" (bfloat16 autocast); "auto" as in training
            (:func:`fewshot.engine.precision.resolve_precision`, for any method).
        max_memory: bytes one forward may take (None: from the device's free memory).
        progress: show how far it is (:func:`episodes.progress.bar`: a bar on a terminal, a
            heartbeat line at least every 10 s otherwise).
    """
    if device is None:
        device = next(learner.parameters()).device
    device = torch.device(device)
    episodes.check(dataset)
    precision = resolve_precision(precision, device)
    accs = score_shards(episodes, lambda part: _score(learner, part, dataset, batch_size, device,
                                                      precision, max_memory, progress))
    return EvalResult(accs, episodes.n_way, episodes.k_shot, episodes.q_query)


def score_shards(episodes: FixedEpisodes, score: Callable[[FixedEpisodes], Tensor]) -> Tensor:
    """``score(episodes)`` -> per-episode accuracies ``[E]``; in a distributed run
    (:mod:`fewshot.engine.distributed`; every rank must call this) each rank scores only its contiguous
    part of the episodes and the parts are gathered back in episode order, so every rank returns
    what a single process computes."""
    ctx = distributed.current()
    if not ctx.active:
        return score(episodes)
    part = ctx.part(len(episodes))
    mine = replace(episodes, classes=episodes.classes[part], items=episodes.items[part],
                   unlabelled=None if episodes.unlabelled is None else episodes.unlabelled[part])
    accs = score(mine) if len(mine) else torch.zeros(0)
    return distributed.gather_shards(accs, len(episodes))


def _score(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
           batch_size: int | None, device: torch.device, precision: str, max_memory: int | None,
           progress: bool = False) -> Tensor:
    """Per-episode accuracies ``[E]`` of ``episodes`` in this process (see :func:`evaluate`)."""
    budget = memory_budget(device, max_memory)
    was_training = learner.training
    learner.eval()
    try:
        with autocast(device, precision), bar(total=len(episodes), desc="eval", unit="episode",
                                              enabled=progress) as meter:
            if learner.features_per_image():
                accs = _from_features(learner, episodes, dataset, batch_size, device, budget,
                                      meter)
            else:
                accs = _from_episodes(learner, episodes, dataset, batch_size, device, budget,
                                      meter)
    finally:
        learner.train(was_training)
    return accs


def _accuracy(logits: Tensor, query_y: Tensor) -> Tensor:
    return (logits.argmax(-1) == query_y).float().mean(1).cpu()


def _from_episodes(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
                   batch_size: int | None, device: torch.device, budget: int, meter: Meter
                   ) -> Tensor:
    """Whole episodes through ``learner.infer``, ``batch_size`` (or as many as fit) at a time;
    ``meter`` counts them."""
    if batch_size is None:
        probe = gather_episode(dataset, episodes.classes[:1], episodes.items[:1],
                               episodes.k_shot, device)
        per_episode = bytes_per_item(lambda: learner.infer(
            probe.support_x, probe.support_y, probe.query_x, probe.n_way))
        batch_size = items_per_chunk(per_episode, budget, len(episodes))
    accs = []
    for ep in episodes.batches(dataset, batch_size, device):
        accs.append(_accuracy(learner.infer(ep.support_x, ep.support_y, ep.query_x, ep.n_way),
                              ep.query_y))
        meter.update(len(ep))
    return torch.cat(accs)


def embed_items(embed: Callable[[Tensor], Tensor], dataset: ClassDataset, index: Tensor,
                device: torch.device, budget: int) -> Tensor:
    """``embed`` (e.g. ``learner.embed``) of the dataset's images ``index`` (long ``[U]``) ->
    ``[U, *F]``, as many images per forward as fit ``budget``, without autograd."""
    chunk = image_chunk(embed, dataset.image_shape, device, budget, total=len(index))
    with torch.no_grad():
        return torch.cat([embed(to_unit_float(dataset.load(index[s]).to(device)))
                          for s in chunks(len(index), chunk)])


def _from_features(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
                   batch_size: int | None, device: torch.device, budget: int, meter: Meter
                   ) -> Tensor:
    """Embed the distinct images of a group of episodes once, then score the group's episodes
    from their features with ``learner.head``, ``batch_size`` (or as many as fit) at a time.
    A group is every episode when all their features fit half the budget. ``meter`` counts the
    episodes scored and says which of the two it is doing."""
    n, k, kq = episodes.items.shape[1], episodes.k_shot, episodes.items.shape[2]
    feat_shape = _feature_shape(learner, dataset, device)
    feat_bytes = 4 * math.prod(feat_shape)
    unique_all = episodes.items.unique()
    per_group = (len(episodes) if len(unique_all) * feat_bytes <= budget // 2
                 else max(1, (budget // 2) // (n * kq * feat_bytes)))
    if batch_size is None:
        sf = torch.zeros(1, n * k, *feat_shape, device=device)
        qf = torch.zeros(1, n * (kq - k), *feat_shape, device=device)
        sy = class_major_labels(1, n, k, device)
        with torch.no_grad():
            per_episode = bytes_per_item(lambda: learner.head(sf, sy, qf, n))
        batch_size = items_per_chunk(per_episode + n * kq * feat_bytes, budget // 2)
    support_y = class_major_labels(1, n, k, device)
    query_y = class_major_labels(1, n, kq - k, device)
    accs = []
    for group in chunks(len(episodes), per_group):
        unique, inverse = episodes.items[group].unique(return_inverse=True)
        meter.set_description(f"eval: embedding {len(unique)} images")
        feats = embed_items(learner.embed, dataset, unique, device, budget)
        meter.set_description("eval: scoring episodes")
        inverse = inverse.to(device)
        for s in chunks(inverse.shape[0], batch_size):
            f = feats[inverse[s]]  # [G, N, K+Q, *F]
            g = f.shape[0]
            with torch.no_grad():
                logits = learner.head(f[:, :, :k].flatten(1, 2), support_y.expand(g, -1),
                                      f[:, :, k:].flatten(1, 2), n)
            accs.append(_accuracy(logits, query_y.expand(g, -1)))
            meter.update(g)
    return torch.cat(accs)


def _feature_shape(learner: EpisodicLearner, dataset: ClassDataset, device: torch.device
                   ) -> torch.Size:
    with torch.no_grad():
        return learner.embed(torch.zeros(1, *dataset.image_shape, device=device)).shape[1:]


def paired_test(a: EvalResult, b: EvalResult) -> dict[str, float]:
    """Compare two methods scored on the same episodes.

    Returns the mean difference ``a - b`` with its 95% interval, the paired t-test p-value and the
    Wilcoxon signed-rank p-value (``nan`` when every difference is zero).
    """
    if a.accuracies.shape != b.accuracies.shape:
        raise ValueError("paired tests need results on the same episodes")
    x, y = a.accuracies.double().numpy(), b.accuracies.double().numpy()  # float32 p-values
    diff = torch.from_numpy(x - y)  # underflow to 0 below 1e-38
    t_p = float(stats.ttest_rel(x, y).pvalue)
    w_p = float("nan") if bool((diff == 0).all()) else float(stats.wilcoxon(x, y).pvalue)
    return {"mean_diff": float(diff.mean()), "ci95": confidence_interval(diff),
            "t_test_p": t_p, "wilcoxon_p": w_p}
