"""Clustering-based pre-training: DeepCluster and unsupervised image classification (UIC).

Both alternate, once per epoch, a labelling pass over every training image (pseudo-labels kept
in buffers, one per image, with each pseudo-class's size) and training the network to predict
those labels, each image weighted by the inverse size of its pseudo-class (the expectation of
their sampling uniformly over pseudo-classes, which keeps a large cluster from taking over).

* DeepCluster (Caron et al. 2018, facebookresearch/deepcluster; the centroids as the classifier
  from DeepCluster-v2, Caron et al. 2020, facebookresearch/swav ``main_deepclusterv2.py``): as
  in v1 (``compute_features``), a separate pass each epoch over every image, not augmented, in
  eval mode (v2 instead clusters a memory bank of the embeddings of the previous epoch's
  training views), through a projection head ``Linear-BN-ReLU-Linear`` to 128, L2-normalised as
  in v2; spherical k-means (``clusters``, 20 iterations, seeded by the epoch); as in v2 the
  classifier is reassigned to the centroids (cosine logits / temperature 0.1) rather than a new
  random linear layer (v1), so the optimizer needs no reset. Deviations: k-means on the GPU/CPU in torch, not
  faiss, without v1's PCA-whitening to 256 (the projection head is 128-d already); empty clusters
  restart at a random point; 128 clusters by default (v1: 10000 for ImageNet's 1.3 M images, v2:
  3 x 3000); views: random resized crop and flip.
* UIC (Chen et al. 2020, "Unsupervised Image Classification for Deep Representation
  Learning"): no embedding clustering: a linear classifier over ``clusters`` pseudo-classes on
  the backbone's features; each epoch's labels are its own argmax on an augmented view of every
  image (the first epoch's from the initial network), and it trains on another augmented view.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import AugmentConfig, ClassDataset, augment_images, to_unit_float
from episodes.options import check

from ..functional import accuracy
from ..models.learner import ModelSpec
from ..modules import mlp
from ..registry import data_field, register, require_data
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .losses import balanced_cross_entropy
from .pretext import kmeans

CHUNK = 256  # images per forward of the labelling pass


class EpochLabels(SelfSupervisedLearner):
    """Pseudo-labels ``[num_images]`` redrawn every epoch by :meth:`relabel` (buffers, so a
    resumed run keeps them); trains :meth:`logits` of one view against them."""

    num_views = 1

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str, distance: str,
                 num_images: int, clusters: int, seed: int) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.clusters, self.seed = clusters, seed
        self.register_buffer("labels", torch.zeros(num_images, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(clusters, dtype=torch.long))
        self.register_buffer("epochs_labelled", torch.zeros((), dtype=torch.long))
        self.dataset: ClassDataset | None = None
        self.steps_per_epoch = 0

    def begin_training(self, sampler: Any, steps: int) -> None:
        self.dataset = sampler.dataset
        if len(self.dataset) != len(self.labels):
            raise ValueError(f"this {type(self).__name__} model keeps a pseudo-label for each of "
                             f"{len(self.labels)} images, the training split has "
                             f"{len(self.dataset)}: set option num_images to it")
        self.steps_per_epoch = len(self.dataset) // sampler.batch_size
        if int(self.epochs_labelled) == 0:
            self.relabel()

    def end_step(self) -> None:
        super().end_step()
        if self.steps_per_epoch and int(self.steps_done) % self.steps_per_epoch == 0:
            self.relabel()

    @torch.no_grad()
    def outputs(self, fn: Any, augment: AugmentConfig | None, generator: torch.Generator
                ) -> Tensor:
        """``fn`` of every training image (``CHUNK`` at a time, optionally augmented), ``[N, ...]``
        concatenated, in eval mode."""
        was_training = self.training
        self.eval()
        device = self.labels.device
        out = []
        for start in range(0, len(self.dataset), CHUNK):
            index = torch.arange(start, min(start + CHUNK, len(self.dataset)))
            x = to_unit_float(self.dataset.load(index).to(device))
            out.append(fn(x if augment is None else augment_images(x, augment, generator)))
        self.train(was_training)
        return torch.cat(out)

    def relabel(self) -> None:
        """New pseudo-labels of every training image (seeded by ``seed`` and the epoch)."""
        g = torch.Generator().manual_seed(self.seed + int(self.epochs_labelled))
        labels = self.new_labels(g)
        self.labels.copy_(labels)
        self.counts.copy_(torch.bincount(labels, minlength=self.clusters))
        self.epochs_labelled += 1

    @abstractmethod
    def new_labels(self, generator: torch.Generator) -> Tensor:
        """Pseudo-labels ``[N]`` in ``0..clusters-1`` of every training image."""

    @abstractmethod
    def logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pseudo-class logits ``[B, clusters]`` of images ``[B, C, H, W]`` and the embeddings
        the collapse monitor watches."""

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, z = self.logits(views[0])
        target = self.labels[index]
        return balanced_cross_entropy(logits, target, self.counts), accuracy(logits, target), z


class DeepCluster(EpochLabels):
    """DeepCluster: k-means of the projected features every epoch; centroids as classifier."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "crop",
                 distance: str = "euclidean", num_images: int = 1, clusters: int = 128,
                 proj_hidden: int = 512, proj_dim: int = 128, temperature: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(backbone, feat_dim, views, distance, num_images, clusters, seed)
        self.projector = mlp([feat_dim, proj_hidden, proj_dim])
        self.register_buffer("centroids", torch.zeros(clusters, proj_dim))
        self.temperature = temperature

    def embed_projected(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.features(x)), dim=1)

    def new_labels(self, generator: torch.Generator) -> Tensor:
        z = self.outputs(self.embed_projected, None, generator)
        centroids, labels = kmeans(z, self.clusters, generator=generator)
        self.centroids.copy_(centroids)
        return labels

    def logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.embed_projected(x)
        return z @ self.centroids.t() / self.temperature, z


class UIC(EpochLabels):
    """UIC: a classifier's own argmax on augmented views as next epoch's labels."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "crop",
                 distance: str = "euclidean", num_images: int = 1, clusters: int = 128,
                 seed: int = 0) -> None:
        super().__init__(backbone, feat_dim, views, distance, num_images, clusters, seed)
        self.classifier = nn.Linear(feat_dim, clusters)

    def new_labels(self, generator: torch.Generator) -> Tensor:
        return self.outputs(lambda x: self.classifier(self.features(x)).argmax(1),
                            self.view_augments()[0], generator)

    def logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return self.classifier(f), f


@dataclass
class UICConfig(SSLConfig):
    """``--method uic``: ``clusters`` pseudo-classes; ``num_images`` (set by ``fewshot
    pretrain`` from the training split: one pseudo-label each); ``seed`` of the labelling."""

    views: ViewName = "crop"
    num_images: int | None = data_field("images")
    clusters: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.clusters >= 2, "clusters", ">= 2", self.clusters)
        if self.num_images is not None:
            check(self.num_images >= 1, "num_images", ">= 1", self.num_images)
            check(self.clusters <= self.num_images, "clusters",
                  f"at most the {self.num_images} training images", self.clusters)


@dataclass
class DeepClusterConfig(UICConfig):
    """``--method deepcluster``: as UIC's, plus the projection head ``proj_hidden`` ->
    ``proj_dim`` and the centroid classifier's ``temperature``."""

    proj_hidden: int = 512
    proj_dim: int = 128
    temperature: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "temperature", "> 0", self.temperature)
        check(min(self.proj_hidden, self.proj_dim) >= 1, "proj_hidden/proj_dim", ">= 1",
              (self.proj_hidden, self.proj_dim))


@register("deepcluster", DeepClusterConfig, "self-supervised",
          "DeepCluster (Caron et al. 2018): k-means of the features each epoch, the clusters as "
          "labels")
def build_deepcluster(spec: ModelSpec, c: DeepClusterConfig) -> DeepCluster:
    require_data(c, "num_images")
    return DeepCluster(*build_common(spec, c), c.views, c.distance, c.num_images, c.clusters,
                       c.proj_hidden, c.proj_dim, c.temperature, c.seed)


@register("uic", UICConfig, "self-supervised",
          "UIC (Chen et al. 2020): the classifier's own predictions on augmented views as the next "
          "epoch's labels")
def build_uic(spec: ModelSpec, c: UICConfig) -> UIC:
    require_data(c, "num_images")
    return UIC(*build_common(spec, c), c.views, c.distance, c.num_images, c.clusters, c.seed)
