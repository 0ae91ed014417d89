"""The seed's own score of ``label_efficiency.py``'s models: each model's classifier over the 64
train classes on images of those classes that no model trained on.

Before anything is chosen, ``holdout`` images of every train class (the preset's field;
:func:`episodes.hold_out` with :data:`~label_efficiency_protocols.HOLDOUT_SEED`) are set aside;
the labelled subsets, the unlabelled pools and the self-supervised pre-training see only the
rest, and every line and level is scored on the same held-out images. A model with a classifier
over the train classes (``sup``, every ``ft-`` and every semi-supervised line; the ``ssl-``
models have none) predicts the argmax of its classifier on its backbone's features, in eval
mode: the model its backbone export uses (Mean Teacher's student, not its EMA teacher; Noisy
Student's last student, without its dropout). A cell holds the accuracy, its 95% interval over
the images and the per-image correctness (0 or 1); a model is paired against ``sup`` at its
level on the same images: the difference with its interval and the paired t-test of
:func:`grid.paired` on the per-image correctness, and McNemar's exact test (the binomial test
of the images only one of the two gets right), which the table shows.

Against RotNet's score (``gidariss/FeatureLearningRotNet``: ``config/CIFAR10_supervised_NIN_K*.py``
``data_test_opt`` split ``test``; ``algorithms/ClassificationModel.py`` ``accuracy``), point by
point: theirs top-1 accuracy on CIFAR-10's 10,000 test images (1,000 per class, a separate split),
averaged over batches of 128 in eval mode; here top-1 accuracy on ``holdout`` images per train
class held out of the train split (the reduced copy has no other images of these classes),
averaged over images, in eval mode; they report the accuracy alone, here with its interval and
the paired tests against the supervised line.
"""

from __future__ import annotations

from pathlib import Path

import grid
import torch
from label_efficiency_protocols import HOLDOUT_SEED
from scipy import stats

from episodes import TensorClassDataset
from fewshot.engine.features import extract_features
from fewshot.engine.results import confidence_interval


@torch.no_grad()
def correct(learner: torch.nn.Module, ds: TensorClassDataset) -> torch.Tensor:
    """Whether ``learner``'s classifier (``learner.classifier`` on the flattened features of
    ``learner.backbone``, both in eval mode) gets each image of ``ds`` right: ``[n]`` floats 0
    or 1. The classifier's outputs are ``ds``'s class indices (its training classes)."""
    feats = extract_features(learner.backbone, ds.images, 512)
    was = learner.classifier.training
    learner.classifier.eval()
    try:
        return (learner.classifier(feats).argmax(1) == ds.targets.to(feats.device)).float()
    finally:
        learner.classifier.train(was)


def heldout_cell(learner: torch.nn.Module, held: TensorClassDataset, classes: list[str]
                 ) -> dict:
    """The held-out score of ``learner``, whose classifier was trained on images of ``classes``
    (class names, in the order of its outputs): ``mean``, ``ci95``, ``images`` and the per-image
    correctness ``accuracies`` (0 or 1, the paired tests read them).

    Raises:
        ValueError: ``classes`` are not ``held``'s, in the same order (the class indices of the
            classifier and of the images would not agree).
    """
    if list(classes) != list(held.class_names):
        raise ValueError(f"the classifier's {len(classes)} classes are not the {held.num_classes} "
                         "classes of the held-out images in the same order")
    hits = correct(learner, held).cpu()
    return {"mean": float(hits.mean()), "ci95": confidence_interval(hits), "images": len(hits),
            "accuracies": hits.int().tolist()}


def mcnemar_p(a: torch.Tensor, b: torch.Tensor) -> float:
    """McNemar's exact two-sided p of two classifiers' per-image correctness ``a``, ``b`` (``[n]``
    0/1 on the same images): the binomial test (1/2) of the images only ``a`` gets right among
    those only one of them does (1 when there are none)."""
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def heldout_paired(cell: dict, base: dict) -> dict:
    """``cell`` minus ``base`` on the same held-out images: :func:`grid.paired` over the per-image
    correctness, with ``mcnemar_p`` (:func:`mcnemar_p`) and the ``images``."""
    if cell["images"] != base["images"]:
        raise ValueError(f"held-out cells of {cell['images']} and {base['images']} images: "
                         "paired tests need the same images")
    a, b = (torch.tensor(c["accuracies"]) for c in (cell, base))
    return {**grid.paired(cell, base), "mcnemar_p": mcnemar_p(a, b), "images": cell["images"]}


def check_holdout(results: dict, holdout: int, out_dir: Path) -> None:
    """Record ``holdout`` (images per train class, with :data:`HOLDOUT_SEED`) in ``results``, or
    exit with one line if the models of ``out_dir`` were trained with another (models without
    the record were trained on every image: 0 held out)."""
    want = {"per_class": holdout, "seed": HOLDOUT_SEED}
    trained = bool(results["models"]) or any((out_dir / "checkpoints").glob("*/record.json"))
    have = results.get("holdout", {"per_class": 0, "seed": None} if trained else want)
    if have["per_class"] != holdout or (holdout and have["seed"] != HOLDOUT_SEED):
        seed = f" (seed {have['seed']})" if have["per_class"] else ""
        raise SystemExit(f"{out_dir}: its models were trained with {have['per_class']} images per "
                         f"train class held out{seed}, this run holds out {holdout} (seed "
                         f"{HOLDOUT_SEED}): give another --out-dir")
    results["holdout"] = want
