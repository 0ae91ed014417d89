"""Drawing the indices of N-way K-shot episodes and gathering their images, shared by the random
sampler (:mod:`episodes.sampler`) and the fixed evaluation episodes (:mod:`episodes.fixed`).

Indices are drawn on the CPU from an explicit ``torch.Generator`` (so a seed gives the same episodes
on every device); the images are then gathered by index where the dataset lives (the GPU, when the
dataset was moved there), with no Python loop per image or per episode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dataset import ClassDataset
from .episode import Episode, class_major_labels
from .pipeline import to_unit_float
from .unlabelled import check_unlabelled_shape, unlabelled_tables

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
