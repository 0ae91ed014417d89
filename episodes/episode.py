"""The one episode type of the library.

An episode is an N-way K-shot task: N classes, K labelled *support* images per class and Q *query*
images per class to classify. Episodes always travel in batches of T (T may be 1), so every tensor
has a leading episode dimension. A semi-supervised episode also carries unlabelled images
(:mod:`episodes.unlabelled`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Episode:
    """A batch of T N-way K-shot Q-query episodes.

    Regression tasks (:class:`episodes.SineTasks`) use the same type with inputs ``[T, K, 1]``,
    float targets ``[T, K]`` and one output (``N = 1``).

    Attributes:
        support_x: float images ``[T, N*K, C, H, W]``, class-major (the K images of class 0 first).
        support_y: labels ``[T, N*K]`` in ``0..N-1``.
        query_x: float images ``[T, N*Q, C, H, W]``, class-major.
        query_y: labels ``[T, N*Q]`` in ``0..N-1``.
        classes: dataset class indices ``[T, N]``: label ``j`` of episode ``t`` is class
            ``classes[t, j]`` of the dataset the episode came from.
        unlabelled_x: float images ``[T, U, C, H, W]`` without labels, or None: M images of each
            of the N classes and of D distractor classes (``U = (N + D) * M``), in a random order
            within each episode; their classes are not part of the episode
            (:mod:`episodes.unlabelled`).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor
    unlabelled_x: Tensor | None = None

    @property
    def n_way(self) -> int:
        return self.classes.shape[1]

    @property
    def k_shot(self) -> int:
        return self.support_y.shape[1] // self.n_way

    @property
    def q_query(self) -> int:
        return self.query_y.shape[1] // self.n_way

    def __len__(self) -> int:
        """Number of episodes T in the batch."""
        return self.classes.shape[0]

    def slice(self, part: slice) -> Episode:
        """The episodes ``part`` of the batch (views, no copy)."""
        return Episode(self.support_x[part], self.support_y[part], self.query_x[part],
                       self.query_y[part], self.classes[part],
                       None if self.unlabelled_x is None else self.unlabelled_x[part])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """Return the episode batch moved to ``device``."""
        return Episode(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in
                         (self.support_x, self.support_y, self.query_x, self.query_y, self.classes,
                          self.unlabelled_x)))


def class_major_labels(t: int, n_way: int, per_class: int, device: torch.device | str) -> Tensor:
    """Labels ``[t, n_way*per_class]``: ``0`` repeated ``per_class`` times, then ``1``, ..."""
    return torch.arange(n_way, device=device).repeat_interleave(per_class).expand(t, -1).contiguous()
