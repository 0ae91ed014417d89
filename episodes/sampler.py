"""N-way K-shot episode sampling by index, and fixed seeded evaluation episodes.

Indices are drawn on the CPU from an explicit ``torch.Generator`` (so a seed gives the same episodes
on every device); the images are then gathered by index where the dataset lives (the GPU, when the
dataset was moved there), with no Python loop per image or per episode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import overload

import torch
from torch import Tensor

from .dataset import ClassDataset
from .episode import Episode, class_major_labels
from .io import atomic_torch_save
from .pipeline import to_unit_float
from .seeded import SeededBatches
from .shard import check_shardable, rank_seed, shard_range
from .unlabelled import check_unlabelled_shape, sample_with_unlabelled, unlabelled_tables

FLAGS = ("--way", "--shot", "--query")


def check_episode_shape(dataset: ClassDataset, n_way: int, k_shot: int, q_query: int,
                        flags: tuple[str, str, str] = FLAGS) -> None:
    """Raise ``ValueError`` naming the fix if ``dataset`` cannot give N-way K-shot Q-query episodes.

    ``flags`` are the names of way, shot and query the message tells the user to change (the
    command line's ``--val-way/--val-shot/--val-query`` for validation episodes).
    """
    if n_way < 1 or k_shot < 1 or q_query < 0:
        raise ValueError(f"need way >= 1, shot >= 1 and query >= 0; got way={n_way}, "
                         f"shot={k_shot}, query={q_query}")
    if n_way > dataset.num_classes:
        raise ValueError(f"way={n_way} is larger than the {dataset.num_classes} classes of this "
                         f"split: lower the way ({flags[0]}) or use a split with more classes")
    sizes = dataset.class_sizes()
    small = torch.nonzero(sizes < k_shot + q_query).squeeze(1).tolist()
    if small:
        examples = ", ".join(f"'{dataset.class_names[c]}' has {int(sizes[c])}" for c in small[:3])
        raise ValueError(f"{len(small)} class(es) have fewer than shot+query={k_shot + q_query} "
                         f"images ({examples}): lower the shot or query ({flags[1]}/{flags[2]}), or "
                         f"add images to / remove these classes from the split")


def sample_indices(table: Tensor, sizes: Tensor, n_way: int, per_class: int, t: int,
                   generator: torch.Generator, part: slice | None = None) -> tuple[Tensor, Tensor]:
    """Draw the classes and items of ``t`` episodes, all at once.

    Args:
        table: long ``[C, S]`` item indices of each class, padded with -1 (see
            :meth:`ClassDataset.index_table`); sizes: long ``[C]``.
        part: return only these of the ``t`` episodes (the generator still draws the random
            keys of all ``t``, so it advances as for the whole batch; only the sorting, the
            costly part, is restricted to them).
    Returns:
        classes: long ``[t, n_way]``, distinct within an episode, uniformly random;
        items: long ``[t, n_way, per_class]``, distinct items of each chosen class
        (``t``: the episodes of ``part``).
    """
    part = slice(None) if part is None else part
    classes = torch.rand(t, len(sizes), generator=generator)[part].argsort(dim=1)[:, :n_way]
    keys = torch.rand(t, n_way, table.shape[1], generator=generator)[part]
    keys.masked_fill_(torch.arange(table.shape[1]) >= sizes[classes].unsqueeze(-1), 2.0)
    pick = keys.argsort(dim=-1)[..., :per_class]
    return classes, table[classes.unsqueeze(-1), pick]


def gather_episode(dataset: ClassDataset, classes: Tensor, items: Tensor, k_shot: int,
                   device: torch.device | str | None = None, unlabelled: Tensor | None = None
                   ) -> Episode:
    """Build an :class:`Episode` batch from drawn indices.

    Args:
        classes: long ``[T, N]``; items: long ``[T, N, K+Q]`` (the first K of each class are support).
        device: where the episode goes; defaults to the dataset's device.
        unlabelled: long ``[T, U]``, the items of ``unlabelled_x`` (None: none).
    Returns:
        An episode with float images in ``[0, 1]``.
    """
    device = torch.device(device) if device is not None else dataset.device
    t, n, kq = items.shape
    x = dataset.load(items).to(device, non_blocking=True)
    x = to_unit_float(x)
    q = kq - k_shot
    return Episode(
        support_x=x[:, :, :k_shot].reshape(t, n * k_shot, *x.shape[3:]),
        support_y=class_major_labels(t, n, k_shot, device),
        query_x=x[:, :, k_shot:].reshape(t, n * q, *x.shape[3:]),
        query_y=class_major_labels(t, n, q, device),
        classes=classes.to(device),
        unlabelled_x=None if unlabelled is None else to_unit_float(
            dataset.load(unlabelled).to(device, non_blocking=True)),
    )


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


def unlabelled_tables_for(dataset: ClassDataset, n_way: int, per_class: int, unlabelled: int,
                          distractors: int, label_ratio: float | None, label_seed: int,
                          flags: tuple[str, str] = ("unlabelled_per_class", "distractor_classes")
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """The checked tables of :func:`~episodes.unlabelled.sample_with_unlabelled` for such
    episodes of ``dataset``, or None when they have no unlabelled images."""
    if unlabelled == 0 and distractors == 0 and label_ratio is None:
        return None
    tables = unlabelled_tables(dataset.targets, dataset.num_classes, label_ratio, label_seed)
    check_unlabelled_shape(tables, dataset.class_names, n_way, per_class, unlabelled, distractors,
                           flags)
    return tables


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
        :func:`check_episode_shape`; the unlabelled images: see :class:`EpisodeSampler`)."""
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
