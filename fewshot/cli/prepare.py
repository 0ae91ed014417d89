"""The pieces ``fewshot train``, ``pretrain`` and ``eval`` build from their arguments
(:mod:`fewshot.cli.groups`): the training configuration, the validation episodes, the backbone's
initial weights and frozen layers, and the fixed episodes, loaded or drawn and saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from episodes import ClassDataset, FixedEpisodes, ImagePipeline
from episodes.sampler import FLAGS

from ..engine.checkpoint import check_pipeline, load_backbone_weights, load_checkpoint
from ..engine.logs import require_tensorboard
from ..engine.train import TrainConfig, make_optimizer
from ..models.input_norm import describe_normalize, require_same_normalize
from ..models.learner import EpisodicLearner, ModelSpec
from ..models.weights import backbone_of
from ..models.zoo import freeze
from ..registry import canonical


def train_config(args: argparse.Namespace, learner: EpisodicLearner | None = None,
                 record: dict | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of the optimization and run arguments, ``record`` (the run's
    ``run.json``) kept in it so that every checkpoint carries it. With ``learner`` (after
    ``--freeze``), its optimizer is built once too, so that nothing it would refuse reaches the
    run folder."""
    if not 0 <= args.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    if not 0 <= args.weight_decay < float("inf"):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    config = TrainConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay,
                         optimizer=args.optimizer, momentum=args.momentum, schedule=args.schedule,
                         lr_decay_every=args.lr_decay_every, val_every=args.val_every,
                         checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                         resume=args.resume, precision=args.precision, time_limit=args.time_limit,
                         progress=not args.quiet, max_memory=args.max_memory, run=record,
                         log_every=args.log_every, tensorboard=args.tensorboard)
    if args.tensorboard:
        require_tensorboard()
    if learner is not None:
        params = [p for p in learner.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"--freeze {' '.join(args.freeze)} leaves no parameter to train: "
                             f"freeze fewer layers (e.g. --freeze blocks.0)")
        make_optimizer(params, config)
    return config


def validation(args: argparse.Namespace, val_ds: ClassDataset, way: int, shot: int
               ) -> tuple[ClassDataset, FixedEpisodes]:
    """The validation dataset and its fixed episodes (seed ``--seed`` + 1)."""
    try:
        return val_ds, fixed_episodes(val_ds, way, shot, args.val_query, args.val_episodes,
                                      args.seed + 1,
                                      flags=("--val-way", "--val-shot", "--val-query"))
    except ValueError as e:
        raise ValueError(f"validation episodes: {e}; or --val-episodes 0 for no "
                         f"validation") from None


def prepare_backbone(args: argparse.Namespace, learner: EpisodicLearner, spec: ModelSpec,
                     dataset: ClassDataset) -> None:
    """Load ``--init`` into the learner's backbone (not when resuming: ``last.pt`` holds the
    weights) and freeze the ``--freeze`` layers. A fewshot checkpoint given as ``--init`` must
    have been trained on images read as this dataset's (its recorded pipeline)."""
    backbone = backbone_of(learner)
    if args.init and not args.resume:
        meta = load_backbone_weights(backbone, args.init, spec.backbone, "--init")
        if meta is not None:
            trained = canonical(meta["spec"]).normalize
            require_same_normalize(f"--init {args.init}", trained, spec.normalize,
                                   f"give --normalize {describe_normalize(trained)}")
            saved = meta["pipeline"]
            check_pipeline(canonical(meta["spec"]),
                           None if saved is None else ImagePipeline.from_dict(saved, args.init),
                           dataset, source=f"--init {args.init}")
    if args.freeze:
        freeze(backbone, args.freeze)


def load_episodes(path: str) -> FixedEpisodes:
    """Fixed episodes from ``path``, with a one-line error for a file that is not such a file."""
    if Path(path).is_dir():
        raise ValueError(f"--episodes-file {path} is a folder: give a file name")
    try:
        return FixedEpisodes.load(path)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, other content: one answer
        if is_checkpoint(path):
            raise ValueError(f"--episodes-file {path} is a fewshot checkpoint, not an episodes "
                             f"file: give --episodes-file a new file name (the episodes are "
                             f"drawn and saved there)") from None
        raise ValueError(f"--episodes-file {path} is not a readable episodes file "
                         f"({type(e).__name__}): give another file name (a new one is drawn and "
                         f"saved), or delete it if it is a broken episodes file") from None


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a readable fewshot checkpoint."""
    try:
        load_checkpoint(path)
    except (OSError, ValueError):
        return False
    return True


def fixed_episodes(dataset, way: int, shot: int, query: int, count: int, seed: int,
                   path: str | None = None, flags: tuple[str, str, str] = FLAGS,
                   unlabelled: dict | None = None) -> FixedEpisodes:
    """Load fixed episodes from ``path`` when it exists (they must be the ``way``-way ``shot``-shot
    ``query``-query ``count`` episodes asked for, with the unlabelled images ``unlabelled`` asks
    for: :attr:`FixedEpisodes.unlabelled_drawn`), else draw them (and save them there)."""
    if path and Path(path).exists():
        episodes = load_episodes(path)
        have = (episodes.n_way, episodes.k_shot, episodes.q_query, len(episodes))
        if have != (way, shot, query, count):
            raise ValueError(f"--episodes-file {path} holds {len(episodes)} {have[0]}-way "
                             f"{have[1]}-shot {have[2]}-query episodes, not the {count} {way}-way "
                             f"{shot}-shot {query}-query asked for: give matching "
                             f"{'/'.join(flags)}/--episodes, or "
                             f"another file")
        if episodes.unlabelled_drawn != unlabelled:
            raise ValueError(f"--episodes-file {path} holds episodes with unlabelled images "
                             f"{episodes.unlabelled_drawn or 'none'}, not {unlabelled or 'none'} "
                             f"as asked: give matching --unlabelled-per-class/--distractor-classes/"
                             f"--label-ratio, or another file")
        episodes.check(dataset)
        return episodes
    episodes = FixedEpisodes.generate(dataset, way, shot, query, count, seed, flags,
                                      **(unlabelled or {}))
    if path:
        episodes.save(path)
    return episodes
