"""The one recipe of the commands that train (``fewshot train`` and ``fewshot pretrain``, every
method): check -> options -> augmentation -> seed -> dataset -> spec -> learner -> sampler ->
backbone -> validation -> record -> run folder -> the training loop -> report.

What differs between methods comes from their registry entry's kind (:data:`fewshot.registry.
KINDS`): episodic learners train on episodes (:class:`episodes.EpisodeSampler`), supervised and
self-supervised ones on mini-batches of images (:class:`episodes.ImageBatchSampler`, the
self-supervised ones on the views their learner asks for), semi-supervised ones on a labelled and
an unlabelled batch per step (:class:`episodes.SemiSupervisedSampler`; the labelled subset:
:mod:`fewshot.cli.labels`); the config fields that the data fills are filled by
:func:`fewshot.registry.fill_from_data`. Everything is checked before the run folder is touched
(:func:`fewshot.engine.runs.open_run`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from episodes import AugmentConfig, ClassDataset, FixedEpisodes
from episodes.options import parse_values
from episodes.sampler import check_episode_shape
from episodes.shard import check_shardable

from ..engine import distributed
from ..engine.calibrate import Calibration, calibrate_checkpoint
from ..engine.checkpoint import load_checkpoint
from ..engine.precision import resolve_precision
from ..engine.provenance import provenance
from ..engine.runs import check_run_folder, open_run, run_record
from ..engine.train import TrainResult, train
from ..models.input_norm import resolve_normalize
from ..registry import build_learner, fill_from_data, get_method, make_spec, method_config, method_names
from ..ssl.decoders import preview_monitor
from ..ssl.monitor import knn_monitor
from .args import not_an_input, output_folder
from .batches import make_sampler
from .data import check_data_args, data_provenance, dataset_from_args, pick_device
from .labels import check_label_args, split_labels
from .prepare import prepare_backbone, train_config, validation
from .pretrain import SUPERVISED


def method_of(args: argparse.Namespace) -> str:
    """The registered method the command trains (``pretrain --method supervised``: the method
    of kind supervised)."""
    if args.command == "pretrain" and args.method == SUPERVISED:
        return method_names("supervised")[0]
    return args.method


def check_run_args(args: argparse.Namespace) -> None:
    """Checks of a training command's data, run folder and training arguments, before any data
    is read."""
    check_data_args(args)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one")
    if args.val_episodes == 0 and (args.val_way or args.val_shot):
        raise ValueError("--val-way/--val-shot shape validation episodes, and --val-episodes 0 "
                         "asks for none: leave them out, or validate")
    output_folder("--out", args.out)
    replaced = check_run_folder(args.out, args.resume, args.overwrite)
    if args.overwrite:  # the files an overwrite replaces must not be the run's own inputs
        for name in replaced:
            not_an_input(f"--overwrite (of {Path(args.out) / name})", Path(args.out) / name,
                         {"--init": args.init, "--config": args.config})
    if args.resume:  # an unreadable or unsafe last.pt is refused before anything is written
        load_checkpoint(Path(args.out) / "last.pt")
    if args.init and not Path(args.init).is_file():
        raise FileNotFoundError(f"--init {args.init} does not exist: check the path")
    train_config(args)
    distributed.barrier()  # every rank checked the folder before rank 0 writes into it


def check_kind(args: argparse.Namespace, name: str, augment: dict) -> str:
    """The method's kind, after the checks that depend on it (before any data is read)."""
    kind = get_method(name).kind
    if args.command == "train" and kind != "episodic":
        raise ValueError(f"{name} is pre-trained on mini-batches, not episodes: use fewshot "
                         f"pretrain --method {SUPERVISED if kind == 'supervised' else name}")
    if kind == "episodic":
        return kind
    check_shardable(args.batch_size, distributed.current().world_size, "images", "--batch-size")
    if kind == "semi-supervised":
        if args.dataset == "unlabelled":
            raise ValueError(f"{name} needs labelled images: give a dataset with classes and "
                             f"--labels-per-class N (add a folder without labels by "
                             f"--extra-unlabelled)")
        if args.augment != "none" or augment:
            raise ValueError(f"{name} draws its own weak and strong views: leave out --augment "
                             f"and --augment-option")
        return kind
    if kind == "supervised":
        if args.dataset == "unlabelled":
            raise ValueError("supervised pre-training needs labels: give a folder of class "
                             "folders (--dataset folder), or a self-supervised --method "
                             "(rotation, simclr, ...)")
        if augment and args.augment == "none":
            raise ValueError("--augment-option needs --augment standard")
        return kind
    if args.batch_size < 2:
        raise ValueError(f"--batch-size {args.batch_size}: {name} learns from the images of a "
                         f"batch together (and its BatchNorm layers need two): give --batch-size "
                         f"2 or more")
    if args.augment != "none":
        raise ValueError(f"--augment is for supervised pre-training; {name} draws its views by "
                         f"option views=simclr|mocov2|byol|crop|standard|none (--augment-option "
                         f"changes a setting of every view)")
    if args.dataset == "unlabelled" and args.val_episodes > 0:
        raise ValueError("--dataset unlabelled has no labelled val classes to validate on: add "
                         "--val-episodes 0")
    return kind


def recorded_args(args: argparse.Namespace, augment: dict) -> dict:
    """The settings of a training run as ``run.json`` records them (method options live in the
    spec, converted; augmentation options converted)."""
    skip = {"func", "command", "option", "config"}
    out = {k: v for k, v in vars(args).items() if k not in skip}
    out["augment_option"] = augment
    return out


@contextlib.contextmanager
def run_folder(args: argparse.Namespace, record: dict, device: torch.device) -> Iterator[None]:
    """Hold ``--out``'s lock and prepare it for the run (:func:`fewshot.engine.runs.open_run`, which
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


def run(args: argparse.Namespace) -> None:
    """Train the method ``args`` name, as the command line says (the recipe above)."""
    device = pick_device(args.device)
    name = method_of(args)
    augment = parse_values(AugmentConfig, dict(args.augment_option), "augmentation")
    kind = check_kind(args, name, augment)
    check_label_args(args, kind)
    check_run_args(args)
    options = fill_from_data(name, dict(args.option))  # refuses the fields the data fills
    method_config(name, options)  # bad options fail before any data is read
    torch.manual_seed(args.seed)
    train_ds, unlabelled, labelled = split_labels(args, kind, dataset_from_args(args, "train"))
    if kind == "episodic":
        check_episode_shape(train_ds, args.way, args.shot, args.query)  # before any allocation
    data = {"classes": train_ds.num_classes, "images": len(train_ds)}
    options = fill_from_data(name, options, **data, **({"way": args.way} if kind == "episodic"
                                                        else {}))
    spec = make_spec(name, args.backbone, train_ds.image_shape[0], train_ds.image_shape[1],
                     options,
                     resolve_normalize(args.normalize, args.backbone, train_ds.image_shape[0]))
    learner = build_learner(spec)
    distributed.refuse_several_processes(learner)
    sampler, resolved = make_sampler(args, kind, learner, train_ds, augment, device, unlabelled)
    prepare_backbone(args, learner, spec, train_ds)
    val, monitors = None, []
    if args.val_episodes > 0:
        val_ds = dataset_from_args(args, "val")
        way, shot = (args.way, args.shot) if kind == "episodic" else (5, 1)
        val = validation(args, val_ds, args.val_way or way, args.val_shot or shot)
        if kind == "self-supervised" and args.knn_k:
            monitors.append(knn_monitor(val_ds, args.knn_k))
        if kind == "self-supervised":  # a GAN's samples, an autoencoder's reconstructions
            monitors.append(preview_monitor(args.out))
    record = run_record(recorded_args(args, augment), spec.to_dict(), command=args.command)
    record["resolved"] = {**resolved, **({"labelled": labelled} if labelled else {})}
    record["provenance"] = provenance(**data_provenance(args, train_ds), split="train",
                                      seed=args.seed, device=device, files={"init": args.init})
    config = train_config(args, learner, record)
    calibration = None
    with run_folder(args, record, device):
        result = train(learner, spec, sampler, config, val=val, device=device, monitors=monitors)
        if kind == "episodic" and val is not None:
            calibration = calibrate_run(args.out, val, device, args.max_memory)
    if distributed.current().main:
        print(report(args, kind, name, result,
                     len(train_ds) + (len(unlabelled) if unlabelled is not None else 0))
              + (f"; {calibration} on the val episodes"
                 + (", recorded in the checkpoints" if calibration.recorded else "")
                 if calibration else ""))


def calibrate_run(out: str, val: tuple[ClassDataset, FixedEpisodes], device: torch.device,
                  max_memory: int | None) -> Calibration | None:
    """Fit the temperature of ``best.pt`` and ``last.pt`` in ``out`` on the validation episodes
    and record it in each (:func:`fewshot.engine.calibrate.calibrate_checkpoint`); returns
    ``best.pt``'s (``last.pt``'s when there is no ``best.pt``)."""
    fitted = [calibrate_checkpoint(path, val[0], val[1], device, max_memory)
              for path in (Path(out) / "best.pt", Path(out) / "last.pt") if path.is_file()]
    return fitted[0] if fitted else None


def report(args: argparse.Namespace, kind: str, name: str, result: TrainResult,
           images: int) -> str:
    """The line a finished training prints."""
    ctx = distributed.current()
    processes = f" on {ctx.world_size} processes" if ctx.active else ""
    best = result.best_val
    if kind == "episodic":
        return (f"trained {result.steps} steps ({result.episodes} episodes) in "
                f"{result.seconds:.1f} s ({result.episodes_per_second:.1f} episodes/s)"
                + processes + f"; checkpoints in {args.out}"
                + (f"; best val accuracy {100 * best:.2f} %" if best else ""))
    last = next((r for r in reversed(result.history) if "emb_std_ratio" in r), None)
    what = "" if kind == "supervised" else f"{name} "
    return (f"pre-trained {what}{result.steps} steps ({result.episodes} images, "
            f"{result.episodes / images:.1f} epochs) in {result.seconds:.1f} s" + processes
            + f"; checkpoints in {args.out}"
            + (f"; best val accuracy {100 * best:.2f} % (prototype head)" if best is not None
               else "")
            + (f"; embedding std {last['emb_std']:.4f} = {last['emb_std_ratio']:.2f} / sqrt(D)"
               if last else ""))
