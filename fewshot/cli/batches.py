"""The training batches of a method's kind, from the command line (:func:`make_sampler`):
episodes (with their augmentation, the episodes per step and any unlabelled images), labelled
mini-batches, self-supervised views, or semi-supervised labelled and unlabelled batches. A step of
the run recipe (:mod:`fewshot.cli.recipe`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from episodes import (
    AugmentConfig,
    ClassDataset,
    EpisodeAugment,
    EpisodeSampler,
    ImageBatchSampler,
    SemiSupervisedSampler,
)
from episodes.shard import check_shardable

from ..engine import distributed
from ..engine.runs import RUN_FILE, read_run
from ..engine.step_size import auto_episodes
from ..models.learner import EpisodicLearner
from .unlabelled import check_refined_training, unlabelled_options


def make_augment(args: argparse.Namespace, values: dict) -> EpisodeAugment | None:
    """The training episodes' augmentation from ``--augment``/``--augment-sets`` and the converted
    ``--augment-option`` values."""
    if args.augment == "none":
        if values:
            raise ValueError("--augment-option needs --augment standard")
        return None
    config = AugmentConfig.standard(**values)
    return EpisodeAugment(config if args.augment_sets in ("both", "support") else None,
                          config if args.augment_sets in ("both", "query") else None,
                          seed=args.seed)


def resolve_episodes_per_step(args: argparse.Namespace, learner: EpisodicLearner,
                              image_shape: tuple[int, ...], device: torch.device) -> int:
    """``--episodes-per-step``, or for ``auto`` the number chosen for this device (a resumed run
    keeps the number its ``run.json`` recorded)."""
    if args.episodes_per_step != "auto":
        return args.episodes_per_step
    run_file = Path(args.out) / RUN_FILE
    if args.resume and run_file.is_file():
        recorded = (read_run(run_file).get("resolved") or {}).get("episodes_per_step")
        if recorded:
            return int(recorded)

    def auto() -> int:  # per process, times the processes; rank 0's number for all
        return auto_episodes(learner.to(device), args.way, args.shot, args.query, image_shape,
                             device, args.max_memory)
    return distributed.on_main(auto) * distributed.current().world_size


def make_sampler(args: argparse.Namespace, kind: str, learner: EpisodicLearner,
                 train_ds: ClassDataset, augment: dict, device: torch.device,
                 unlabelled: ClassDataset | None = None) -> tuple[Any, dict]:
    """The training batches of the method's kind (semi-supervised: with the ``unlabelled``
    images), and what was resolved for them."""
    if kind == "semi-supervised":
        labelled_view, unlabelled_views = learner.view_augments()
        return SemiSupervisedSampler(train_ds, unlabelled, args.batch_size, learner.mu,
                                     args.seed, labelled_view, unlabelled_views), {}
    if kind == "episodic":
        episodes = make_augment(args, augment)
        per_step = resolve_episodes_per_step(args, learner, train_ds.image_shape, device)
        check_shardable(per_step, distributed.current().world_size, "episodes",
                        "--episodes-per-step")
        unlabelled = unlabelled_options(args) if hasattr(args, "unlabelled_per_class") else None
        check_refined_training(unlabelled, learner)
        return EpisodeSampler(train_ds, args.way, args.shot, args.query, per_step,
                              num_batches=args.steps, seed=args.seed, augment=episodes,
                              **(unlabelled or {})), {
            "episodes_per_step": per_step}
    if hasattr(learner, "check_batch_size"):  # e.g. MoCo's queue and split BatchNorm
        learner.check_batch_size(args.batch_size)
    if kind == "supervised":
        return ImageBatchSampler(train_ds, args.batch_size, seed=args.seed,
                                 augment=AugmentConfig.standard(**augment)
                                 if args.augment == "standard" else None), {}
    views = tuple(None if v is None and not augment else replace(v or AugmentConfig(), **augment)
                  for v in learner.view_augments())
    return ImageBatchSampler(train_ds, args.batch_size, seed=args.seed, views=views), {}
