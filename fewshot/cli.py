"""The ``fewshot`` command: demo, train, eval, predict. Every command calls the library; there is one
training loop (:func:`fewshot.train.train`) and one evaluation (:func:`fewshot.evaluate.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from episodes import AugmentConfig, EpisodeAugment, EpisodeSampler, FixedEpisodes
from episodes.options import parse_values
from episodes.registry import DATASETS, load_dataset

from .checkpoint import load_learner
from .evaluate import evaluate
from .learner import ModelSpec
from .predict import predict
from .registry import build_learner, make_spec, method_config
from .train import TrainConfig, train


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def parse_option(text: str) -> tuple[str, str]:
    """``key=value`` as a pair of strings; the method's config class converts and checks the
    value (:func:`fewshot.registry.method_config`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="embedded", choices=sorted(DATASETS),
                   help="dataset (default: embedded, the built-in stroke characters)")
    g.add_argument("--root", help="dataset folder (all datasets but embedded)")
    g.add_argument("--image-size", type=int, help="resize images to this (default: 28 for "
                   "character datasets, 84 for natural images)")
    g.add_argument("--split-dir", help="folder dataset: folder with train.txt/val.txt/test.txt")
    g.add_argument("--split-ratios", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="folder dataset: split classes by these fractions (seeded by --split-seed)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the ratio split")
    g.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="folder dataset: 1 grayscale or 3 RGB (default 3)")
    g.add_argument("--no-convert", action="store_true", help="refuse images whose channels differ "
                   "from --channels instead of converting them")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or non-image files (with a warning) instead of failing")
    g.add_argument("--download", action="store_true", help="download the dataset if missing")
    g.add_argument("--crop-boxes", action="store_true",
                   help="dogs: crop each image to its bounding box from Annotation/")
    g.add_argument("--csv-dir", help="miniimagenet: folder with Ravi's train.csv/val.csv/test.csv")
    g.add_argument("--decoder", default="auto", choices=("auto", "cuda", "threads", "processes"),
                   help="how images are decoded into the cache (auto: GPU JPEG decoding when CUDA "
                   "is present, else CPU threads)")
    g.add_argument("--cache-dir", help="where decoded datasets are cached "
                   "(default: $FEWSHOT_CACHE or ~/.cache/fewshot)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")


def dataset_from_args(args: argparse.Namespace, split: str):
    ds = load_dataset(args.dataset, split, args.root, args.image_size, cache_dir=args.cache_dir,
                      download=args.download, split_dir=args.split_dir, ratios=args.split_ratios,
                      split_seed=args.split_seed, channels=args.channels,
                      convert=not args.no_convert, skip_bad=args.skip_bad_images,
                      crop=args.crop_boxes, csv_dir=args.csv_dir, decoder=args.decoder)
    return ds.to(pick_device(args.device))


def check_channels(spec: ModelSpec, dataset) -> None:
    c, h, _ = dataset.image_shape
    if c != spec.in_channels:
        raise SystemExit(f"error: the model takes {spec.in_channels}-channel images but the dataset "
                         f"has {c}: use --channels {spec.in_channels} (or a model trained on "
                         f"{c}-channel images)")
    if h != spec.image_size:
        raise SystemExit(f"error: the model was trained on {spec.image_size}px images but the "
                         f"dataset has {h}px: use --image-size {spec.image_size}")


def fixed_episodes(dataset, way: int, shot: int, query: int, count: int, seed: int,
                   path: str | None = None) -> FixedEpisodes:
    """Load fixed episodes from ``path`` when it exists, else draw them (and save them there)."""
    if path and Path(path).is_file():
        episodes = FixedEpisodes.load(path)
        episodes.check(dataset)
        return episodes
    episodes = FixedEpisodes.generate(dataset, way, shot, query, count, seed)
    if path:
        episodes.save(path)
    return episodes


def make_augment(args: argparse.Namespace) -> EpisodeAugment | None:
    """The training episodes' augmentation from ``--augment``/``--augment-option``/``--augment-sets``."""
    if args.augment == "none":
        if args.augment_option:
            raise ValueError("--augment-option needs --augment standard")
        return None
    config = AugmentConfig.standard(**parse_values(AugmentConfig, dict(args.augment_option),
                                                   "augmentation"))
    return EpisodeAugment(config if args.augment_sets in ("both", "support") else None,
                          config if args.augment_sets in ("both", "query") else None,
                          seed=args.seed)


def cmd_train(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    options = dict(args.option)
    if args.method == "maml":  # MAML's classifier head has one output per class of an episode
        options.setdefault("n_way", args.way)
    method_config(args.method, options)  # bad options fail before any data is read
    torch.manual_seed(args.seed)
    train_ds = dataset_from_args(args, "train")
    spec = make_spec(args.method, args.backbone, train_ds.image_shape[0], train_ds.image_shape[1],
                     options)
    learner = build_learner(spec)
    sampler = EpisodeSampler(train_ds, args.way, args.shot, args.query, args.episodes_per_step,
                             num_batches=args.steps, seed=args.seed, augment=make_augment(args))
    val = None
    if args.val_episodes > 0:
        val_ds = dataset_from_args(args, "val")
        val = (val_ds, fixed_episodes(val_ds, args.val_way or args.way, args.val_shot or
                                      args.shot, args.val_query, args.val_episodes, args.seed + 1))
    config = TrainConfig(steps=args.steps, lr=args.lr, lr_decay_every=args.lr_decay_every,
                         val_every=args.val_every, checkpoint_dir=args.out,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, amp=args.amp,
                         time_limit=args.time_limit, progress=not args.quiet)
    result = train(learner, spec, sampler, config, val=val, device=device)
    print(f"trained {result.steps} steps ({result.episodes} episodes) in {result.seconds:.1f} s "
          f"({result.episodes_per_second:.1f} episodes/s); checkpoints in {args.out}"
          + (f"; best val accuracy {100 * result.best_val:.2f} %" if result.best_val else ""))


def cmd_eval(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    learner, spec, _ = load_learner(args.checkpoint, device)
    ds = dataset_from_args(args, args.split)
    check_channels(spec, ds)
    episodes = fixed_episodes(ds, args.way, args.shot, args.query, args.episodes, args.seed,
                              args.episodes_file)
    result = evaluate(learner, episodes, ds, batch_size=args.batch_size, device=device)
    print(f"{args.dataset} {args.split}: {result}")
    if args.json:
        result.save_json(args.json)
        print(f"per-episode accuracies written to {args.json}")


def cmd_predict(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    learner, spec, _ = load_learner(args.checkpoint, device)
    preds = predict(learner, spec, args.support, args.query, device, convert=not args.no_convert)
    lines = [f"{p.path}\t{p.label}\t{p.probability:.4f}" for p in preds]
    if args.output:
        Path(args.output).write_text("path\tlabel\tprobability\n" + "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} predictions to {args.output}")
    else:
        print("\n".join(lines))


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(seconds=args.seconds, out=args.out, device=pick_device(args.device),
             episodes=args.episodes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train ProtoNet on the embedded dataset and score it on "
                       "held-out classes (a few minutes on a laptop CPU)")
    p.add_argument("--seconds", type=float, default=100, help="training time (default 100)")
    p.add_argument("--episodes", type=int, default=600, help="test episodes (default 600)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="meta-train a learner on a dataset's train classes")
    add_data_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--method", default="protonet", help="learner: protonet (default), matching, "
                   "relation, maml, ...")
    g.add_argument("--backbone", default="conv4", help="conv4 (default) or resnet12")
    g.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. distance=cosine; MAML: inner_steps=5, "
                   "first_order=true, bn=per_step; the README lists each method's options)")
    g = p.add_argument_group("episodes")
    g.add_argument("--way", type=int, default=5, help="classes per training episode (default 5)")
    g.add_argument("--shot", type=int, default=1, help="support images per class (default 1)")
    g.add_argument("--query", type=int, default=15, help="query images per class (default 15)")
    g.add_argument("--episodes-per-step", type=int, default=1,
                   help="episodes batched into each optimizer step (default 1)")
    g.add_argument("--val-way", type=int, help="way of validation episodes (default: --way)")
    g.add_argument("--val-shot", type=int, help="shot of validation episodes (default: --shot)")
    g.add_argument("--val-query", type=int, default=15, help="query of validation episodes")
    g.add_argument("--val-episodes", type=int, default=200,
                   help="fixed validation episodes (0: no validation; default 200)")
    g.add_argument("--augment", choices=("none", "standard"), default="none",
                   help="augment training episodes on the device (standard: horizontal flip, "
                   "random crop of side >= 0.75, colour jitter 0.4, reflect fill)")
    g.add_argument("--augment-option", type=parse_option, action="append", default=[],
                   metavar="KEY=VALUE", help="change one augmentation setting, repeatable (e.g. "
                   "rotate=15, fill=wrap, noise_std=0.05; see episodes.AugmentConfig)")
    g.add_argument("--augment-sets", choices=("both", "support", "query"), default="both",
                   help="which part of each episode is augmented (default both)")
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--lr-decay-every", type=int, default=0,
                   help="halve the learning rate every N steps (default 0: never)")
    g.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    g.add_argument("--checkpoint-every", type=int, default=100, help="write last.pt every N steps")
    g.add_argument("--time-limit", type=float, help="stop after this many seconds of training")
    g.add_argument("--amp", action="store_true", help="bfloat16 mixed precision")
    g.add_argument("--seed", type=int, default=0, help="seed of sampling and initialisation")
    g.add_argument("--out", default="runs/train", help="run folder for last.pt and best.pt")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="score a checkpoint on fixed episodes (mean, 95%% interval)")
    add_data_args(p)
    p.add_argument("--checkpoint", required=True, help="a checkpoint (best.pt or last.pt)")
    p.add_argument("--split", default="test", help="class split to score on (default test)")
    p.add_argument("--way", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--shot", type=int, default=1, help="support images per class (default 1)")
    p.add_argument("--query", type=int, default=15, help="query images per class (default 15)")
    p.add_argument("--episodes", type=int, default=600, help="fixed episodes (default 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed episodes")
    p.add_argument("--episodes-file", help="load the fixed episodes from this file, or save them "
                   "there if it does not exist, so every model is scored on the same episodes")
    p.add_argument("--batch-size", type=int, default=50, help="episodes per forward pass")
    p.add_argument("--json", help="write per-episode accuracies, mean and interval here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label query images from a few labelled support images")
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint")
    p.add_argument("--support", required=True, help="folder of class folders of support images")
    p.add_argument("--query", required=True, help="folder of images to label")
    p.add_argument("--output", help="write a TSV (path, label, probability) here")
    p.add_argument("--no-convert", action="store_true",
                   help="refuse images whose channels differ from the model's")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
