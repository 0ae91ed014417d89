"""Mini-batches of semi-supervised pre-training: at every step a labelled batch and an unlabelled
batch ``mu`` times as large, each drawn by its own :class:`~episodes.batches.ImageBatchSampler`
(shuffled once per epoch of its own set), the unlabelled images in several views.

The unlabelled set is a dataset whose labels were dropped (:func:`episodes.labelled.
unlabelled_pool`), so a batch carries no label of an unlabelled image. Views are drawn on the
images' device from one explicit CPU generator (:func:`episodes.randaugment.augment_view`); the
state of both samplers and of the generator is saved and restored, so a resumed run draws the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .batches import ImageBatchSampler
from .dataset import ClassDataset
from .randaugment import View, augment_view


@dataclass
class SemiSupervisedBatch:
    """``B`` labelled images and ``V`` views of ``U`` unlabelled ones.

    Attributes:
        images: float ``[B, C, H, W]`` in [0, 1] (under the labelled view); labels: long ``[B]``.
        views: float ``[V, U, C, H, W]`` in [0, 1], view ``v`` of every unlabelled image.
    """

    images: Tensor
    labels: Tensor
    views: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SemiSupervisedBatch:
        return SemiSupervisedBatch(*(t.to(device, non_blocking=non_blocking)
                                     for t in (self.images, self.labels, self.views)))

    def __len__(self) -> int:
        return self.labels.shape[0] + self.views.shape[1]


class SemiSupervisedSampler:
    """Draws :class:`SemiSupervisedBatch` es.

    Args:
        labelled: the labelled images (every training class).
        unlabelled: the unlabelled images (their labels are not read).
        batch_size: labelled images per step; ``mu * batch_size`` unlabelled ones.
        mu: ratio of unlabelled to labelled images per step (FixMatch: 7).
        seed: seed of the two epoch orders and of the views.
        labelled_view: transforms of the labelled images (None: none).
        unlabelled_views: the transforms of each unlabelled view (at least one).
    """

    def __init__(self, labelled: ClassDataset, unlabelled: ClassDataset, batch_size: int,
                 mu: int, seed: int = 0, labelled_view: View = None,
                 unlabelled_views: tuple[View, ...] = (None,)) -> None:
        if mu < 1:
            raise ValueError(f"mu must be >= 1, got {mu}")
        if not unlabelled_views:
            raise ValueError("give at least one unlabelled view")
        if batch_size > len(labelled):
            raise ValueError(f"batch size {batch_size} is more than the {len(labelled)} labelled "
                             f"images: lower --batch-size or keep more labels")
        if mu * batch_size > len(unlabelled):
            raise ValueError(f"mu * batch size = {mu * batch_size} unlabelled images per step, "
                             f"but only {len(unlabelled)} are unlabelled: lower --batch-size or "
                             f"mu (--option mu=...), or add unlabelled images")
        self.labelled = ImageBatchSampler(labelled, batch_size, seed=seed)
        self.unlabelled = ImageBatchSampler(unlabelled, mu * batch_size, seed=seed + 2)
        self.dataset, self.batch_size, self.mu = labelled, batch_size, mu
        self.labelled_view, self.unlabelled_views = labelled_view, unlabelled_views
        self.generator = torch.Generator().manual_seed(seed + 4)

    @property
    def episodes_per_batch(self) -> int:
        """Images per step, as the training loop counts them (labelled and unlabelled)."""
        return self.batch_size * (1 + self.mu)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def sample(self) -> SemiSupervisedBatch:
        lab = self.labelled.sample()
        unl = self.unlabelled.sample().images  # its labels (all 0) are left here
        return SemiSupervisedBatch(
            augment_view(lab.images, self.labelled_view, self.generator), lab.labels,
            torch.stack([augment_view(unl, v, self.generator) for v in self.unlabelled_views]))

    def __iter__(self) -> Iterator[SemiSupervisedBatch]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        return {"labelled": self.labelled.state_dict(),
                "unlabelled": self.unlabelled.state_dict(),
                "views": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.labelled.load_state_dict(state["labelled"])
        self.unlabelled.load_state_dict(state["unlabelled"])
        self.generator.set_state(state["views"])
