"""``fewshot pretrain`` (supervised pre-training on mini-batches) and ``fewshot eval --head``
(a head fitted on each episode's support set on top of a checkpoint's or a weights file's
backbone). Both call the library: the one training loop, the one evaluation."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from episodes import AugmentConfig, ClassDataset, FixedEpisodes, ImageBatchSampler
from episodes.options import parse_values
from episodes.shard import check_shardable

from .. import distributed
from ..backbones import make_backbone
from ..checkpoint import check_pipeline, load_learner
from ..evaluate import EvalResult, evaluate
from ..heads import HEADS, head_config
from ..heads.scoring import evaluate_head
from ..input_norm import Normalize, add_input_norm, require_same_normalize, resolve_normalize
from ..registry import build_learner, canonical, make_spec, method_config
from ..runs import run_record
from ..ssl import SSL_METHODS
from ..train import train
from ..weights import backbone_of, load_backbone_weights
from .args import count, dataset_from_args, option, pick_device, positive_int
from .groups import (
    add_augment_args,
    add_backbone_args,
    add_normalize_arg,
    add_optimization_args,
    add_run_args,
    add_val_args,
    prepare_backbone,
    train_config,
    validation,
)

PRETRAIN_METHODS = ("supervised", *SSL_METHODS)


def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--method", choices=PRETRAIN_METHODS, default="supervised",
                   help="supervised: cross-entropy over all train classes; the others are "
                   "self-supervised (the images' labels are not used): rotation, jigsaw "
                   "(pretext tasks), simclr, moco (contrastive), byol, simsiam, barlow-twins, "
                   "vicreg (non-contrastive), deepcluster, uic (clustering); see fewshot.ssl")
    add_backbone_args(g)
    g.add_argument("--option", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="classifier option, repeatable: classifier=linear|cosine (Baseline / "
                   "Baseline++), scale, label_smoothing, distance=euclidean|cosine (the prototype "
                   "head of validation); see fewshot.methods.classifier.ClassifierConfig; "
                   "self-supervised methods: views=simclr|mocov2|byol|crop|standard|none, projector "
                   "widths, temperature, ... (see each method's config in fewshot.ssl)")
    g = p.add_argument_group("mini-batches")
    g.add_argument("--batch-size", type=positive_int, default=64, help="images per step, drawn "
                   "from every train class, shuffled once per epoch")
    add_augment_args(g, sets=False)
    add_val_args(p, "5", "1")
    p.add_argument("--knn-k", type=count, default=20, help="self-supervised methods: at each "
                   "validation also log the weighted k-NN accuracy and a linear probe's accuracy "
                   "of the backbone's features on the val images (half of each class to fit; 0: "
                   "off)")
    add_optimization_args(p, steps=10000, lr=0.05, optimizer="sgd")
    add_run_args(p, "runs/pretrain")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .commands import _processes, check_run_args, recorded_args, run_folder

    if args.method != "supervised":
        from .ssl import cmd_ssl_pretrain

        return cmd_ssl_pretrain(args)
    if args.dataset == "unlabelled":
        raise ValueError("supervised pre-training needs labels: give a folder of class folders "
                         "(--dataset folder), or a self-supervised --method (rotation, simclr, ...)")
    device = pick_device(args.device)
    check_run_args(args)
    options = dict(args.option)
    given = method_config("classifier", {"num_classes": 2, **options})  # before data is read
    given_classes = given.num_classes if "num_classes" in options else None
    augment_values = parse_values(AugmentConfig, dict(args.augment_option), "augmentation")
    if augment_values and args.augment == "none":
        raise ValueError("--augment-option needs --augment standard")
    check_shardable(args.batch_size, distributed.current().world_size, "images", "--batch-size")
    torch.manual_seed(args.seed)
    train_ds = dataset_from_args(args, "train")
    if given_classes is not None and given_classes != train_ds.num_classes:
        raise ValueError(f"option num_classes is set from the training split ("
                         f"{train_ds.num_classes} classes), not {given_classes}: leave it out")
    options["num_classes"] = train_ds.num_classes
    spec = make_spec("classifier", args.backbone, train_ds.image_shape[0],
                     train_ds.image_shape[1], options,
                     resolve_normalize(args.normalize, args.backbone, train_ds.image_shape[0]))
    learner = build_learner(spec)
    sampler = ImageBatchSampler(train_ds, args.batch_size, seed=args.seed,
                                augment=AugmentConfig.standard(**augment_values)
                                if args.augment == "standard" else None)
    prepare_backbone(args, learner, spec, train_ds)
    val = None
    if args.val_episodes > 0:
        val = validation(args, dataset_from_args(args, "val"), args.val_way or 5,
                         args.val_shot or 1)
    record = run_record(recorded_args(args, augment_values), spec.to_dict(), command="pretrain")
    config = train_config(args, learner, record)
    with run_folder(args, record, device):
        result = train(learner, spec, sampler, config, val=val, device=device)
    if distributed.current().main:
        print(f"pre-trained {result.steps} steps ({result.episodes} images, "
              f"{result.episodes / len(train_ds):.1f} epochs) in {result.seconds:.1f} s"
              + _processes() + f"; checkpoints in {args.out}"
              + (f"; best val accuracy {100 * result.best_val:.2f} % (prototype head)"
                 if result.best_val is not None else ""))


def add_head_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("heads fitted on each episode's support set")
    g.add_argument("--head", choices=tuple(HEADS), help="fit this head on the backbone of "
                   "--checkpoint (or of --backbone/--weights) on each episode (default: the "
                   "checkpoint's own learner)")
    g.add_argument("--head-option", type=option, action="append", default=[],
                   metavar="KEY=VALUE", help="head option, repeatable (e.g. C=0.5 for logistic, "
                   "layers=blocks.3 steps=50 for finetune; see fewshot.heads)")
    g.add_argument("--backbone", help="with --weights and no --checkpoint: the backbone the "
                   "weights are for (conv4, resnet12, resnet18, timm:<name>, ...)")
    g.add_argument("--weights", metavar="PATH", help="with --head and no --checkpoint: a state "
                   "dict of --backbone (read with weights_only=True)")
    add_normalize_arg(g, default=None)
    g.add_argument("--chunk-size", type=positive_int, help="images per backbone forward pass "
                   "when extracting features (default: as many as fit --max-memory)")


def weights_normalize(args: argparse.Namespace, meta: dict | None, channels: int) -> Normalize:
    """The input normalisation of ``eval --weights``: ``--normalize`` (default auto), or, for a
    fewshot checkpoint, the one it was trained with (a different ``--normalize`` is refused)."""
    if meta is None:
        return resolve_normalize(args.normalize or "auto", args.backbone, channels)
    trained = canonical(meta["spec"]).normalize
    if args.normalize is not None:
        require_same_normalize(f"--weights {args.weights}", trained,
                               resolve_normalize(args.normalize, args.backbone, channels),
                               "leave --normalize out")
    return trained


def eval_model(args: argparse.Namespace, device: torch.device
               ) -> tuple[Callable[[FixedEpisodes], EvalResult], ClassDataset]:
    """What ``fewshot eval`` scores, as a function of the fixed episodes, and its dataset, after
    every check: a checkpoint's learner, or a head fitted on each episode on a checkpoint's
    backbone or on ``--backbone`` with ``--weights``."""
    config = head_config(args.head, dict(args.head_option)) if args.head else None
    if args.head_option and not args.head:
        raise ValueError("--head-option needs --head")
    if args.checkpoint is None:
        if args.weights is None or args.head is None or args.backbone is None:
            raise ValueError("give --checkpoint (a fewshot checkpoint), or --head with "
                             "--backbone NAME --weights FILE")
    elif args.weights is not None or args.backbone is not None or args.normalize is not None:
        raise ValueError("--backbone/--weights/--normalize are for scoring a weights file "
                         "without --checkpoint (a checkpoint records its own normalisation): "
                         "give one or the other")
    if args.checkpoint is not None:
        learner, spec, ckpt = load_learner(args.checkpoint, device)
        ds = dataset_from_args(args, args.split)
        check_pipeline(spec, ckpt["pipeline"], ds, source=args.checkpoint)
        backbone = backbone_of(learner) if args.head else None
    else:
        ds = dataset_from_args(args, args.split)
        backbone = make_backbone(args.backbone, ds.image_shape[0])
        meta = load_backbone_weights(backbone, args.weights, args.backbone, "--weights")
        add_input_norm(backbone, weights_normalize(args, meta, ds.image_shape[0]))
        backbone.to(device)
    if not args.head:
        return (lambda episodes: evaluate(learner, episodes, ds, batch_size=args.batch_size,
                                          device=device, max_memory=args.max_memory)), ds
    return (lambda episodes: evaluate_head(backbone, args.head, config, episodes, ds,
                                           args.batch_size, args.chunk_size, device)), ds
