"""``fewshot eval``: score a checkpoint on fixed episodes (mean and 95% interval), with its own
learner or with a head fitted on each episode's support set on top of a checkpoint's or a weights
file's backbone. Both call the library: the one evaluation. (Its arguments:
:func:`fewshot.cli.flags.eval_arguments`.)"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from episodes import ClassDataset, FixedEpisodes

from ..engine import distributed
from ..engine.checkpoint import check_pipeline, load_backbone_weights, load_learner
from ..engine.evaluate import evaluate, query_logits
from ..engine.provenance import provenance
from ..engine.results import EvalResult, calibrated_result
from ..engine.runs import write_json_atomic
from ..heads import head_config
from ..heads.scoring import evaluate_head
from ..models.backbones import make_backbone
from ..models.input_norm import Normalize, add_input_norm, require_same_normalize, resolve_normalize
from ..models.weights import backbone_of
from ..registry import canonical
from .args import not_an_input, output_file, say_data_note
from .data import check_data_args, data_provenance, dataset_from_args, pick_device
from .flags import SHAPE
from .prepare import fixed_episodes, load_episodes
from .unlabelled import refined_scorer, unlabelled_options


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
    learner = None
    if args.checkpoint is not None:
        learner, spec, ckpt = load_learner(args.checkpoint, device, "--checkpoint")
        ds = dataset_from_args(args, args.split)
        check_pipeline(spec, ckpt["pipeline"], ds, source=args.checkpoint)
        backbone = backbone_of(learner) if args.head else None
    else:
        ds = dataset_from_args(args, args.split)
        backbone = make_backbone(args.backbone, ds.image_shape[0])
        meta = load_backbone_weights(backbone, args.weights, args.backbone, "--weights")
        add_input_norm(backbone, weights_normalize(args, meta, ds.image_shape[0]))
        backbone.to(device)
    if args.head and args.fit_temperature:
        raise ValueError("--fit-temperature fits the temperature of a checkpoint's own learner: "
                         "leave out --head")
    if args.refine:
        return refined_scorer(args, learner, backbone, config, ds, device), ds
    if not args.head:
        temperature = 1.0 if args.no_temperature else ckpt["temperature"]

        def score(episodes: FixedEpisodes) -> EvalResult:
            if not args.fit_temperature:
                return evaluate(learner, episodes, ds, batch_size=args.episodes_per_pass,
                                device=device, max_memory=args.max_memory,
                                temperature=temperature, progress=True)
            logits, labels = query_logits(learner, episodes, ds, args.episodes_per_pass, device,
                                          max_memory=args.max_memory, progress=True)
            return calibrated_result(logits, labels, episodes, temperature)
        return score, ds
    return (lambda episodes: evaluate_head(backbone, args.head, config, episodes, ds,
                                           args.episodes_per_pass, args.chunk_size, device,
                                           progress=True)), ds


def episode_shape(args: argparse.Namespace) -> tuple[int, int, int, int]:
    """Way, shot, query and count of the episodes to score: an existing ``--episodes-file``'s
    own (a flag given that differs is refused, naming both), else the flags or
    :data:`~fewshot.cli.flags.SHAPE`."""
    names = ("way", "shot", "query", "episodes")
    if args.episodes_file and Path(args.episodes_file).exists():
        episodes = load_episodes(args.episodes_file)
        have = (episodes.n_way, episodes.k_shot, episodes.q_query, len(episodes))
        for name, value in zip(names, have, strict=True):
            given = getattr(args, name)
            if given is not None and given != value:
                raise ValueError(f"--{name} {given} and --episodes-file {args.episodes_file} "
                                 f"(which holds {value}) disagree: leave --{name} out (the file "
                                 f"says it), or give another --episodes-file")
        return have
    return tuple(SHAPE[n] if getattr(args, n) is None else getattr(args, n)  # type: ignore[return-value]
                 for n in names)


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    check_data_args(args)
    output_file("--output", args.output)
    output_file("--episodes-file", args.episodes_file)
    inputs = {"--checkpoint": args.checkpoint, "--weights": args.weights}
    not_an_input("--episodes-file", args.episodes_file, inputs)
    not_an_input("--output", args.output, {**inputs, "--episodes-file": args.episodes_file})
    way, shot, query, count = episode_shape(args)
    unlabelled = unlabelled_options(args)
    score, ds = eval_model(args, device)
    say_data_note(args, distributed.current().main)
    episodes = fixed_episodes(ds, way, shot, query, count, args.seed, args.episodes_file,
                              unlabelled=unlabelled)
    result = score(episodes)
    if not distributed.current().main:
        return
    print(f"{args.dataset} {args.split}" + (f", head {args.head}" if args.head else "")
          + (f", refined by {args.refine}" if args.refine else "") + f": {result}")
    if args.output:
        files = {"checkpoint": args.checkpoint, "weights": args.weights,
                 "episodes_file": args.episodes_file}
        write_json_atomic({**result.to_dict(), "provenance": provenance(
            **data_provenance(args, ds), split=args.split, seed=args.seed, device=device,
            files=files, head=args.head, head_options=dict(args.head_option) or None)},
            args.output)
        print(f"per-episode accuracies written to {args.output}")
