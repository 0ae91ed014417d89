"""What ``benchmarks/seed_protocol.py`` trains and how, as data: seed 000's "classifier
training" then "full-network fine-tuning" on the labelled images of the reduced mini-ImageNet.

For one self-supervised checkpoint (``label_efficiency.py``'s ``ssl-<method>``) and
``--level`` labelled images per train class of the reduced mini-ImageNet (64 classes of 100, less
the images ``label_efficiency.py``'s run of ``--against`` held out, as its results record; default
10: :func:`episodes.labelled_index` with seed 0, the images of ``ft-<method>@10``):

- held-out images: in the same seeded shuffle of each class (``labelled_index`` with seed 0 and a
  larger ``per_class``: the first ``level`` images are the labelled ones), the next
  ``val_per_class`` (10) are the early-stopping validation images and the next
  ``test_per_class`` (40) the test images; none is ever labelled or trained on (they were seen,
  unlabelled, by the self-supervised pre-training, as every train image was);
- stage 1, ``classifier``: the backbone frozen (no gradient, eval mode: BatchNorm statistics
  fixed), its flattened output (Conv-4's fourth block: 64 x 2 x 2 at 42x42) into three fully
  connected layers ``D -> H -> H -> 64``, ``H = min(20 * 64, 2048) = 1280``, the hidden ones
  ``Linear (no bias) -> BatchNorm -> ReLU``, no dropout (``fewshot.modules.mlp``); SGD 0.1,
  momentum 0.9, weight decay 5e-4, constant rate, batches of 64 labelled images with the standard
  augmentation (flip, crop >= 0.75, colour jitter 0.4), epochs of ``ceil(L / 64)`` batches; the
  accuracy on the validation images after every epoch (and before the first), stopping after
  ``patience`` (10) epochs without a better one (at most 100), the best epoch's weights kept;
- stage 2, ``fine-tune``: from stage 1's best, the backbone (train mode) and the head together,
  SGD 0.01 (ten times lower), the rest as stage 1 (at most 50 epochs; its epoch 0 is stage 1's
  result, so fine-tuning that never helps keeps it).

Against the closest authors' code, RotNet's non-linear classifier on frozen conv features
(``gidariss/FeatureLearningRotNet``: ``architectures/NonLinearClassifier.py``, type
``MultLayer``; ``config/CIFAR10_MultLayerClassifier_on_RotNet_NIN4blocks_Conv2_feats.py``;
``algorithms/FeatureClassificationModel.py``, ``Algorithm.py``), point by point:

- the layers: the same (flatten, two ``Linear`` without bias each followed by BatchNorm and ReLU
  at width ``min(20 * classes, 2048)``, a ``Linear`` with bias to the classes; no dropout); their
  initialisation ``N(0, sqrt(2 / fan_out))`` with zero biases, here PyTorch's default;
- the features: theirs the second block of a 4-block NIN on CIFAR-10 (192 x 8 x 8); here the
  last (fourth) block of Conv-4, as the seed's protocol says;
- frozen features: the same (no optimiser for the extractor, which is kept in eval mode);
- optimiser: theirs SGD 0.1, momentum 0.9 with Nesterov, weight decay 5e-4, the rate cut to
  0.02 / 0.004 / 0.0008 at epochs 20 / 40 / 45, batch 128, 100 epochs; here SGD 0.1 with plain
  momentum 0.9 (the library's optimiser), the same weight decay, a constant rate with early stopping in
  place of the schedule, batch 64 (640 labelled images: 10 batches an epoch);
- augmentation: theirs random crops of 32 with padding 4 and flips; here the library's standard;
- which epoch is kept: theirs the best accuracy on CIFAR-10's test set, evaluated every epoch
  over the whole schedule (the test set chooses the epoch); here the best on separate validation
  images, stopping after ``patience`` epochs without a better one, and the test images scored
  once;
- full-network fine-tuning: not in their semi-supervised experiment (the extractor stays
  frozen); here the seed's second stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from episodes import ClassDataset, labelled_index
from fewshot.modules import mlp


@dataclass(frozen=True)
class Stage:
    """One stage: whether the backbone trains, the SGD rate, the most epochs, and the epochs
    without a better validation accuracy that stop it."""

    name: str
    tune_backbone: bool
    lr: float
    max_epochs: int
    patience: int


@dataclass(frozen=True)
class Protocol:
    """The protocol's settings (see the module text)."""

    val_per_class: int = 10
    test_per_class: int = 40
    hidden: int | None = None  # None: min(20 * classes, 2048), RotNet's MultLayer width
    batch: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    stages: tuple[Stage, ...] = (Stage("classifier", False, 0.1, 100, 10),
                                 Stage("fine-tune", True, 0.01, 50, 10))


PROTOCOLS = {"gpu": Protocol(), "cpu": Protocol(),
             "quick": Protocol(val_per_class=2, test_per_class=2, hidden=16, batch=16,
                               stages=(Stage("classifier", False, 0.1, 2, 1),
                                       Stage("fine-tune", True, 0.01, 2, 1)))}


def head_width(classes: int, hidden: int | None) -> int:
    return hidden or min(20 * classes, 2048)


def fc3_head(in_dim: int, classes: int, hidden: int | None = None) -> torch.nn.Sequential:
    """Three fully connected layers, features ``[B, in_dim]`` -> logits ``[B, classes]``:
    ``Linear -> BatchNorm -> ReLU`` twice at :func:`head_width`, then ``Linear``."""
    width = head_width(classes, hidden)
    return mlp([in_dim, width, width, classes])


def held_out(ds: ClassDataset, level: int, protocol: Protocol, seed: int = 0
             ) -> dict[str, torch.Tensor]:
    """Positions (long, sorted) of the ``labelled`` images (``labelled_index(ds, level, seed)``)
    and, next in the same seeded shuffle of each class, of the ``val`` and ``test`` images."""
    sizes = [level, level + protocol.val_per_class,
             level + protocol.val_per_class + protocol.test_per_class]
    labelled, upto_val, upto_test = (labelled_index(ds, per_class=n, seed=seed) for n in sizes)
    if not (torch.isin(labelled, upto_val).all() and torch.isin(upto_val, upto_test).all()):
        raise RuntimeError("labelled_index's subsets are not nested: the held-out images would "
                           "overlap the labelled ones")
    return {"labelled": labelled, "val": upto_val[~torch.isin(upto_val, labelled)],
            "test": upto_test[~torch.isin(upto_test, upto_val)]}


def check_level(level: int, protocol: Protocol, smallest: int) -> None:
    """Exit with one line if the labelled and held-out images exceed the smallest class."""
    top = smallest - protocol.val_per_class - protocol.test_per_class
    if not 1 <= level <= top:
        raise SystemExit(f"--level {level}: with {protocol.val_per_class} validation and "
                         f"{protocol.test_per_class} test images held out of each class, the "
                         f"smallest train class ({smallest} images) leaves 1 to {top} to label")
