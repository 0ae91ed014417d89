"""Labelled subsets of a training split, and the unlabelled pool made of the rest.

Semi-supervised pre-training keeps the labels of a few images per class (:func:`labelled_index`:
the first ``N`` of each class, or a fraction of each class, in a seeded shuffle of the split) and
uses every other image without its label (:func:`unlabelled_pool`: the images are copied into a
dataset of one class named ``unlabelled``, so their labels are not carried at all, let alone
read). The same split, ``N`` (or fraction) and seed always choose the same images, on every
device and for every method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dataset import ClassDataset, TensorClassDataset


def labelled_index(ds: ClassDataset, per_class: int | None = None, fraction: float | None = None,
                   seed: int = 0) -> Tensor:
    """The positions (sorted, long ``[L]``) of the labelled images of ``ds``: in one seeded
    shuffle of the whole split, the first ``per_class`` images of every class, or the first
    ``round(fraction * size)`` of a class of ``size`` images (give one of the two).

    Raises:
        ValueError: neither or both given; ``per_class`` < 1 or above a class's size (the error
            names the class); ``fraction`` outside (0, 1] or leaving a class without images.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give the labels to keep as per_class or fraction (one of the two)")
    sizes = ds.class_sizes()
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"labels per class must be >= 1, got {per_class}")
        small = int(torch.argmin(sizes))
        if per_class > int(sizes[small]):
            raise ValueError(f"{per_class} labels per class: class {ds.class_names[small]!r} has "
                             f"only {int(sizes[small])} images: keep at most that many")
        keep = torch.full_like(sizes, per_class)
    else:
        if not 0 < fraction <= 1:  # type: ignore[operator]
            raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
        keep = torch.round(fraction * sizes.double()).long()  # type: ignore[operator]
        if bool((keep < 1).any()):
            small = int(torch.argmin(keep))
            raise ValueError(f"label fraction {fraction} keeps no image of class "
                             f"{ds.class_names[small]!r} ({int(sizes[small])} images): raise it")
    return first_of_each_class(ds.targets, sizes, keep, seed)


def first_of_each_class(targets: Tensor, sizes: Tensor, keep: Tensor, seed: int) -> Tensor:
    """The positions (sorted, long ``[L]``) of the first ``keep[c]`` items of every class ``c``
    in one shuffle of all ``targets`` (long ``[M]``; ``sizes``: items per class ``[C]``) seeded
    by ``seed`` alone: the one seeded choice behind :func:`labelled_index` and the label split of
    semi-supervised episodes (:func:`episodes.unlabelled.label_split`), so equal counts and seed
    choose the same images in both."""
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    cls = targets[order]
    by_class = torch.argsort(cls, stable=True)  # the shuffle's order kept within each class
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(order)
    rank[by_class] = torch.arange(len(order)) - starts[cls[by_class]]
    return order[rank < keep[cls]].sort().values


def rest_index(size: int, index: Tensor) -> Tensor:
    """The positions (sorted, long ``[size - L]``) in ``range(size)`` that are not in ``index``
    (long ``[L]``, distinct)."""
    rest = torch.ones(size, dtype=torch.bool)
    rest[index.cpu()] = False
    return torch.nonzero(rest).squeeze(1)


def hold_out(ds: ClassDataset, per_class: int, seed: int = 0
             ) -> tuple[TensorClassDataset, TensorClassDataset]:
    """``ds`` split into the images it keeps and ``per_class`` held out of every class (the
    held-out ones are :func:`labelled_index`'s choice with ``seed``), both with their labels
    and every class; 0 holds out none (an empty held-out dataset).

    Raises:
        ValueError: ``per_class`` < 0, or not below a class's size (the error names the class).
    """
    if per_class < 0:
        raise ValueError(f"images held out per class must be >= 0, got {per_class}")
    sizes = ds.class_sizes()
    small = int(torch.argmin(sizes))
    if per_class >= int(sizes[small]):
        raise ValueError(f"{per_class} images held out per class: class "
                         f"{ds.class_names[small]!r} has only {int(sizes[small])}: hold out "
                         "fewer, so that every class keeps some")
    held = (labelled_index(ds, per_class=per_class, seed=seed) if per_class
            else torch.zeros(0, dtype=torch.long))
    return subset_items(ds, rest_index(len(ds), held)), subset_items(ds, held)


def subset_items(ds: ClassDataset, index: Tensor) -> TensorClassDataset:
    """The images ``index`` (long ``[L]``) of ``ds`` with their labels, every class kept."""
    return TensorClassDataset(ds.load(index), ds.targets[index], ds.class_names, ds.pipeline)


def labelled_subset(ds: ClassDataset, fraction: float | None = None, seed: int = 0,
                    per_class: int | None = None) -> TensorClassDataset:
    """The labelled images of ``ds`` (:func:`labelled_index`) as a dataset."""
    return subset_items(ds, labelled_index(ds, per_class, fraction, seed))


def unlabelled_pool(ds: ClassDataset, labelled: Tensor,
                    extra: ClassDataset | None = None) -> TensorClassDataset:
    """The images of ``ds`` not in ``labelled`` (long ``[L]``), then every image of ``extra``
    (e.g. :func:`episodes.folder.unlabelled_folder`), as one class ``unlabelled``: their labels
    are dropped here. ``extra`` must have the images' shape; the pool lives where ``ds`` does.

    Raises:
        ValueError: ``extra``'s images differ in shape, or the pool is empty.
    """
    parts = [ds.load(rest_index(len(ds), labelled))]
    if extra is not None:
        if extra.image_shape != ds.image_shape:
            raise ValueError(f"the extra unlabelled images are {extra.image_shape}, the training "
                             f"images {ds.image_shape}: give them the same size and channels")
        parts.append(extra.load(torch.arange(len(extra))).to(parts[0].device))
    images = torch.cat(parts)
    if not len(images):
        raise ValueError("no unlabelled images are left: keep fewer labels, or add a folder of "
                         "unlabelled images")
    return TensorClassDataset(images, torch.zeros(len(images), dtype=torch.long), ["unlabelled"],
                              ds.pipeline)
