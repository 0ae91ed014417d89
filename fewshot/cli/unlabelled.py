"""The command line's semi-supervised episodes (Ren et al. 2018): unlabelled images in the episodes
of ``fewshot train`` and ``fewshot eval``, and ``eval``'s prototype refinement with them
(:mod:`episodes.unlabelled`, :mod:`fewshot.refine`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from episodes import ClassDataset, FixedEpisodes

from ..engine.refined import check_refinable, evaluate_refined, refiner_for
from ..engine.results import EvalResult
from ..refine import REFINES, PrototypeRefiner
from .args import bounded, count, positive_int

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
                   "rest (Ren et al.: 0.4; default: distinct images of the whole class)")
    if refine:  # train has --label-seed already (the labelled-subset flags), with this meaning too
        g.add_argument("--label-seed", type=int, default=0, help="seed of the --label-ratio split")
        g.add_argument("--refine", choices=REFINES[1:], help="refine the prototypes with the "
                       "unlabelled images (a ProtoNet checkpoint or --head prototype; masked: a "
                       "checkpoint meta-trained with it)")
        g.add_argument("--refine-steps", type=positive_int, help="refinement steps (default: "
                       "the checkpoint's, else 1)")


def unlabelled_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The unlabelled images the arguments ask for (the keyword arguments of
    :meth:`FixedEpisodes.generate` and :class:`~episodes.EpisodeSampler`), or None."""
    if args.unlabelled_per_class is None:
        if args.distractor_classes or args.label_ratio is not None:
            raise ValueError("--distractor-classes and --label-ratio need --unlabelled-per-class M")
        if getattr(args, "refine", None):
            raise ValueError("--refine needs unlabelled images in the episodes: give "
                             "--unlabelled-per-class M")
        return None
    return {"unlabelled_per_class": args.unlabelled_per_class,
            "distractor_classes": args.distractor_classes,
            "label_ratio": args.label_ratio, "label_seed": args.label_seed}


def check_refined_training(unlabelled: dict[str, Any] | None, learner: nn.Module) -> None:
    """``fewshot train``: unlabelled images in the episodes if and only if the learner refines
    its prototypes with them."""
    refines = getattr(learner, "refiner", None) is not None
    if unlabelled and not refines:
        raise ValueError("--unlabelled-per-class adds unlabelled images that only a learner "
                         "refining its prototypes uses: give --method protonet --option "
                         "refine=soft-kmeans (or distractor, masked), or leave it out")
    if refines and not unlabelled:
        raise ValueError("option refine refines the prototypes with the episodes' unlabelled "
                         "images: give --unlabelled-per-class M (or leave the option out)")


def refined_scorer(args: argparse.Namespace, learner: nn.Module | None, backbone: nn.Module | None,
                   head_config: Any, ds: ClassDataset, device: torch.device
                   ) -> Callable[[FixedEpisodes], EvalResult]:
    """``fewshot eval --refine``: the checkpoint's ProtoNet (``learner``, with no ``--head``) or
    ``--head prototype`` on ``backbone``, its prototypes refined with the unlabelled images."""
    if args.head is None:
        check_refinable(learner, f"the {args.checkpoint} learner")
        own, embed = learner, learner.eval().embed
    elif args.head == "prototype" and head_config.distance == "euclidean":
        own, embed = None, backbone.eval()
    else:
        raise ValueError("--refine refines Euclidean prototypes: give --head prototype (with "
                         "distance=euclidean), or a ProtoNet checkpoint without --head")
    refiner = refiner_for(own, args.refine, args.refine_steps).to(device).eval()
    return lambda episodes: evaluate_refined(embed, refiner, episodes, ds, args.episodes_per_pass,
                                             device, args.max_memory)


def add_predict_unlabelled_args(p: argparse.ArgumentParser) -> None:
    """``predict``'s ``--unlabelled DIR``, ``--refine``, ``--refine-steps``, in their own group."""
    g = p.add_argument_group("unlabelled images (semi-supervised, Ren et al. 2018)")
    g.add_argument("--unlabelled", metavar="DIR", help="folder of unlabelled images of the "
                   "support classes: the prototypes are refined with them (a ProtoNet checkpoint)")
    g.add_argument("--refine", choices=REFINES[1:], help="how (default: the checkpoint's "
                   "refinement if it was meta-trained with one, else soft-kmeans)")
    g.add_argument("--refine-steps", type=positive_int, help="refinement steps (default: the "
                   "checkpoint's, else 1)")


def predict_refiner(args: argparse.Namespace, learner: nn.Module) -> PrototypeRefiner | None:
    """The refinement of ``fewshot predict --unlabelled DIR``, or None without it."""
    if args.unlabelled is None:
        if args.refine or args.refine_steps:
            raise ValueError("--refine/--refine-steps need --unlabelled DIR")
        return None
    check_refinable(learner, f"the {args.checkpoint} learner")
    own = getattr(learner, "refiner", None)
    mode = args.refine or (own.mode if own is not None else "soft-kmeans")
    return refiner_for(learner, mode, args.refine_steps)
