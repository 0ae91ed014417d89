"""Sine-wave regression tasks (Finn et al. 2017, section 5.1): the few-shot toy problem of MAML.

Each task is a sine wave ``y = amplitude * sin(x - phase)`` with the amplitude drawn uniformly from
[0.1, 5] and the phase from [0, pi]; its K support and Q query points have ``x`` drawn uniformly
from [-5, 5]. A batch of T tasks is an :class:`~episodes.Episode` whose inputs are vectors of one
number and whose targets are floats: ``support_x`` ``[T, K, 1]``, ``support_y`` ``[T, K]``,
``query_x`` ``[T, Q, 1]``, ``query_y`` ``[T, Q]``, and ``classes`` ``[T, 1]`` zeros (one output,
so ``n_way`` is 1). The one training loop takes :class:`SineTasks` in place of an
:class:`~episodes.EpisodeSampler`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .episode import Episode
from .seeded import SeededBatches


def sine_episode(amplitude: Tensor, phase: Tensor, support_x: Tensor, query_x: Tensor) -> Episode:
    """The episode of T sine waves at the given points.

    Args:
        amplitude, phase: ``[T]``; support_x: ``[T, K]``; query_x: ``[T, Q]`` (e.g. a dense grid,
            to draw the whole curve).
    Returns:
        inputs ``[T, K, 1]`` / ``[T, Q, 1]`` and targets ``amplitude * sin(x - phase)``.
    """
    a, p = amplitude.unsqueeze(1), phase.unsqueeze(1)
    return Episode(support_x=support_x.unsqueeze(-1), support_y=a * torch.sin(support_x - p),
                   query_x=query_x.unsqueeze(-1), query_y=a * torch.sin(query_x - p),
                   classes=torch.zeros(len(amplitude), 1, dtype=torch.long, device=support_x.device))


class SineTasks(SeededBatches):
    """Random sine-wave regression tasks, T at a time, from a seeded CPU generator.

    Args:
        k_shot: support points per task; q_query: query points per task.
        episodes_per_batch: T, tasks per batch.
        amplitude, phase, x_range: the uniform ranges of Finn et al. (defaults).
        seed: seed of the generator; device: where the tensors go.
    """

    def __init__(self, k_shot: int = 10, q_query: int = 10, episodes_per_batch: int = 25,
                 amplitude: tuple[float, float] = (0.1, 5.0),
                 phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0), num_batches: int = 1000,
                 seed: int = 0, device: torch.device | str = "cpu") -> None:
        if k_shot < 1 or q_query < 1 or episodes_per_batch < 1:
            raise ValueError(f"need k_shot, q_query and episodes_per_batch >= 1, got {k_shot}, "
                             f"{q_query}, {episodes_per_batch}")
        for name, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not lo <= hi:
                raise ValueError(f"{name} must be a range (low, high) with low <= high, got "
                                 f"{(lo, hi)}")
        self.k_shot, self.q_query, self.episodes_per_batch = k_shot, q_query, episodes_per_batch
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        super().__init__(num_batches, seed)
        self.device = torch.device(device)

    def _uniform(self, bounds: tuple[float, float], *shape: int) -> Tensor:
        lo, hi = bounds
        return lo + (hi - lo) * torch.rand(*shape, generator=self.generator)

    def sample(self) -> Episode:
        """Draw T new tasks with their support and query points."""
        t = self.episodes_per_batch
        amplitude, phase = self._uniform(self.amplitude, t), self._uniform(self.phase, t)
        x = self._uniform(self.x_range, t, self.k_shot + self.q_query)
        self.batches_drawn += 1
        return sine_episode(amplitude, phase, x[:, :self.k_shot], x[:, self.k_shot:]).to(self.device)
