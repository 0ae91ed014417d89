"""Random N-way K-shot episodes, T at a time (:class:`EpisodeSampler`), drawn and gathered by
:mod:`episodes.draw` (indices on the CPU from an explicit ``torch.Generator``, images gathered on
the dataset's device, no Python loop per image or episode). Fixed, seeded evaluation episodes
(:class:`~episodes.fixed.FixedEpisodes`) and the drawing helpers are also importable from here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .dataset import ClassDataset
from .draw import FLAGS, check_episode_shape, gather_episode, sample_indices, unlabelled_tables_for
from .episode import Episode
from .fixed import FixedEpisodes
from .seeded import SeededBatches
from .shard import check_shardable, rank_seed, shard_range
from .unlabelled import sample_with_unlabelled

__all__ = ["FLAGS", "EpisodeSampler", "FixedEpisodes", "check_episode_shape", "gather_episode",
           "sample_indices", "unlabelled_tables_for"]


class EpisodeSampler(SeededBatches):
    """Random N-way K-shot Q-query episodes from the classes of one split, T at a time.

    Iterating yields ``num_batches`` :class:`Episode` batches of ``episodes_per_batch`` episodes and
    continues the generator's stream (a second iteration gives new episodes). The state (generator,
    count, augmentation) can be saved and restored, so a resumed run draws exactly what it would
    have drawn (:class:`~episodes.seeded.SeededBatches`).

    Args:
        dataset: the split's dataset; episodes use only its classes.
        n_way, k_shot, q_query: classes per episode, support and query images per class.
        episodes_per_batch: T, episodes in each batch.
        num_batches: length of one iteration.
        seed: seed of the CPU generator that draws the indices.
        device: where episodes go (default: the dataset's device).
        augment: applied to every drawn batch, on ``device`` (e.g. an
            :class:`~episodes.augment.EpisodeAugment`); its ``state_dict`` is saved with the
            sampler's, so resumed runs augment identically (unlabelled images are not augmented).
        unlabelled_per_class: M unlabelled images of each class in ``Episode.unlabelled_x`` (0:
            none); distractor_classes: D more classes giving M unlabelled images each
            (:mod:`episodes.unlabelled`).
        label_ratio: support and query from this share of each class's images, unlabelled images
            from the rest (the split seeded by ``label_seed``); None: from the whole class.

    In a distributed run (:meth:`shard`) every process draws the indices of all T episodes from
    the same generator and loads only its part (:mod:`episodes.shard`).
    """

    def __init__(self, dataset: ClassDataset, n_way: int, k_shot: int, q_query: int,
                 episodes_per_batch: int = 1, num_batches: int = 1000, seed: int = 0,
                 device: torch.device | str | None = None,
                 augment: Callable[[Episode], Episode] | None = None,
                 unlabelled_per_class: int = 0, distractor_classes: int = 0,
                 label_ratio: float | None = None, label_seed: int = 0) -> None:
        check_episode_shape(dataset, n_way, k_shot, q_query)
        self.unlabelled, self.distractors = unlabelled_per_class, distractor_classes
        self.tables = unlabelled_tables_for(dataset, n_way, k_shot + q_query, unlabelled_per_class,
                                            distractor_classes, label_ratio, label_seed)
        if episodes_per_batch < 1 or num_batches < 0:
            raise ValueError("episodes_per_batch must be >= 1 and num_batches >= 0")
        super().__init__(num_batches, seed)
        self.dataset, self.n_way, self.k_shot, self.q_query = dataset, n_way, k_shot, q_query
        self.episodes_per_batch, self.device = episodes_per_batch, device
        self.table, self.sizes = dataset.index_table()
        self.augment = augment
        self.part = slice(0, episodes_per_batch)  # the episodes of each batch this process takes

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.n_way}-way {self.k_shot}-shot {self.q_query}-query, "
                f"{self.episodes_per_batch} episodes per batch, {self.num_batches} batches, "
                f"seed {self.seed}, {self.batches_drawn} drawn"
                + (", augmented" if self.augment is not None else "") + f", {self.dataset!r})")

    def shard(self, rank: int, world_size: int, salt: int = 0) -> None:
        """Take only part ``rank`` of ``world_size`` of every batch (:func:`shard_range` of T);
        the indices of all T are still drawn, so the generator advances as in one process. The
        augmentation of ranks > 0 is re-seeded with :func:`rank_seed` of (seed, rank, salt)."""
        check_shardable(self.episodes_per_batch, world_size, "episodes", "--episodes-per-step")
        self.part = shard_range(self.episodes_per_batch, rank, world_size)
        if rank and hasattr(self.augment, "generator"):
            self.augment.generator.manual_seed(rank_seed(self.seed, rank, salt))

    def sample(self) -> Episode:
        """Draw one batch of T episodes (this process's part of them, after :meth:`shard`)."""
        unlabelled = None
        if self.tables is None:
            classes, items = sample_indices(self.table, self.sizes, self.n_way,
                                            self.k_shot + self.q_query, self.episodes_per_batch,
                                            self.generator, self.part)
        else:
            classes, items, unlabelled = sample_with_unlabelled(
                self.tables, self.n_way, self.k_shot + self.q_query, self.unlabelled,
                self.distractors, self.episodes_per_batch, self.generator, self.part)
        self.batches_drawn += 1
        episode = gather_episode(self.dataset, classes, items, self.k_shot, self.device, unlabelled)
        return self.augment(episode) if self.augment is not None else episode
