"""Class-indexed datasets: they know their classes and the items of each class.

``ClassDataset`` is the abstraction the sampler works on. ``TensorClassDataset`` holds every image of
a split as one uint8 tensor ``[M, C, H, W]`` that can live on the GPU, so episodes are gathered by
index on the device with no decoding and no Python loop per image.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .pipeline import ImagePipeline


def index_table(targets: Tensor, num_classes: int, items: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """Padded table of the items of every class: ``targets`` long ``[M]`` (class of each item);
    ``items``: only these item indices (long, increasing; None: all).

    Returns: table long ``[C, max size]`` (class ``c``'s items in ``table[c, :sizes[c]]``,
    increasing, padded with -1) and sizes long ``[C]``.
    """
    items = torch.arange(len(targets)) if items is None else items
    cls = targets[items]
    sizes = torch.bincount(cls, minlength=num_classes)
    order = torch.argsort(cls, stable=True)
    table = torch.full((num_classes, int(sizes.max()) if len(sizes) else 0), -1, dtype=torch.long)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(len(order)) - starts[cls[order]]
    table[cls[order], rank] = items[order]
    return table, sizes


class ClassDataset(ABC):
    """Items grouped into named classes, loadable by global item index.

    Subclasses set ``class_names`` (list of C names) and ``targets`` (long ``[M]``, the class index of
    each of the M items, on the CPU) and implement :meth:`load`. ``pipeline`` records how image
    files become its images (None: not made from files by a known pipeline); ``name`` and
    ``split`` name the dataset and its class split where they are known (shown by ``repr``).
    """

    class_names: list[str]
    targets: Tensor
    pipeline: ImagePipeline | None = None
    name: str | None = None
    split: str | None = None

    def __repr__(self) -> str:
        what = " ".join(x for x in (self.name and repr(self.name), self.split) if x)
        c, h, w = self.image_shape
        return (f"{type(self).__name__}({what + ': ' if what else ''}{self.num_classes} classes, "
                f"{len(self)} images of {c}x{h}x{w}, on {self.device}"
                + (f", pipeline {self.pipeline.describe()}" if self.pipeline else "") + ")")

    @abstractmethod
    def load(self, index: Tensor) -> Tensor:
        """Images of the items ``index`` (long, any shape ``S``) as uint8 ``[*S, C, H, W]``."""

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""

    @property
    def device(self) -> torch.device:
        """Where :meth:`load` returns its images."""
        return torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.targets.numel())

    def class_sizes(self) -> Tensor:
        """Number of items of each class, long ``[C]``."""
        return torch.bincount(self.targets, minlength=self.num_classes)

    def index_table(self) -> tuple[Tensor, Tensor]:
        """Items of every class as a padded table.

        Returns:
            table: long ``[C, max_size]``, the item indices of class ``c`` in ``table[c, :sizes[c]]``
                (in increasing order), padded with ``-1``.
            sizes: long ``[C]``.
        """
        return index_table(self.targets, self.num_classes)

    def fingerprint(self) -> str:
        """A short hash of the class names and class sizes, to match saved episodes to a dataset."""
        h = hashlib.blake2b(digest_size=8)
        h.update("\n".join(self.class_names).encode())
        h.update(self.class_sizes().numpy().tobytes())
        return h.hexdigest()


class TensorClassDataset(ClassDataset):
    """All images of a split in memory as one uint8 tensor.

    Args:
        images: uint8 ``[M, C, H, W]``, on any device.
        targets: long ``[M]`` class index of each image, in ``0..len(class_names)-1``.
        class_names: the C class names.
        pipeline: how image files become these images (kept by :meth:`to` and
            :meth:`subset_classes`); its channels and size must match the images.
        name, split: what the dataset and its class split are called (kept by :meth:`to` and
            :meth:`subset_classes`).
    """

    def __init__(self, images: Tensor, targets: Tensor, class_names: list[str],
                 pipeline: ImagePipeline | None = None, *, name: str | None = None,
                 split: str | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [M, C, H, W], got {images.dtype} "
                             f"{tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must have shape [{images.shape[0]}], got {tuple(targets.shape)}")
        self.images = images
        self.targets = targets.detach().to("cpu", torch.long)
        self.class_names = list(class_names)
        if len(self.targets) and int(self.targets.max()) >= len(self.class_names):
            raise ValueError("a target is >= the number of class names")
        if pipeline is not None and (pipeline.channels, pipeline.size, pipeline.size) != tuple(
                images.shape[1:]):
            raise ValueError(f"image pipeline ({pipeline.describe()}) does not match images of "
                             f"shape {tuple(images.shape[1:])}")
        self.pipeline = pipeline
        self.name, self.split = name, split

    def load(self, index: Tensor) -> Tensor:
        return self.images[index.to(self.images.device)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> TensorClassDataset:
        """The same dataset with its images on ``device``."""
        return TensorClassDataset(self.images.to(device), self.targets, self.class_names,
                                  self.pipeline, name=self.name, split=self.split)

    def subset_classes(self, names: list[str]) -> TensorClassDataset:
        """A dataset of only the classes ``names`` (in that order)."""
        position = {n: i for i, n in enumerate(self.class_names)}
        missing = [n for n in names if n not in position]
        if missing:
            raise KeyError(f"classes not in this dataset: {missing[:5]}")
        wanted = torch.tensor([position[n] for n in names], dtype=torch.long)
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[wanted] = torch.arange(len(names))
        new_targets = remap[self.targets]
        keep = torch.nonzero(new_targets >= 0).squeeze(1)
        return TensorClassDataset(self.images[keep.to(self.images.device)], new_targets[keep], names,
                                  self.pipeline, name=self.name, split=self.split)
