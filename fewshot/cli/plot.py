"""``fewshot plot-embeddings``: a 2-D projection (PCA or t-SNE) of a checkpoint's backbone
features of a split's images, coloured by class. (Its arguments:
:func:`fewshot.cli.flags.embeddings_arguments`.)"""

from __future__ import annotations

import argparse

import torch

from ..engine.checkpoint import check_pipeline, load_learner
from ..engine.features import extract_features
from ..models.weights import backbone_of
from ..ssl.monitor import plot_embeddings, project_2d
from .args import not_an_input, output_file, say_data_note
from .data import check_data_args, dataset_from_args, pick_device


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    check_data_args(args)
    output_file("--output", args.output)
    not_an_input("--output", args.output, {"--checkpoint": args.checkpoint}, {"--root": args.root})
    learner, spec, ckpt = load_learner(args.checkpoint, device, "--checkpoint")
    ds = dataset_from_args(args, args.split)
    check_pipeline(spec, ckpt["pipeline"], ds, source=args.checkpoint)
    say_data_note(args)
    classes = min(args.classes, ds.num_classes)
    rank = torch.zeros_like(ds.targets)
    for c in range(classes):  # a handful of classes: rank of each image within its class
        where = torch.nonzero(ds.targets == c).flatten()
        rank[where] = torch.arange(len(where))
    index = torch.nonzero((ds.targets < classes) & (rank < args.per_class)).flatten()
    feats = extract_features(backbone_of(learner), ds.load(index), 256)
    points = project_2d(feats, args.projection)
    plot_embeddings(points, ds.targets[index].cpu(), ds.class_names[:classes], args.output,
                    f"{spec.method} ({spec.backbone}), {args.split} split, {args.projection}")
    print(f"wrote {args.output}: {len(index)} images of {classes} classes")
