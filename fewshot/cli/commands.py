"""What each ``fewshot`` command does. Every command calls the library: one training loop
(:func:`fewshot.train.train`), one evaluation (:func:`fewshot.evaluate.evaluate`)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from episodes import AugmentConfig, EpisodeAugment, EpisodeSampler, FixedEpisodes
from episodes.io import atomic_write_text
from episodes.options import parse_values
from episodes.sampler import FLAGS, check_episode_shape
from episodes.shard import check_shardable

from .. import distributed
from ..checkpoint import load_checkpoint, load_learner, recorded_pipeline
from ..demo import SPEC as DEMO_SPEC
from ..demo import run_demo
from ..input_norm import resolve_normalize
from ..learner import EpisodicLearner
from ..precision import resolve_precision
from ..predict import Prediction, predict
from ..registry import build_learner, make_spec, method_config
from ..runs import (
    RUN_FILE,
    RUN_FILES,
    RunError,
    check_run_folder,
    open_run,
    read_run,
    run_record,
)
from ..ssl import SSL_METHODS
from ..step_size import auto_episodes
from ..train import train
from .args import (
    check_data_args,
    dataset_from_args,
    not_an_input,
    output_file,
    output_folder,
    pick_device,
)
from .groups import prepare_backbone, train_config, validation
from .transfer import eval_model


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
                   path: str | None = None, flags: tuple[str, str, str] = FLAGS
                   ) -> FixedEpisodes:
    """Load fixed episodes from ``path`` when it exists (they must be the ``way``-way ``shot``-shot
    ``query``-query ``count`` episodes asked for), else draw them (and save them there)."""
    if path and Path(path).exists():
        episodes = load_episodes(path)
        have = (episodes.n_way, episodes.k_shot, episodes.q_query, len(episodes))
        if have != (way, shot, query, count):
            raise ValueError(f"--episodes-file {path} holds {len(episodes)} {have[0]}-way "
                             f"{have[1]}-shot {have[2]}-query episodes, not the {count} {way}-way "
                             f"{shot}-shot {query}-query asked for: give matching "
                             f"{'/'.join(flags)}/--episodes, or "
                             f"another file")
        episodes.check(dataset)
        return episodes
    episodes = FixedEpisodes.generate(dataset, way, shot, query, count, seed, flags)
    if path:
        episodes.save(path)
    return episodes


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


def recorded_args(args: argparse.Namespace, augment: dict) -> dict:
    """The settings of a training run as ``run.json`` records them (method options live in the
    spec, converted; augmentation options converted)."""
    skip = {"func", "command", "option", "config"}
    out = {k: v for k, v in vars(args).items() if k not in skip}
    out["augment_option"] = augment
    return out


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


def check_run_args(args: argparse.Namespace) -> None:
    """Checks of a training command's data, run folder and training arguments, before any data
    is read."""
    check_data_args(args)
    output_folder("--out", args.out)
    check_run_folder(args.out, args.resume, args.overwrite)
    if args.overwrite:  # the files an overwrite replaces must not be the run's own inputs
        for name in RUN_FILES:
            not_an_input(f"--overwrite (of {Path(args.out) / name})", Path(args.out) / name,
                         {"--init": args.init, "--config": args.config})
    if args.resume:  # an unreadable or unsafe last.pt is refused before anything is written
        load_checkpoint(Path(args.out) / "last.pt")
    if args.init and not Path(args.init).is_file():
        raise FileNotFoundError(f"--init {args.init} does not exist: check the path")
    train_config(args)
    distributed.barrier()  # every rank checked the folder before rank 0 writes into it


@contextlib.contextmanager
def run_folder(args: argparse.Namespace, record: dict, device: torch.device) -> Iterator[None]:
    """Hold ``--out``'s lock and prepare it for the run (:func:`fewshot.runs.open_run`, which
    puts the folder back if the run fails before its first checkpoint) while the body trains;
    in a distributed run only rank 0 does, and an error there stops every rank.
    ``record["resolved"]`` notes the number of processes (``world_size``), the precision
    ``--precision`` gives the method on ``device`` and the CPU threads."""
    record.setdefault("resolved", {}).update(
        world_size=distributed.current().world_size, threads=torch.get_num_threads(),
        precision=resolve_precision(args.precision, device, record["spec"]["method"]))
    with contextlib.ExitStack() as stack:
        def prepare() -> None:
            stack.enter_context(open_run(args.out, record, resume=args.resume,
                                         overwrite=args.overwrite))
        distributed.on_main(prepare)
        yield


def cmd_train(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    check_run_args(args)
    options = dict(args.option)
    if args.method == "maml":  # MAML's classifier head has one output per class of an episode
        options.setdefault("n_way", args.way)
    if args.method in SSL_METHODS or args.method == "classifier":
        raise ValueError(f"{args.method} is pre-trained on mini-batches, not episodes: use "
                         f"fewshot pretrain --method {args.method.replace('classifier', 'supervised')}")
    method_config(args.method, options)  # bad options fail before any data is read
    augment_values = parse_values(AugmentConfig, dict(args.augment_option), "augmentation")
    augment = make_augment(args, augment_values)
    torch.manual_seed(args.seed)
    train_ds = dataset_from_args(args, "train")
    spec = make_spec(args.method, args.backbone, train_ds.image_shape[0], train_ds.image_shape[1],
                     options,
                     resolve_normalize(args.normalize, args.backbone, train_ds.image_shape[0]))
    check_episode_shape(train_ds, args.way, args.shot, args.query)  # before any allocation
    learner = build_learner(spec)
    per_step = resolve_episodes_per_step(args, learner, train_ds.image_shape, device)
    check_shardable(per_step, distributed.current().world_size, "episodes",
                    "--episodes-per-step")
    sampler = EpisodeSampler(train_ds, args.way, args.shot, args.query, per_step,
                             num_batches=args.steps, seed=args.seed, augment=augment)
    prepare_backbone(args, learner, spec, train_ds)
    val = None
    if args.val_episodes > 0:
        val = validation(args, dataset_from_args(args, "val"), args.val_way or args.way,
                         args.val_shot or args.shot)
    record = run_record(recorded_args(args, augment_values), spec.to_dict())
    record["resolved"] = {"episodes_per_step": per_step}
    config = train_config(args, learner, record)
    with run_folder(args, record, device):
        result = train(learner, spec, sampler, config, val=val, device=device)
    if distributed.current().main:
        print(f"trained {result.steps} steps ({result.episodes} episodes) in "
              f"{result.seconds:.1f} s ({result.episodes_per_second:.1f} episodes/s)"
              + _processes() + f"; checkpoints in {args.out}"
              + (f"; best val accuracy {100 * result.best_val:.2f} %" if result.best_val else ""))


def _processes() -> str:
    ctx = distributed.current()
    return f" on {ctx.world_size} processes" if ctx.active else ""


def cmd_eval(args: argparse.Namespace) -> None:
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


def cmd_predict(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    output_file("--output", args.output)
    for flag, folder in (("--support", args.support), ("--query", args.query)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} folder {folder} does not exist: check the path")
    not_an_input("--output", args.output, {"--checkpoint": args.checkpoint},
                 {"--support": args.support, "--query": args.query})
    learner, spec, ckpt = load_learner(args.checkpoint, device)
    pipeline = recorded_pipeline(ckpt, args.checkpoint, args.pipeline)
    preds = predict(learner, spec, args.support, args.query, device, convert=not args.no_convert,
                    batch_size=args.batch_size, pipeline=pipeline,
                    skip_bad=args.skip_bad_images, max_memory=args.max_memory)
    text = format_predictions(preds, args.format)
    if args.output:
        atomic_write_text(text, args.output)
        print(f"wrote {len(preds)} predictions to {args.output}")
    else:
        print(text, end="")


FORMATS = ("tsv", "csv", "json")


def format_predictions(preds: list[Prediction], fmt: str) -> str:
    """Predictions as ``tsv`` or ``csv`` (a header ``path,label,probability`` and a row each)
    or ``json`` (a list of objects with those keys)."""
    rows = [{"path": str(p.path), "label": p.label, "probability": round(p.probability, 6)}
            for p in preds]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, ["path", "label", "probability"], lineterminator="\n",
                            delimiter="\t" if fmt == "tsv" else ",")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def cmd_demo(args: argparse.Namespace) -> None:
    """The demo, under ``train``'s rules for its run folder: a folder holding another run is
    refused unless ``--overwrite`` (an earlier demo's own run is replaced), the folder is locked,
    and ``run.json`` records the demo."""
    output_folder("--out", args.out)
    run_file = Path(args.out) / RUN_FILE
    try:
        own = run_file.is_file() and read_run(run_file).get("command") == "demo"
    except RunError:
        own = False
    replace = args.overwrite or own
    check_run_folder(args.out, resume=False, overwrite=replace)
    settings = {"seconds": args.seconds, "episodes": args.episodes, "out": args.out,
                "device": args.device, "precision": args.precision}
    with open_run(args.out, run_record(settings, DEMO_SPEC.to_dict(), command="demo"),
                  resume=False, overwrite=replace):
        run_demo(seconds=args.seconds, out=args.out, device=pick_device(args.device),
                 episodes=args.episodes, precision=args.precision)
    sys.stdout.flush()
