"""The command line's semi-supervised episodes (Ren et al. 2018): unlabelled images in the episodes
of ``fewshot train`` and ``fewshot eval``, and ``eval``'s prototype refinement with them
(:mod:`episodes.unlabelled`, :mod:`fewshot.refine`; the flags:
:func:`fewshot.cli.groups.add_unlabelled_args`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from episodes import ClassDataset, FixedEpisodes

from ..engine.refined import check_refinable, evaluate_refined, refiner_for
from ..engine.results import EvalResult
from ..refine import PrototypeRefiner


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
