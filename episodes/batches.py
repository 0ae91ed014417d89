"""Ordinary mini-batches of labelled images over all classes of a split (supervised pre-training).

The sampler shuffles the split's items once per epoch with an explicit CPU ``torch.Generator``
(the same seed gives the same batches on every device), hands out ``batch_size`` items at a time
(a last, partial batch of an epoch is dropped, as ``DataLoader(drop_last=True)``), gathers the
images by index where the dataset lives and, optionally, augments them there with the same
transforms as episodes (:func:`episodes.augment.augment_images`); with ``views=`` it draws
several augmented views of each image instead (:class:`episodes.views.ViewBatch`, self-supervised
pre-training). Its state (generator, epoch
order, position, augmentation generator) is saved and restored, so a resumed run draws exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .augment import AugmentConfig, augment_images
from .dataset import ClassDataset
from .pipeline import to_unit_float
from .shard import check_shardable, rank_seed, shard_range
from .views import ViewBatch


@dataclass
class LabelledBatch:
    """B images with their dataset class labels.

    Attributes:
        images: float ``[B, C, H, W]`` in ``[0, 1]``; labels: long ``[B]`` in ``0..C_split-1``.
    """

    images: Tensor
    labels: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LabelledBatch:
        return LabelledBatch(self.images.to(device, non_blocking=non_blocking),
                             self.labels.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.labels.shape[0]


class ImageBatchSampler:
    """Shuffled mini-batches of ``batch_size`` labelled images from every class of ``dataset``.

    Args:
        dataset: the split's dataset (labels are its class indices).
        batch_size: images per batch (at most the split's size).
        seed: seed of the CPU generator of the epoch orders (and of the augmentation).
        device: where batches go (default: the dataset's device).
        augment: random transforms applied to every image of a batch (None: none).
        views: draw a :class:`ViewBatch` of one view per entry instead, each augmented by its
            config (None: not augmented); ``augment`` must then be None.

    In a distributed run (:meth:`shard`) every process follows the same epoch orders and loads
    only its part of each batch of ``batch_size``, as ``DistributedSampler`` does: the processes
    together see the batches of a single-process run.
    """

    def __init__(self, dataset: ClassDataset, batch_size: int, seed: int = 0,
                 device: torch.device | str | None = None,
                 augment: AugmentConfig | None = None,
                 views: tuple[AugmentConfig | None, ...] | None = None) -> None:
        if not 1 <= batch_size <= len(dataset):
            raise ValueError(f"batch size {batch_size} must be between 1 and the {len(dataset)} "
                             f"images of the split: lower the batch size")
        if views is not None and (augment is not None or not views):
            raise ValueError("give views (one augmentation per view) or augment, not both")
        self.dataset, self.batch_size, self.augment = dataset, batch_size, augment
        self.views = views
        self.device = torch.device(device) if device is not None else dataset.device
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0
        self.batches_drawn = 0
        self.part = slice(0, batch_size)  # the images of each batch this process takes


    def __repr__(self) -> str:
        return (f"{type(self).__name__}(batch size {self.batch_size}, seed {self.seed}"
                + (f", {len(self.views)} views" if self.views else "")
                + (", augmented" if self.augment is not None else "") + f", {self.dataset!r})")
    def shard(self, rank: int, world_size: int, salt: int = 0) -> None:
        """Take only part ``rank`` of ``world_size`` of every batch (:func:`shard_range`); the
        augmentation of ranks > 0 is re-seeded with :func:`rank_seed` of (seed + 1, rank, salt)."""
        check_shardable(self.batch_size, world_size, "images", "--batch-size")
        self.part = shard_range(self.batch_size, rank, world_size)
        if rank:
            self.augment_generator.manual_seed(rank_seed(self.seed + 1, rank, salt))

    @property
    def episodes_per_batch(self) -> int:
        """Items per step, as the training loop counts them (here images, not episodes)."""
        return self.batch_size

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def sample(self) -> LabelledBatch | ViewBatch:
        """The next batch; a new epoch order is drawn when fewer than ``batch_size`` items are
        left in the current one."""
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.dataset), generator=self.generator)
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size][self.part]
        self.position += self.batch_size
        self.batches_drawn += 1
        images = to_unit_float(self.dataset.load(index).to(self.device, non_blocking=True))
        labels = self.dataset.targets[index].to(self.device)
        if self.views is not None:
            return ViewBatch(torch.stack([
                images if cfg is None else augment_images(images, cfg, self.augment_generator)
                for cfg in self.views]), labels, index.to(self.device))
        if self.augment is not None:
            images = augment_images(images, self.augment, self.augment_generator)
        return LabelledBatch(images, labels)

    def __iter__(self) -> Iterator[LabelledBatch | ViewBatch]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(),
                "position": self.position, "batches_drawn": self.batches_drawn,
                "augment": self.augment_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.augment_generator.set_state(state["augment"])
        self.order, self.position = state["order"], int(state["position"])
        self.batches_drawn = int(state["batches_drawn"])
