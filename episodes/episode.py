"""The one episode type of the library.

An episode is an N-way K-shot task: N classes, K labelled *support* images per class and Q *query*
images per class to classify. Episodes travel in batches of T (T may be 1), so every tensor has
a leading episode dimension; a single episode may also be given without it (``[N*K, C, H, W]``,
labels ``[N*K]``): :meth:`Episode.as_batch` adds it. A semi-supervised episode also carries
unlabelled images (:mod:`episodes.unlabelled`).
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
        return self.classes.shape[-1]

    @property
    def k_shot(self) -> int:
        return self.support_y.shape[-1] // self.n_way

    @property
    def q_query(self) -> int:
        return self.query_y.shape[-1] // self.n_way

    @property
    def is_batch(self) -> bool:
        """True for a batch ``[T, N*K, ...]``, False for one episode without the leading dim."""
        return self.support_y.dim() == 2

    def __len__(self) -> int:
        """Number of episodes T in the batch (1 for a single episode)."""
        return self.classes.shape[0] if self.is_batch else 1

    def as_batch(self) -> Episode:
        """This batch, or a single episode as a batch of one (views, no copy)."""
        if self.is_batch:
            return self
        return Episode(*(None if t is None else t.unsqueeze(0) for t in (
            self.support_x, self.support_y, self.query_x, self.query_y, self.classes,
            self.unlabelled_x)))

    def __repr__(self) -> str:
        what = f"{len(self)} episodes" if self.is_batch else "one episode"
        parts = ", ".join(f"{name}={_describe(getattr(self, name))}" for name in
                          ("support_x", "support_y", "query_x", "query_y", "classes")
                          + (("unlabelled_x",) if self.unlabelled_x is not None else ()))
        return (f"Episode({what}, {self.n_way}-way {self.k_shot}-shot {self.q_query}-query: "
                f"{parts})")

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


def _describe(t: Tensor) -> str:
    """``float32[4, 5, 1, 28, 28]`` (and ``@cuda:0`` off the CPU): a tensor's dtype and shape."""
    where = "" if t.device.type == "cpu" else f"@{t.device}"
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}{where}"


def class_major_labels(t: int, n_way: int, per_class: int, device: torch.device | str) -> Tensor:
    """Labels ``[t, n_way*per_class]``: ``0`` repeated ``per_class`` times, then ``1``, ..."""
    return torch.arange(n_way, device=device).repeat_interleave(per_class).expand(t, -1).contiguous()
