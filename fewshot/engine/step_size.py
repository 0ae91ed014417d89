"""How many episodes a training step takes, and how many of them one forward pass takes.

``fewshot train --episodes-per-step auto`` (the default) asks :func:`auto_episodes_per_step`:
on a GPU, as many episodes as keep it busy (:data:`AUTO_IMAGES` images per step) and fit the
memory budget; on a CPU one episode, the papers' protocol (batching episodes does not make a
CPU step faster per episode: BENCHMARKS.md, "CPU speed"). When a step's T episodes do
not fit the budget, the training loop accumulates gradients over chunks of
:func:`episodes_per_forward` episodes; with per-episode BatchNorm (:mod:`fewshot.models.episode_norm`)
the result is the unsplit step's.
"""

from __future__ import annotations

from typing import Any

import torch

from episodes import Episode, EpisodeSampler, SineTasks

from ..models.learner import EpisodicLearner
from .memory import bytes_per_item, items_per_chunk, memory_budget

AUTO_IMAGES = {"cuda": 4096}  # images per step that keep a GPU busy (CPU: one episode per step)


def training_bytes_per_episode(learner: EpisodicLearner, n_way: int, k_shot: int, q_query: int,
                               image_shape: tuple[int, ...], device: torch.device | str) -> int:
    """Bytes of one training forward and backward on one episode of zeros (an upper bound:
    every tensor created counts), of the learner's whole training loss
    (:meth:`~fewshot.models.learner.EpisodicLearner.batch_loss`: auxiliary losses such as the rotation
    loss's forward included). The learner's weights, buffers, gradients and the global RNG are
    left as they were."""
    device = torch.device(device)
    sx = torch.zeros(1, n_way * k_shot, *image_shape, device=device)
    qx = torch.zeros(1, n_way * q_query, *image_shape, device=device)
    sy = torch.arange(n_way, device=device).repeat_interleave(k_shot).unsqueeze(0)
    qy = torch.arange(n_way, device=device).repeat_interleave(q_query).unsqueeze(0)
    classes = torch.arange(n_way, device=device).unsqueeze(0)
    buffers = {k: v.clone() for k, v in learner.state_dict().items()}
    grads = {p: p.grad for p in learner.parameters()}
    was_training = learner.training
    learner.train()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            def step() -> None:
                learner.batch_loss(Episode(sx, sy, qx, qy, classes))[0].float().backward()
            return bytes_per_item(step)
    finally:
        learner.load_state_dict(buffers)
        for p, g in grads.items():
            p.grad = g
        learner.train(was_training)


def episodes_per_forward(per_episode: int, budget: int, episodes: int) -> int:
    """Episodes of a step one forward takes: all ``episodes`` if they fit ``budget``, else the
    most that fit (at least 1)."""
    return items_per_chunk(per_episode, budget, episodes)


def auto_episodes_per_step(per_episode: int, images_per_episode: int, budget: int,
                           device: torch.device | str) -> int:
    """Episodes per step for ``device``: 1 on a CPU; on a GPU enough for :data:`AUTO_IMAGES`
    images, at most what fits ``budget``."""
    target = AUTO_IMAGES.get(torch.device(device).type, 0) // max(images_per_episode, 1)
    return max(1, min(target, items_per_chunk(per_episode, budget)))


def auto_episodes(learner: EpisodicLearner, n_way: int, k_shot: int, q_query: int,
                  image_shape: tuple[int, ...], device: torch.device | str,
                  max_memory: int | None = None) -> int:
    """What ``--episodes-per-step auto`` picks for ``learner`` (on ``device``) on N-way K-shot
    Q-query episodes of ``image_shape`` images: :func:`auto_episodes_per_step` of its measured
    training bytes per episode, within :func:`fewshot.engine.memory.memory_budget` of ``max_memory``."""
    per_episode = training_bytes_per_episode(learner, n_way, k_shot, q_query, image_shape, device)
    return auto_episodes_per_step(per_episode, n_way * (k_shot + q_query),
                                  memory_budget(device, max_memory), device)


def step_chunk(learner: EpisodicLearner, sampler: EpisodeSampler | SineTasks | Any,
               chunk: int | None, max_memory: int | None, device: torch.device,
               t: int | None = None) -> int:
    """Episodes per forward: ``chunk`` (``TrainConfig.episodes_per_forward``), else all ``t``
    (default: the T of a step) if their training forward and backward fit ``max_memory``
    (:func:`~fewshot.engine.memory.memory_budget`), else the most that fit."""
    t = sampler.episodes_per_batch if t is None else t
    if not isinstance(sampler, EpisodeSampler):  # SineTasks: small vectors, one forward
        return min(chunk or t, t)
    if chunk is not None or t == 1:
        return min(chunk or 1, t)
    per_episode = training_bytes_per_episode(learner, sampler.n_way, sampler.k_shot,
                                             sampler.q_query, sampler.dataset.image_shape, device)
    return episodes_per_forward(per_episode, memory_budget(device, max_memory), t)
