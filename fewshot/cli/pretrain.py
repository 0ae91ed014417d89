"""``fewshot pretrain``'s arguments: pre-train a backbone on mini-batches, supervised (a classifier
over all train classes) or self-supervised (the images alone), run by the run recipe
(:func:`fewshot.cli.recipe.run`); then ``fewshot eval --head`` or ``fewshot train --init``. Light:
no torch (:mod:`fewshot.cli.choices`)."""

from __future__ import annotations

import argparse

from .args import add_data_args, count, option, positive_int
from .catalogue import KINDS
from .choices import names, summaries
from .groups import (
    add_augment_args,
    add_backbone_args,
    add_label_args,
    add_optimization_args,
    add_run_args,
    add_val_args,
)

SUPERVISED = "supervised"  # pretrain --method supervised: the registry's supervised method


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    g = p.add_argument_group("model")
    # "supervised" names the first supervised method; any other (a plugin's) by its own name
    choices = [SUPERVISED, *names("method", "supervised")[1:],
               *names("method", "self-supervised"), *names("method", "semi-supervised")]
    g.add_argument("--method", choices=choices, default=SUPERVISED,
                   help=f"{SUPERVISED}: {KINDS['supervised']}, "
                   f"{summaries('method', ('supervised',))}; self-supervised ("
                   f"{KINDS['self-supervised']}): {summaries('method', ('self-supervised',))}; "
                   f"semi-supervised ({KINDS['semi-supervised']}, with --labels-per-class): "
                   f"{summaries('method', ('semi-supervised',))}")
    add_backbone_args(g)
    g.add_argument("--option", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable: supervised: classifier=linear|cosine "
                   "(Baseline / Baseline++), scale, label_smoothing, distance=euclidean|cosine "
                   "(the prototype head of validation); self-supervised: "
                   "views=simclr|mocov2|byol|crop|standard|none, projector widths, temperature, "
                   "...; semi-supervised: mu (unlabelled per labelled image), lambda_u, "
                   "threshold, ... (each method's config; the docs list them)")
    g = p.add_argument_group("mini-batches")
    g.add_argument("--batch-size", type=positive_int, default=64, help="images per step, drawn "
                   "from every train class, shuffled once per epoch (semi-supervised: labelled "
                   "images per step, with mu times as many unlabelled)")
    add_augment_args(g, sets=False)
    add_label_args(p, semi=True)
    add_val_args(p, "5", "1")
    p.add_argument("--knn-k", type=count, default=20, help="self-supervised methods: at each "
                   "validation also log the weighted k-NN accuracy and a linear probe's accuracy "
                   "of the backbone's features on the val images (half of each class to fit; 0: "
                   "off)")
    add_optimization_args(p, steps=10000, lr=0.05, optimizer="sgd")
    add_run_args(p, "runs/pretrain")
