"""``fewshot eval``: score a checkpoint on fixed episodes (mean and 95% interval), with its own
learner or with a head fitted on each episode's support set on top of a checkpoint's or a weights
file's backbone. Both call the library: the one evaluation."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from episodes import ClassDataset, FixedEpisodes

from ..engine import distributed
from ..engine.checkpoint import check_pipeline, load_backbone_weights, load_learner
from ..engine.evaluate import evaluate, query_logits
from ..engine.results import EvalResult, calibrated_result
from ..heads import HEADS, head_config
from ..heads.scoring import evaluate_head
from ..models.backbones import make_backbone
from ..models.input_norm import Normalize, add_input_norm, require_same_normalize, resolve_normalize
from ..models.weights import backbone_of
from ..registry import canonical
from .args import (
    MAX_MEMORY_HELP,
    add_data_args,
    check_data_args,
    dataset_from_args,
    memory_size,
    not_an_input,
    option,
    output_file,
    pick_device,
    positive_int,
)
from .groups import add_normalize_arg, fixed_episodes

NAME = "eval"
HELP = "score a checkpoint on fixed episodes (mean, 95%% interval)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--checkpoint", help="a checkpoint (best.pt or last.pt)")
    add_head_args(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="class split to score on")
    p.add_argument("--way", type=positive_int, default=5, help="classes per episode")
    p.add_argument("--shot", type=positive_int, default=1, help="support images per class")
    p.add_argument("--query", type=positive_int, default=15, help="query images per class")
    p.add_argument("--episodes", type=positive_int, default=600, help="fixed episodes")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed episodes")
    p.add_argument("--episodes-file", help="load the fixed episodes from this file, or save them "
                   "there if it does not exist, so every model is scored on the same episodes")
    p.add_argument("--batch-size", type=positive_int, help="episodes per pass (default: as many "
                   "as fit --max-memory)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--json", help="write per-episode accuracies, mean and interval here")
    g = p.add_argument_group("calibration (expected calibration error, temperature scaling)")
    g.add_argument("--no-temperature", action="store_true", help="the calibration error of the "
                   "learner's own probabilities, not at the temperature the checkpoint records")
    g.add_argument("--fit-temperature", action="store_true", help="fit the temperature on these "
                   "episodes and report the calibration error before and after (use validation "
                   "episodes: --split val)")


def add_head_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("heads fitted on each episode's support set")
    g.add_argument("--head", choices=HEADS.names(), help="fit this head on the backbone of "
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
    if not args.head:
        temperature = 1.0 if args.no_temperature else ckpt["temperature"]

        def score(episodes: FixedEpisodes) -> EvalResult:
            if not args.fit_temperature:
                return evaluate(learner, episodes, ds, batch_size=args.batch_size, device=device,
                                max_memory=args.max_memory, temperature=temperature)
            logits, labels = query_logits(learner, episodes, ds, args.batch_size, device,
                                          max_memory=args.max_memory)
            return calibrated_result(logits, labels, episodes, temperature)
        return score, ds
    return (lambda episodes: evaluate_head(backbone, args.head, config, episodes, ds,
                                           args.batch_size, args.chunk_size, device)), ds


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    check_data_args(args)
    output_file("--json", args.json)
    output_file("--episodes-file", args.episodes_file)
    inputs = {"--checkpoint": args.checkpoint, "--weights": args.weights}
    not_an_input("--episodes-file", args.episodes_file, inputs)
    not_an_input("--json", args.json, {**inputs, "--episodes-file": args.episodes_file})
    score, ds = eval_model(args, device)
    episodes = fixed_episodes(ds, args.way, args.shot, args.query, args.episodes, args.seed,
                              args.episodes_file)
    result = score(episodes)
    if not distributed.current().main:
        return
    print(f"{args.dataset} {args.split}" + (f", head {args.head}" if args.head else "")
          + f": {result}")
    if args.json:
        result.save_json(args.json)
        print(f"per-episode accuracies written to {args.json}")
