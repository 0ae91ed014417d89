"""The base of the seeded, resumable batch sources: :class:`~episodes.EpisodeSampler` (image
episodes) and :class:`~episodes.sine.SineTasks` (regression tasks).

One iteration yields ``num_batches`` batches from :meth:`SeededBatches.sample`, continuing the
generator's stream (a second iteration gives new batches). The state (the CPU generator, the
batches drawn and, where there is one with a state, the augmentation's) is saved and restored with
the training checkpoint, so a resumed run draws exactly what it would have drawn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch

from .episode import Episode


class SeededBatches(ABC):
    """``num_batches`` batches drawn by :meth:`sample` from a generator seeded with ``seed``."""

    augment: Callable[[Episode], Episode] | None = None

    def __init__(self, num_batches: int, seed: int) -> None:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self.num_batches, self.seed = num_batches, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    @abstractmethod
    def sample(self) -> Episode:
        """The next batch (subclasses draw it and count it in ``batches_drawn``)."""

    def __iter__(self) -> Iterator[Episode]:
        for _ in range(self.num_batches):
            yield self.sample()

    def __len__(self) -> int:
        return self.num_batches

    def state_dict(self) -> dict:
        state = {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}
        if hasattr(self.augment, "state_dict"):
            state["augment"] = self.augment.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = state["batches_drawn"]
        if "augment" in state and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])
