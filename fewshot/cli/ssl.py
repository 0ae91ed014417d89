"""``fewshot pretrain --method NAME`` for the self-supervised methods (:mod:`fewshot.ssl`), and
``fewshot plot-embeddings``: a 2-D projection of a checkpoint's embeddings coloured by class."""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from episodes import AugmentConfig, ImageBatchSampler
from episodes.options import parse_values

from .. import distributed
from ..checkpoint import check_pipeline, load_learner
from ..features import extract_features
from ..input_norm import resolve_normalize
from ..registry import build_learner, make_spec, method_config
from ..runs import run_record
from ..ssl.base import SelfSupervisedLearner
from ..ssl.monitor import knn_monitor, plot_embeddings, project_2d
from ..train import train
from ..weights import backbone_of
from .args import dataset_from_args, pick_device
from .groups import prepare_backbone, train_config, validation

PER_IMAGE = ("deepcluster", "uic")  # one pseudo-label per training image: option num_images


def cmd_ssl_pretrain(args: argparse.Namespace) -> None:
    """Self-supervised pre-training of ``args.method`` on the training split's images (their
    labels are not used), validated by the prototype head on fixed val episodes and, with
    ``--knn-k``, by the k-NN accuracy on the val images."""
    from .commands import check_run_args, recorded_args, run_folder

    distributed.refuse_several_processes(SelfSupervisedLearner)
    if args.batch_size < 2:
        raise ValueError(f"--batch-size {args.batch_size}: {args.method} learns from the images of "
                         f"a batch together (and its BatchNorm layers need two): give --batch-size "
                         f"2 or more")
    device = pick_device(args.device)
    check_run_args(args)
    options = dict(args.option)
    if args.method in PER_IMAGE and "num_images" in options:
        raise ValueError("option num_images is set from the training split: leave it out")
    method_config(args.method, {**options, "num_images": 2**62} if args.method in PER_IMAGE
                  else options)  # bad options fail before any data is read
    if args.augment != "none":
        raise ValueError(f"--augment is for supervised pre-training; {args.method} draws its "
                         f"views by option views=simclr|mocov2|byol|crop|standard|none (--augment-option "
                         f"changes a setting of every view)")
    if args.dataset == "unlabelled" and args.val_episodes > 0:
        raise ValueError("--dataset unlabelled has no labelled val classes to validate on: add "
                         "--val-episodes 0")
    augment_values = parse_values(AugmentConfig, dict(args.augment_option), "augmentation")
    torch.manual_seed(args.seed)
    train_ds = dataset_from_args(args, "train")
    if args.method in PER_IMAGE:
        options["num_images"] = len(train_ds)
    spec = make_spec(args.method, args.backbone, train_ds.image_shape[0], train_ds.image_shape[1],
                     options,
                     resolve_normalize(args.normalize, args.backbone, train_ds.image_shape[0]))
    learner = build_learner(spec)
    if hasattr(learner, "check_batch_size"):  # before the run folder is written
        learner.check_batch_size(args.batch_size)
    views = tuple(None if v is None and not augment_values else
                  replace(v or AugmentConfig(), **augment_values)
                  for v in learner.view_augments())
    sampler = ImageBatchSampler(train_ds, args.batch_size, seed=args.seed, views=views)
    prepare_backbone(args, learner, spec, train_ds)
    val, monitors = None, []
    if args.val_episodes > 0:
        val_ds = dataset_from_args(args, "val")
        val = validation(args, val_ds, args.val_way or 5, args.val_shot or 1)
        if args.knn_k:
            monitors.append(knn_monitor(val_ds, args.knn_k))
    record = run_record(recorded_args(args, augment_values), spec.to_dict(), command="pretrain")
    config = train_config(args, learner, record)
    with run_folder(args, record, device):
        result = train(learner, spec, sampler, config, val=val, device=device, monitors=monitors)
    last = next((r for r in reversed(result.history) if "emb_std_ratio" in r), None)
    print(f"pre-trained {args.method} {result.steps} steps ({result.episodes / len(train_ds):.1f} "
          f"epochs) in {result.seconds:.1f} s; checkpoints in {args.out}"
          + (f"; best val accuracy {100 * result.best_val:.2f} % (prototype head)"
             if result.best_val is not None else "")
          + (f"; embedding std {last['emb_std']:.4f} = {last['emb_std_ratio']:.2f} / sqrt(D)"
             if last else ""))


def add_plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a fewshot checkpoint (its backbone)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"),
                   help="class split whose images are embedded")
    p.add_argument("--classes", type=int, default=10, help="the first this many classes")
    p.add_argument("--per-class", type=int, default=50, help="images per class (at most)")
    p.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="pca (torch) or tsne (needs scikit-learn)")
    p.add_argument("--output", required=True, help="image file to write (.png, .pdf, ...)")


def cmd_plot_embeddings(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    learner, spec, ckpt = load_learner(args.checkpoint, device)
    ds = dataset_from_args(args, args.split)
    check_pipeline(spec, ckpt["pipeline"], ds, source=args.checkpoint)
    if args.classes < 1 or args.per_class < 1:
        raise ValueError("--classes and --per-class must be >= 1")
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
