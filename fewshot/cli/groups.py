"""Argument groups shared by ``fewshot train`` (episodes) and ``fewshot pretrain`` (mini-batches),
and the pieces of both commands built from them: the training configuration, the validation
episodes, the backbone's initial weights and frozen layers."""

from __future__ import annotations

import argparse
from pathlib import Path

from episodes import ClassDataset, FixedEpisodes, ImagePipeline
from episodes.sampler import FLAGS

from ..engine.checkpoint import check_pipeline, load_backbone_weights, load_checkpoint
from ..engine.distributed import DEFAULT_TIMEOUT
from ..engine.logs import INSTALL_TENSORBOARD, LOG_EVERY, require_tensorboard
from ..engine.precision import CHOICES
from ..engine.train import TrainConfig, make_optimizer
from ..models.input_norm import check_normalize_text, describe_normalize, require_same_normalize
from ..models.learner import EpisodicLearner, ModelSpec
from ..models.weights import backbone_of
from ..models.zoo import freeze
from ..registry import canonical
from .args import MAX_MEMORY_HELP, count, memory_size, option, positive_float, positive_int, way


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
    """argparse type of ``--normalize`` (:func:`fewshot.models.input_norm.check_normalize_text`)."""
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
    g.add_argument("--precision", choices=CHOICES, default="auto",
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
