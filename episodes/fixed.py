"""Fixed, seeded evaluation episodes, stored as indices (:class:`FixedEpisodes`): every method scored
on the same file and dataset sees identical episodes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import overload

import torch
from torch import Tensor

from .dataset import ClassDataset
from .draw import FLAGS, check_episode_shape, gather_episode, sample_indices, unlabelled_tables_for
from .episode import Episode
from .io import atomic_torch_save
from .unlabelled import sample_with_unlabelled


@dataclass
class FixedEpisodes:
    """A fixed, seeded set of E evaluation episodes, stored as indices (a small file).

    Every method scored on the same ``FixedEpisodes`` (and the same dataset) sees identical episodes.
    ``len()`` is E; ``episodes[a:b]`` is a ``FixedEpisodes`` of those episodes and
    ``episodes[i]`` episode ``i`` as an :class:`Episode` without the episode dimension (images
    gathered from ``dataset``).

    Attributes:
        classes: long ``[E, N]``; items: long ``[E, N, K+Q]``; k_shot: K;
        fingerprint: :meth:`ClassDataset.fingerprint` of the dataset they were drawn from;
        unlabelled: long ``[E, U]``, the items of each episode's unlabelled images, or None
            (:mod:`episodes.unlabelled`);
        unlabelled_drawn: how they were drawn (the keyword arguments ``unlabelled_per_class``,
            ``distractor_classes``, ``label_ratio``, ``label_seed`` of :meth:`generate`),
            recorded in the file;
        seed: the seed they were drawn with (None: not known);
        dataset: the dataset they were drawn from, when known (:meth:`generate`, or
            :meth:`load` given it); not saved.
    """

    classes: Tensor
    items: Tensor
    k_shot: int
    fingerprint: str
    unlabelled: Tensor | None = None
    unlabelled_drawn: dict | None = None
    seed: int | None = None
    dataset: ClassDataset | None = field(default=None, repr=False, compare=False)

    @property
    def n_way(self) -> int:
        return self.classes.shape[1]

    @property
    def q_query(self) -> int:
        return self.items.shape[2] - self.k_shot

    def __len__(self) -> int:
        return self.classes.shape[0]

    @overload
    def __getitem__(self, index: int) -> Episode: ...

    @overload
    def __getitem__(self, index: slice) -> FixedEpisodes: ...

    def __getitem__(self, index: int | slice) -> Episode | FixedEpisodes:
        if isinstance(index, slice):
            return replace(self, classes=self.classes[index], items=self.items[index],
                           unlabelled=None if self.unlabelled is None else self.unlabelled[index])
        i = range(len(self))[index]  # IndexError for an episode that is not there
        if self.dataset is None:
            raise ValueError("these fixed episodes do not know their dataset, so episode "
                             f"{index} cannot be gathered: FixedEpisodes.load(path, dataset), "
                             "or next(episodes.batches(dataset, 1)) for a batch of one")
        ep = gather_episode(self.dataset, self.classes[i:i + 1], self.items[i:i + 1], self.k_shot)
        return Episode(ep.support_x[0], ep.support_y[0], ep.query_x[0], ep.query_y[0],
                       ep.classes[0])

    def __repr__(self) -> str:
        seed = "" if self.seed is None else f", seed {self.seed}"
        data = "" if self.dataset is None else f", {self.dataset!r}"
        return (f"FixedEpisodes({len(self)} episodes, {self.n_way}-way {self.k_shot}-shot "
                f"{self.q_query}-query{seed}, fingerprint {self.fingerprint}{data})")

    @classmethod
    def generate(cls, dataset: ClassDataset, n_way: int, k_shot: int, q_query: int,
                 num_episodes: int = 600, seed: int = 0, flags: tuple[str, str, str] = FLAGS,
                 unlabelled_per_class: int = 0, distractor_classes: int = 0,
                 label_ratio: float | None = None, label_seed: int = 0) -> FixedEpisodes:
        """Draw ``num_episodes`` episodes from ``dataset`` with ``seed`` (``flags``: see
        :func:`check_episode_shape`; the unlabelled images: see
        :class:`~episodes.sampler.EpisodeSampler`)."""
        check_episode_shape(dataset, n_way, k_shot, q_query, flags)
        g = torch.Generator().manual_seed(seed)
        tables = unlabelled_tables_for(dataset, n_way, k_shot + q_query, unlabelled_per_class,
                                       distractor_classes, label_ratio, label_seed,
                                       ("--unlabelled-per-class", "--distractor-classes"))
        if tables is None:
            table, sizes = dataset.index_table()
            classes, items = sample_indices(table, sizes, n_way, k_shot + q_query, num_episodes, g)
            return cls(classes, items, k_shot, dataset.fingerprint(), seed=seed, dataset=dataset)
        classes, items, unlabelled = sample_with_unlabelled(
            tables, n_way, k_shot + q_query, unlabelled_per_class, distractor_classes,
            num_episodes, g)
        drawn = {"unlabelled_per_class": unlabelled_per_class,
                 "distractor_classes": distractor_classes, "label_ratio": label_ratio,
                 "label_seed": label_seed}
        return cls(classes, items, k_shot, dataset.fingerprint(), unlabelled, drawn, seed, dataset)

    def check(self, dataset: ClassDataset) -> None:
        """Raise ``ValueError`` if these episodes were drawn from another dataset."""
        if dataset.fingerprint() != self.fingerprint:
            raise ValueError("these fixed episodes were drawn from a different dataset or split "
                             f"(fingerprint {self.fingerprint}, dataset {dataset.fingerprint()}): "
                             "generate new episodes for this dataset")

    def batches(self, dataset: ClassDataset, batch_size: int = 50,
                device: torch.device | str | None = None) -> Iterator[Episode]:
        """Yield the episodes in order, ``batch_size`` at a time."""
        self.check(dataset)
        for s in range(0, len(self), batch_size):
            part = slice(s, s + batch_size)
            yield gather_episode(dataset, self.classes[part], self.items[part], self.k_shot,
                                 device, None if self.unlabelled is None else self.unlabelled[part])

    def save(self, path: str | os.PathLike) -> None:
        # clone(): ``classes`` is a view of a larger tensor, whose whole storage torch.save writes
        state = {"classes": self.classes.clone(), "items": self.items.clone(),
                 "k_shot": self.k_shot, "fingerprint": self.fingerprint,
                 **({} if self.seed is None else {"seed": self.seed})}
        if self.unlabelled is not None:
            state.update(unlabelled=self.unlabelled.clone(), unlabelled_drawn=self.unlabelled_drawn)
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, dataset: ClassDataset | None = None) -> FixedEpisodes:
        """Episodes saved by :meth:`save` (files without unlabelled images load with none); with
        ``dataset`` (checked against the fingerprint) they can be indexed into :class:`Episode` s."""
        d = torch.load(path, map_location="cpu", weights_only=True)
        seed = d.get("seed")
        episodes = cls(d["classes"], d["items"], int(d["k_shot"]), str(d["fingerprint"]),
                       d.get("unlabelled"), d.get("unlabelled_drawn"),
                       None if seed is None else int(seed))
        if dataset is not None:
            episodes.check(dataset)
            episodes.dataset = dataset
        return episodes
