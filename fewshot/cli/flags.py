"""The arguments of ``fewshot eval``, ``predict``, ``demo``, ``plot-embeddings``, ``plot`` and
``options`` (those of ``train`` and ``pretrain``: :mod:`fewshot.cli.train`,
:mod:`fewshot.cli.pretrain`). Light: no torch, so ``fewshot COMMAND --help`` and a mistyped flag
are answered at once; each command's module runs it (:data:`fewshot.cli.COMMANDS`)."""

from __future__ import annotations

import argparse

from .args import (
    MAX_MEMORY_HELP,
    add_data_args,
    add_output_arg,
    add_quiet_arg,
    add_split_arg,
    device,
    memory_size,
    option,
    positive_float,
    positive_int,
)
from .catalogue import GROUPS, PLOT_DPI, PLOT_FORMATS, PRECISIONS
from .choices import names
from .groups import add_normalize_arg, add_predict_unlabelled_args, add_unlabelled_args


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot eval`` (run by :func:`fewshot.cli.evaluate.run`)."""
    add_data_args(p)
    p.add_argument("--checkpoint", help="a checkpoint (best.pt or last.pt); the data settings of "
                   "its run (run.json beside it) are the defaults of the data flags")
    add_head_args(p)
    add_split_arg(p)
    g = p.add_argument_group("episodes (an existing --episodes-file supplies its own shape and "
                             "count)")
    g.add_argument("--way", type=positive_int, help=f"classes per episode (default: {SHAPE['way']})")
    g.add_argument("--shot", type=positive_int, help=f"support images per class (default: "
                   f"{SHAPE['shot']})")
    g.add_argument("--query", type=positive_int, help=f"query images per class (default: "
                   f"{SHAPE['query']})")
    g.add_argument("--episodes", type=positive_int, help=f"fixed episodes (default: "
                   f"{SHAPE['episodes']})")
    g.add_argument("--seed", type=int, default=0, help="seed of the fixed episodes")
    g.add_argument("--episodes-file", help="load the fixed episodes from this file, or save them "
                   "there if it does not exist, so every model is scored on the same episodes")
    g.add_argument("--episodes-per-pass", type=positive_int, help="episodes per forward pass "
                   "(default: as many as fit --max-memory)")
    p.add_argument("--batch-size", dest="episodes_per_pass", type=positive_int,
                   help=argparse.SUPPRESS)  # the old name of --episodes-per-pass
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    add_output_arg(p, "write the per-episode accuracies, mean, interval and provenance here (JSON)")
    add_quiet_arg(p)
    p.add_argument("--json", dest="output", help=argparse.SUPPRESS)  # the old name of --output
    add_unlabelled_args(p, refine=True)
    g = p.add_argument_group("calibration (expected calibration error, temperature scaling)")
    g.add_argument("--no-temperature", action="store_true", help="the calibration error of the "
                   "learner's own probabilities, not at the temperature the checkpoint records")
    g.add_argument("--fit-temperature", action="store_true", help="fit the temperature on these "
                   "episodes and report the calibration error before and after (use validation "
                   "episodes: --split val)")


# the episodes scored when neither the flags nor an existing --episodes-file say
SHAPE = {"way": 5, "shot": 1, "query": 15, "episodes": 600}


def add_head_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("heads fitted on each episode's support set")
    g.add_argument("--head", choices=names("head"), help="fit this head on the backbone of "
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


PREDICTION_FORMATS = ("tsv", "csv", "json")  # of fewshot predict's output


def predict_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot predict`` (run by :func:`fewshot.cli.predict.run`)."""
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint")
    p.add_argument("--support", required=True, help="folder of class folders of support images")
    p.add_argument("--query", required=True, help="folder of images to label")
    add_output_arg(p, "write the predictions to this file (default: print them)")
    p.add_argument("--pipeline", metavar="SETTINGS", help="how to read the image files, for a "
                   "checkpoint that does not record it (e.g. channels=1,size=28,resample=area,"
                   "invert=true); checkpoints written by fewshot train record it")
    p.add_argument("--format", choices=PREDICTION_FORMATS, default="tsv", help="output format")
    p.add_argument("--queries-per-pass", type=positive_int, help="query images per forward pass "
                   "(default: as many as fit --max-memory)")
    p.add_argument("--batch-size", dest="queries_per_pass", type=positive_int,
                   help=argparse.SUPPRESS)  # the old name of --queries-per-pass
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--no-convert", action="store_true",
                   help="refuse images whose channels differ from the model's")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or non-image files (with a warning) instead of failing")
    p.add_argument("--no-temperature", action="store_true", help="the learner's own "
                   "probabilities, not those calibrated by the temperature the checkpoint records")
    add_quiet_arg(p)
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    add_predict_unlabelled_args(p)


def demo_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot demo`` (run by :func:`fewshot.cli.demo.run`)."""
    p.add_argument("--seconds", type=positive_float, default=100, help="training time")
    p.add_argument("--episodes", type=positive_int, default=600, help="test episodes")
    p.add_argument("--out", default="runs/demo", help="run folder (an earlier demo's run there is "
                   "replaced; another run is refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32, bf16 or auto (bf16 on a CPU with bfloat16 units, else fp32)")
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    add_quiet_arg(p)


def embeddings_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot plot-embeddings`` (run by :func:`fewshot.cli.plot.run`)."""
    add_data_args(p)
    p.add_argument("--checkpoint", required=True, help="a fewshot checkpoint (its backbone)")
    add_split_arg(p)
    p.add_argument("--classes", type=positive_int, default=10, help="the first this many classes")
    p.add_argument("--per-class", type=positive_int, default=50, help="images per class (at most)")
    p.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="pca (torch) or tsne (needs scikit-learn)")
    add_output_arg(p, "image file to write (.png, .pdf, ...)", required=True)
    add_quiet_arg(p)


def curves_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot plot`` (run by :func:`fewshot.cli.curves.run`)."""
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run folder (the --out of fewshot "
                   "train or pretrain) or its metrics.jsonl; several are overlaid")
    p.add_argument("--output", "--out", required=True, metavar="FIGURE",
                   help=f"image file to write ({', '.join(PLOT_FORMATS)}; {PLOT_DPI} dpi)")
    add_quiet_arg(p)


def options_arguments(p: argparse.ArgumentParser) -> None:
    """``fewshot options`` (run by :func:`fewshot.cli.options.run`)."""
    p.add_argument("name", help="a method (fewshot train/pretrain --method), or with --of a head "
                   "or a dataset")
    p.add_argument("--of", choices=tuple(GROUPS), default="method",
                   help="which registry NAME is in")
    p.add_argument("--quiet", action="store_true", help="print the table only")
