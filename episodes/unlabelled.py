"""Unlabelled images in episodes: semi-supervised few-shot learning (Ren et al. 2018, "Meta-learning
for semi-supervised few-shot classification").

An episode may carry M unlabelled images of each of its N classes and of D *distractor* classes
(classes of the split outside the episode's N): ``Episode.unlabelled_x`` ``[T, (N + D) * M, C, H,
W]``, in a random order within each episode, so their position says nothing of their class. Their
classes never travel with the episode (no method can read them); fixed episodes keep the items'
indices, from which analysis code can look their classes up in the dataset.

Their protocol (few-shot-ssl-public ``fewshot/data/refinement_dataset.py``, read, not copied): a
seeded per-class split of every class's images into a labelled part (``label_ratio`` of them,
rounded down; their README gives 0.1 for Omniglot and tieredImageNet, 0.4 for mini-ImageNet)
and the rest; support and query come from the labelled part, unlabelled images from the rest
(:func:`label_split`). Without a split (``label_ratio`` None), support, query and unlabelled
images are distinct images of the whole class, as their test episodes take them. Same, except:
they draw with a NumPy generator one class at a time; here all episodes' indices are drawn
at once from the sampler's torch generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dataset import index_table
from .labelled import first_of_each_class


def label_split(targets: Tensor, num_classes: int, label_ratio: float, seed: int) -> Tensor:
    """Which items are labelled: bool ``[M]``, ``floor(label_ratio * size)`` random images of
    every class, seeded by ``seed`` alone; the images ``--label-fraction`` keeps with the same
    seed wherever the two counts agree (:func:`episodes.labelled.first_of_each_class`)."""
    if not 0 < label_ratio <= 1:
        raise ValueError(f"label_ratio must be in (0, 1], got {label_ratio}")
    sizes = torch.bincount(targets, minlength=num_classes)
    keep = torch.floor(sizes.double() * label_ratio).long()
    labelled = torch.zeros(len(targets), dtype=torch.bool)
    labelled[first_of_each_class(targets, sizes, keep, seed)] = True
    return labelled


def pick(table: Tensor, sizes: Tensor, classes: Tensor, count: int, generator: torch.Generator,
         t: int, part: slice) -> Tensor:
    """``count`` distinct random items of each of ``classes`` (long ``[t', n]``, the episodes
    ``part`` of ``t``) from ``table``/``sizes`` -> long ``[t', n, count]``; the generator draws
    the keys of all ``t`` episodes."""
    keys = torch.rand(t, classes.shape[1], table.shape[1], generator=generator)[part]
    keys.masked_fill_(torch.arange(table.shape[1]) >= sizes[classes].unsqueeze(-1), 2.0)
    return table[classes.unsqueeze(-1), keys.argsort(dim=-1)[..., :count]]


def sample_with_unlabelled(tables: tuple[Tensor, Tensor, Tensor, Tensor], n_way: int,
                           per_class: int, unlabelled: int, distractors: int, t: int,
                           generator: torch.Generator, part: slice | None = None
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``t`` episodes with unlabelled images, all at once.

    Args:
        tables: the labelled items' table and sizes, then the unlabelled items' (the same table
            twice when there is no label split: the images are then drawn distinct).
        per_class: support plus query images of each of the N classes; unlabelled: M per class;
            distractors: D.
        part: return only these of the ``t`` episodes (the generator draws all ``t``).
    Returns:
        classes: long ``[t, N]``; items: long ``[t, N, per_class]``; unlabelled items: long
        ``[t, (N + D) * M]``, shuffled within each episode.
    """
    part = slice(None) if part is None else part
    table_l, sizes_l, table_u, sizes_u = tables
    drawn = torch.rand(t, len(sizes_l), generator=generator)[part].argsort(dim=1)
    drawn = drawn[:, :n_way + distractors]
    if table_l is table_u:  # one pool: support, query and unlabelled are distinct images of it
        both = pick(table_l, sizes_l, drawn, per_class + unlabelled, generator, t, part)
        items = both[:, :n_way, :per_class]
        extra = torch.cat([both[:, :n_way, per_class:], both[:, n_way:, :unlabelled]], 1)
    else:
        items = pick(table_l, sizes_l, drawn[:, :n_way], per_class, generator, t, part)
        extra = pick(table_u, sizes_u, drawn, unlabelled, generator, t, part)
    extra = extra.flatten(1)
    shuffle = torch.rand(t, extra.shape[1], generator=generator)[part].argsort(dim=1)
    return drawn[:, :n_way], items, extra.gather(1, shuffle)


def unlabelled_tables(targets: Tensor, num_classes: int, label_ratio: float | None, seed: int
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The tables :func:`sample_with_unlabelled` draws from: of the labelled and of the
    unlabelled items of :func:`label_split` (``seed``), or the whole classes' table twice."""
    if label_ratio is None:
        table, sizes = index_table(targets, num_classes)
        return table, sizes, table, sizes
    labelled = label_split(targets, num_classes, label_ratio, seed)
    return (*index_table(targets, num_classes, torch.nonzero(labelled).squeeze(1)),
            *index_table(targets, num_classes, torch.nonzero(~labelled).squeeze(1)))


def check_unlabelled_shape(tables: tuple[Tensor, Tensor, Tensor, Tensor], class_names: list[str],
                           n_way: int, per_class: int, unlabelled: int, distractors: int,
                           flags: tuple[str, str] = ("--unlabelled-per-class",
                                                     "--distractor-classes")) -> None:
    """Raise ``ValueError`` naming the fix if the tables cannot give such episodes."""
    if unlabelled < 1 or distractors < 0:
        raise ValueError(f"need unlabelled >= 1 per class and distractors >= 0; got "
                         f"unlabelled={unlabelled}, distractors={distractors}")
    if n_way + distractors > len(class_names):
        raise ValueError(f"way + distractors = {n_way + distractors} is more than the "
                         f"{len(class_names)} classes of this split: lower {flags[1]}")
    table_l, sizes_l, table_u, sizes_u = tables
    if table_l is table_u:
        need, sizes, what = per_class + unlabelled, sizes_l, "shot+query+unlabelled"
    else:
        small = torch.nonzero(sizes_l < per_class).squeeze(1).tolist()
        if small:
            raise ValueError(f"{len(small)} class(es) have fewer than shot+query={per_class} "
                             f"labelled images (e.g. '{class_names[small[0]]}' has "
                             f"{int(sizes_l[small[0]])}): raise the label ratio or lower the "
                             f"shot or query")
        need, sizes, what = unlabelled, sizes_u, "unlabelled"
    small = torch.nonzero(sizes < need).squeeze(1).tolist()
    if small:
        raise ValueError(f"{len(small)} class(es) have fewer than {what}={need} images for it "
                         f"(e.g. '{class_names[small[0]]}' has {int(sizes[small[0]])}): lower "
                         f"{flags[0]} (or the shot or query)")
