"""Labelled subsets on the command line: ``--labels-per-class N`` or ``--label-fraction F`` keep
the labels of a seeded choice of the train images (:func:`episodes.labelled_index`, seed
``--label-seed``); ``--extra-unlabelled FOLDER`` adds a folder of images without labels (the
flags: :func:`fewshot.cli.groups.add_label_args`).

What the rest of the train images become depends on the method's kind: semi-supervised methods
learn from them without their labels (:func:`episodes.unlabelled_pool`); supervised pre-training
and episodic training use the labelled images only; self-supervised methods read no labels, so the
flags are refused for them. The chosen images are recorded in ``run.json``
(``resolved.labelled``: the positions in the train split), so a run names exactly the images whose
labels it read, and the same split, count and seed give every method the same images.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from episodes import ClassDataset, labelled_index, subset_items, unlabelled_pool
from episodes.registry import load_dataset


def check_label_args(args: argparse.Namespace, kind: str) -> None:
    """The checks of the labelled-subset flags that the method's kind decides (before any data
    is read)."""
    given = args.labels_per_class is not None or args.label_fraction is not None
    extra = getattr(args, "extra_unlabelled", None)
    if args.labels_per_class is not None and args.label_fraction is not None:
        raise ValueError("--labels-per-class and --label-fraction both choose the labelled "
                         "images: give one")
    if kind == "self-supervised" and given:
        raise ValueError("self-supervised methods read no labels: leave out --labels-per-class "
                         "and --label-fraction (or use a semi-supervised --method)")
    if extra is not None and kind != "semi-supervised":
        raise ValueError("--extra-unlabelled is for semi-supervised methods: leave it out")
    if extra is not None and not Path(extra).is_dir():
        raise FileNotFoundError(f"--extra-unlabelled {extra} is not a folder: give a folder of "
                                f"images")
    if kind == "semi-supervised" and not given and extra is None:
        raise ValueError("semi-supervised methods need unlabelled images: give --labels-per-class "
                         "N or --label-fraction F (the other train images are used without "
                         "labels), or --extra-unlabelled FOLDER")


def split_labels(args: argparse.Namespace, kind: str, train_ds: ClassDataset
                 ) -> tuple[ClassDataset, ClassDataset | None, dict[str, Any] | None]:
    """The images the method learns labels from, the unlabelled images (semi-supervised methods
    only; else None) and what ``run.json`` records of the choice (None: every label kept)."""
    if args.labels_per_class is None and args.label_fraction is None:
        index, labelled = None, train_ds
    else:
        index = labelled_index(train_ds, args.labels_per_class, args.label_fraction,
                               args.label_seed)
        labelled = subset_items(train_ds, index)
    unlabelled = None
    if kind == "semi-supervised":
        extra = None
        if args.extra_unlabelled is not None:
            c, size, _ = train_ds.image_shape
            extra = load_dataset("unlabelled", "train", args.extra_unlabelled, size, channels=c,
                                 cache_dir=args.cache_dir, skip_bad=args.skip_bad_images)
        unlabelled = unlabelled_pool(train_ds, index if index is not None else
                                     torch.arange(len(train_ds)), extra)
    if index is None:
        return labelled, unlabelled, None
    return labelled, unlabelled, {
        "per_class": args.labels_per_class, "fraction": args.label_fraction,
        "seed": args.label_seed, "images": len(index), "of": len(train_ds),
        "unlabelled": len(unlabelled) if unlabelled is not None else 0,
        "index": index.tolist()}
