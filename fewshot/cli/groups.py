"""Argument groups shared by the commands: ``fewshot train`` (episodes) and ``fewshot pretrain``
(mini-batches), the labelled subset, unlabelled images in episodes (train, eval, predict). Light:
no torch (the pieces built from them: :mod:`fewshot.cli.prepare`, :mod:`fewshot.cli.labels`,
:mod:`fewshot.cli.unlabelled`)."""

from __future__ import annotations

import argparse

from ..values import check_normalize_text
from .args import MAX_MEMORY_HELP, bounded, count, memory_size, option, positive_float, positive_int, way
from .catalogue import DEFAULT_TIMEOUT, INSTALL_TENSORBOARD, LOG_EVERY, PRECISIONS, REFINES


def add_backbone_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--backbone", default="conv4", help="conv4, resnet12, a torchvision "
                   "classification model (resnet18, ...) or timm:<name> (needs timm)")
    g.add_argument("--init", "--weights", dest="init", metavar="PATH",
                   help="initial backbone weights: a fewshot checkpoint (its backbone, e.g. "
                   "fewshot pretrain's best.pt: Meta-Baseline) or a state dict of the backbone "
                   "(e.g. torchvision's resnet18 weights file); read with weights_only=True")
    add_normalize_arg(g)
    g.add_argument("--freeze", action="append", default=[], metavar="LAYER",
                   help="do not train this backbone layer (a name such as blocks.0 or layer1, "
                   "everything under it, or a pattern with *), repeatable")


def normalize_arg(text: str) -> str:
    """argparse type of ``--normalize`` (:func:`fewshot.values.check_normalize_text`)."""
    try:
        return check_normalize_text(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_normalize_arg(g: argparse._ArgumentGroup, default: str | None = "auto") -> None:
    g.add_argument("--normalize", default=default, type=normalize_arg,
                   metavar="auto|none|imagenet|inception|MEAN/STD",
                   help="mean/std the backbone applies to its [0, 1] input images, recorded in "
                   "the checkpoint: auto (default) is ImageNet's for torchvision models (what "
                   "their weights expect), the model's own for timm:<name>, none for conv4 and "
                   "resnet12; or explicit, e.g. 0.5,0.5,0.5/0.25,0.25,0.25"
                   + ("" if default else "; with --weights only (a checkpoint has its own)"))


def add_val_args(p: argparse.ArgumentParser, way_default: str, shot_default: str) -> None:
    g = p.add_argument_group("validation (fixed episodes of the val classes)")
    g.add_argument("--val-way", type=way, help=f"way of validation episodes (default: "
                   f"{way_default})")
    g.add_argument("--val-shot", type=positive_int, help=f"shot of validation episodes (default: "
                   f"{shot_default})")
    g.add_argument("--val-query", type=positive_int, default=15,
                   help="query of validation episodes")
    g.add_argument("--val-episodes", type=count, default=200,
                   help="fixed validation episodes (0: no validation)")


def add_augment_args(g: argparse._ArgumentGroup, sets: bool) -> None:
    g.add_argument("--augment", choices=("none", "standard"), default="none",
                   help="augment training images on the device (standard: horizontal flip, "
                   "random crop of side >= 0.75, colour jitter 0.4, reflect fill)")
    g.add_argument("--augment-option", type=option, action="append", default=[],
                   metavar="KEY=VALUE", help="change one augmentation setting, repeatable (e.g. "
                   "rotate=15, fill=wrap, noise_std=0.05; see episodes.AugmentConfig)")
    if sets:
        g.add_argument("--augment-sets", choices=("both", "support", "query"), default="both",
                       help="which part of each episode is augmented")


def add_optimization_args(p: argparse.ArgumentParser, steps: int, lr: float,
                          optimizer: str) -> None:
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=positive_int, default=steps, help="optimizer steps")
    g.add_argument("--lr", type=positive_float, default=lr, help="learning rate")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default=optimizer,
                   help="Adam, or SGD with --momentum")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=0.0, help="weight decay")
    g.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="learning rate: step (halved every --lr-decay-every steps) or cosine "
                   "(annealed to 0 over --steps)")
    g.add_argument("--lr-decay-every", type=count, default=0,
                   help="halve the learning rate every N steps (0: never)")
    g.add_argument("--val-every", type=count, default=500,
                   help="validate every N steps (0: only at the end)")
    g.add_argument("--checkpoint-every", type=positive_int, default=100,
                   help="write last.pt every N steps")
    g.add_argument("--time-limit", type=positive_float, help="stop after this many seconds of "
                   "training (default: no limit, --steps decides)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32, bf16 (bfloat16 autocast) or auto: bf16 on a CPU with bfloat16 "
                   "units (AVX512-BF16, AMX) for protonet, matching and relation, else fp32")
    g.add_argument("--amp", dest="precision", action="store_const", const="bf16",
                   help="the same as --precision bf16")
    g.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    g.add_argument("--seed", type=int, default=0, help="seed of sampling and initialisation")


def add_run_args(p: argparse.ArgumentParser, out: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default=out, help="run folder for run.json, metrics.jsonl, "
                   "metrics.csv, last.pt and best.pt")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt "
                   "(refused if the configuration changed)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g.add_argument("--config", metavar="RUN_JSON", help="replay the run.json of an earlier run "
                   "(other arguments given override it)")
    g.add_argument("--log-every", type=positive_int, default=LOG_EVERY, metavar="N",
                   help="record the mean training loss and accuracy every N steps (and at the "
                   "last step) in metrics.jsonl and metrics.csv")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event "
                   f"files into OUT/tensorboard (needs {INSTALL_TENSORBOARD})")
    g.add_argument("--quiet", action="store_true", help="no progress output (off a terminal: no "
                   "heartbeat lines)")
    g.add_argument("--dist-timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                   metavar="SECONDS", help="under torchrun: how long a process waits for the "
                   "others before the run stops with an error")


label_fraction = bounded(float, 0, strict=True, high=1)


def add_label_args(p: argparse.ArgumentParser, semi: bool) -> None:
    g = p.add_argument_group("labelled subset")
    g.add_argument("--labels-per-class", type=positive_int, metavar="N",
                   help="keep the labels of N train images per class (a seeded choice, recorded "
                   "in run.json)" + ("; semi-supervised methods use the other images without "
                                     "labels, the others leave them out" if semi else
                                     "; the other images are left out"))
    g.add_argument("--label-fraction", type=label_fraction, metavar="F",
                   help="keep the labels of this fraction of each train class instead")
    g.add_argument("--label-seed", type=int, default=0, help="seed of the labelled images' choice "
                   "(--labels-per-class, --label-fraction, and train's --label-ratio split)")
    if semi:
        g.add_argument("--extra-unlabelled", metavar="FOLDER",
                       help="semi-supervised methods: also learn from every image under this "
                       "folder, without labels (read as --dataset unlabelled, at the train "
                       "images' size and --channels)")


label_ratio = bounded(float, 0, strict=True, high=1)


def add_unlabelled_args(p: argparse.ArgumentParser, refine: bool) -> None:
    """``--unlabelled-per-class``, ``--distractor-classes``, ``--label-ratio``, ``--label-seed``
    (and for eval, ``refine``: ``--refine``, ``--refine-steps``) in their own group."""
    g = p.add_argument_group("unlabelled images in episodes (semi-supervised, Ren et al. 2018)")
    g.add_argument("--unlabelled-per-class", type=positive_int, metavar="M", help="M unlabelled "
                   "images of each episode class in every episode (default: none)")
    g.add_argument("--distractor-classes", type=count, default=0, metavar="D", help="and M "
                   "unlabelled images of each of D more classes, outside the episode's")
    g.add_argument("--label-ratio", type=label_ratio, metavar="R", help="support and query "
                   "images from this share of each class's images, unlabelled ones from the "
                   "rest (Ren et al.: 0.1 on Omniglot, 0.4 on mini-ImageNet; default: "
                   "distinct images of the whole class)")
    if refine:  # train has --label-seed already (the labelled-subset flags), with this meaning too
        g.add_argument("--label-seed", type=int, default=0, help="seed of the --label-ratio split")
        g.add_argument("--refine", choices=REFINES[1:], help="refine the prototypes with the "
                       "unlabelled images (a ProtoNet checkpoint or --head prototype; masked: a "
                       "checkpoint meta-trained with it)")
        g.add_argument("--refine-steps", type=positive_int, help="refinement steps (default: "
                       "the checkpoint's, else 1)")


def add_predict_unlabelled_args(p: argparse.ArgumentParser) -> None:
    """``predict``'s ``--unlabelled DIR``, ``--refine``, ``--refine-steps``, in their own group."""
    g = p.add_argument_group("unlabelled images (semi-supervised, Ren et al. 2018)")
    g.add_argument("--unlabelled", metavar="DIR", help="folder of unlabelled images of the "
                   "support classes: the prototypes are refined with them (a ProtoNet checkpoint)")
    g.add_argument("--refine", choices=REFINES[1:], help="how (default: the checkpoint's "
                   "refinement if it was meta-trained with one, else soft-kmeans)")
    g.add_argument("--refine-steps", type=positive_int, help="refinement steps (default: the "
                   "checkpoint's, else 1)")
