"""Scoring a learner on fixed episodes: per-episode accuracies, mean, 95% interval, paired tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from scipy import stats
from torch import Tensor

from episodes import ClassDataset, Episode, FixedEpisodes, to_unit_float
from episodes.episode import class_major_labels
from episodes.progress import Meter, bar
from episodes.sampler import gather_episode

from ..models.learner import EpisodicLearner
from . import distributed
from .memory import bytes_per_item, chunks, image_chunk, items_per_chunk, memory_budget
from .precision import autocast, resolve_precision
from .results import SCORES, EvalResult, confidence_interval, episode_scores, result_from_scores


def evaluate(learner: EpisodicLearner, episodes: FixedEpisodes | Episode,
             dataset: ClassDataset | None = None, batch_size: int | None = None,
             device: torch.device | str | None = None, precision: str = "fp32",
             max_memory: int | None = None, temperature: float = 1.0, progress: bool = False
             ) -> EvalResult:
    """Accuracy of ``learner`` (in eval mode) on each of ``episodes`` drawn from ``dataset``, and
    the expected calibration error of its query probabilities ``softmax(logits / temperature)``
    (:mod:`fewshot.calibration`).

    ``episodes`` may also be an :class:`~episodes.Episode` (a batch ``[T, N*K, C, H, W]``, or one
    episode ``[N*K, C, H, W]``), scored as it is, without ``dataset``.

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
        temperature: the logits are divided by it for the calibration error (accuracy does not
            depend on it).
        progress: show how far it is (:func:`episodes.progress.bar`: a bar on a terminal, a
            heartbeat line at least every 10 s otherwise).
    """
    if isinstance(episodes, Episode):
        return _evaluate_episode(learner, episodes, device, precision, temperature)
    if dataset is None:
        raise ValueError("evaluate(learner, episodes, dataset): fixed episodes are indices into "
                         "the dataset they were drawn from: pass it")
    scores = score_shards(episodes, lambda part: torch.cat([
        episode_scores(logits, y, temperature) for logits, y in
        query_logit_batches(learner, part, dataset, batch_size, device, precision, max_memory,
                            progress)]),
        SCORES, torch.float64)
    return result_from_scores(scores, episodes, temperature)


def _evaluate_episode(learner: EpisodicLearner, episode: Episode,
                      device: torch.device | str | None, precision: str, temperature: float
                      ) -> EvalResult:
    """:func:`evaluate` of an :class:`Episode` (a batch, or one episode), in one forward."""
    device = torch.device(device) if device is not None else next(learner.parameters()).device
    ep = episode.as_batch().to(device)
    with _eval_mode(learner), autocast(device, resolve_precision(precision, device)):
        logits = learner.infer(ep.support_x, ep.support_y, ep.query_x, ep.n_way)
    return result_from_scores(episode_scores(logits, ep.query_y, temperature), ep, temperature)


def query_logits(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
                 batch_size: int | None = None, device: torch.device | str | None = None,
                 precision: str = "fp32", max_memory: int | None = None, progress: bool = False
                 ) -> tuple[Tensor, Tensor]:
    """The query logits of every episode, float ``[E, N*Q, N]`` on the CPU, and their labels
    ``[E, N*Q]``, computed as :func:`evaluate` computes them (to fit a temperature:
    :func:`fewshot.calibration.fit_temperature`)."""
    logits = score_shards(episodes, lambda part: torch.cat([
        x.float().cpu() for x, _ in
        query_logit_batches(learner, part, dataset, batch_size, device, precision, max_memory,
                            progress)]),
        (episodes.n_way * episodes.q_query, episodes.n_way))
    return logits, class_major_labels(len(episodes), episodes.n_way, episodes.q_query, "cpu")


def score_shards(episodes: FixedEpisodes, score: Callable[[FixedEpisodes], Tensor],
                 tail: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> Tensor:
    """``score(episodes)`` -> per-episode results ``[E, *tail]`` of ``dtype``; in a distributed run
    (:mod:`fewshot.engine.distributed`; every rank must call this) each rank scores only its contiguous
    part of the episodes and the parts are gathered back in episode order, so every rank returns
    what a single process computes."""
    ctx = distributed.current()
    if not ctx.active:
        return score(episodes)
    part = ctx.part(len(episodes))
    mine = replace(episodes, classes=episodes.classes[part], items=episodes.items[part],
                   unlabelled=None if episodes.unlabelled is None else episodes.unlabelled[part])
    results = score(mine) if len(mine) else torch.zeros(0, *tail, dtype=dtype)
    return distributed.gather_shards(results, len(episodes))


@contextmanager
def _eval_mode(learner: EpisodicLearner) -> Iterator[None]:
    """``learner`` in eval mode for the body, put back in its mode after."""
    was_training = learner.training
    learner.eval()
    try:
        yield
    finally:
        learner.train(was_training)


def query_logit_batches(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
                        batch_size: int | None = None, device: torch.device | str | None = None,
                        precision: str = "fp32", max_memory: int | None = None,
                        progress: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Query logits ``[g, N*Q, N]`` and labels ``[g, N*Q]`` of the episodes, a batch of g at a
    time, in episode order, with ``learner`` in eval mode (see :func:`evaluate`; ``progress``:
    a bar, or heartbeat lines off a terminal)."""
    if device is None:
        device = next(learner.parameters()).device
    device = torch.device(device)
    episodes.check(dataset)
    precision = resolve_precision(precision, device)
    budget = memory_budget(device, max_memory)
    with _eval_mode(learner), autocast(device, precision), bar(
            total=len(episodes), desc="eval", unit="episode", enabled=progress) as meter:
        if learner.features_per_image():
            yield from _from_features(learner, episodes, dataset, batch_size, device, budget,
                                      meter)
        else:
            yield from _from_episodes(learner, episodes, dataset, batch_size, device, budget,
                                      meter)


def _from_episodes(learner: EpisodicLearner, episodes: FixedEpisodes, dataset: ClassDataset,
                   batch_size: int | None, device: torch.device, budget: int, meter: Meter
                   ) -> Iterator[tuple[Tensor, Tensor]]:
    """Whole episodes through ``learner.infer``, ``batch_size`` (or as many as fit) at a time;
    ``meter`` counts them."""
    if batch_size is None:
        probe = gather_episode(dataset, episodes.classes[:1], episodes.items[:1],
                               episodes.k_shot, device)
        per_episode = bytes_per_item(lambda: learner.infer(
            probe.support_x, probe.support_y, probe.query_x, probe.n_way))
        batch_size = items_per_chunk(per_episode, budget, len(episodes))
    for ep in episodes.batches(dataset, batch_size, device):
        yield learner.infer(ep.support_x, ep.support_y, ep.query_x, ep.n_way), ep.query_y
        meter.update(len(ep))


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
                   ) -> Iterator[tuple[Tensor, Tensor]]:
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
            yield logits, query_y.expand(g, -1)
            meter.update(g)


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
