"""The ``fewshot`` command: demo, train, pretrain, eval, plot-embeddings, plot, predict, options.

Every command calls the library; there is one training loop and one evaluation. Every user error
ends the command with one line on stderr naming the input and the fix, and a non-zero exit status.

This module is light: ``fewshot``, ``fewshot --help``, ``fewshot --version`` and a mistyped
command are answered from :data:`COMMANDS` without importing torch, and so are a command's
``--help`` and its mistyped flags: its arguments are added by a light function (no torch: the
names it offers come from :mod:`fewshot.cli.choices`), and the module that runs it (and torch) is
imported by name once its arguments are parsed (:mod:`fewshot.cli.dispatch`): a dispatch table,
not an import hidden to dodge a cycle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any, NamedTuple

from ..version import __version__
from .parser import Parser


class Command(NamedTuple):
    """A command: ``arguments``, the function that adds its arguments to its parser (light: no
    torch), and ``run``, the function that runs it on the parsed arguments, each as
    ``module:function``; ``help``, its one-line help."""

    arguments: str
    run: str
    help: str


FLAGS = "fewshot.cli.flags"  # the arguments of the commands other than train and pretrain
COMMANDS: dict[str, Command] = {
    "demo": Command(f"{FLAGS}:demo_arguments", "fewshot.cli.demo:run",
                    "train ProtoNet on the embedded dataset and score it on held-out classes (a "
                    "few minutes on a laptop CPU)"),
    "train": Command("fewshot.cli.train:add_arguments", "fewshot.cli.recipe:run",
                     "meta-train a learner on a dataset's train classes"),
    "pretrain": Command("fewshot.cli.pretrain:add_arguments", "fewshot.cli.recipe:run",
                        "pre-train a backbone with a classifier over all train classes on "
                        "ordinary mini-batches, or self-supervised on their images alone (then: "
                        "fewshot eval --head, or fewshot train --init)"),
    "eval": Command(f"{FLAGS}:eval_arguments", "fewshot.cli.evaluate:run",
                    "score a checkpoint on fixed episodes (mean, 95%% interval)"),
    "plot-embeddings": Command(f"{FLAGS}:embeddings_arguments", "fewshot.cli.plot:run",
                               "a 2-D projection (PCA or t-SNE) of a checkpoint's backbone "
                               "features of a split's images, coloured by class"),
    "plot": Command(f"{FLAGS}:curves_arguments", "fewshot.cli.curves:run",
                    "draw the training curves of runs (loss, training and validation accuracy "
                    "against steps and minutes) into one figure"),
    "predict": Command(f"{FLAGS}:predict_arguments", "fewshot.cli.predict:run",
                       "label query images from a few labelled support images"),
    "options": Command(f"{FLAGS}:options_arguments", "fewshot.cli.options:run",
                       "list the typed options of a method (or of a head or a dataset): name, "
                       "type, default, bounds, meaning"),
}
DESCRIPTION = ("Few-shot learning: meta-train a learner on a dataset's train classes, score it on "
               "fixed episodes of held-out classes, and label new images from a few labelled ones.")


def top_parser() -> tuple[Parser, object]:
    """The ``fewshot`` parser with ``--version`` and one sub-parser per command, the sub-parsers
    still without their arguments (light); and the sub-parsers' action."""
    parser = Parser(prog="fewshot", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for name, (_, _, text) in COMMANDS.items():
        parser.subcommands[name] = sub.add_parser(name, help=text, description=text[0].upper()
                                                  + text[1:].replace("%%", "%") + ".")
    return parser, sub


def function(name: str) -> Callable[..., Any]:
    """The function ``module:function`` names (importing its module)."""
    module, _, attr = name.partition(":")
    return getattr(import_module(module), attr)


def build_parser(only: str | None = None) -> Parser:
    """The full parser: every command's arguments, or, with ``only``, that command's arguments
    alone (the others stay empty). Light: no command's running module is imported."""
    parser, _ = top_parser()
    for name, command in COMMANDS.items():
        if only is None or name == only:
            function(command.arguments)(parser.subcommands[name])
    return parser


# commands that read a recorded run's settings before parsing -> the flag that names it
# (fewshot.cli.dispatch.replay_defaults, checkpoint_defaults)
RECORDED = {"train": "--config", "pretrain": "--config", "eval": "--checkpoint",
            "predict": "--checkpoint", "plot-embeddings": "--checkpoint"}


def reads_record(argv: list[str]) -> bool:
    """Whether the command ``argv`` runs takes defaults from a recorded run (a flag of
    :data:`RECORDED` is given): then it is parsed once that run is read."""
    flag = RECORDED.get(argv[0])
    if flag is None:
        return False
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument(flag)
    try:
        known, _ = probe.parse_known_args(argv[1:])
    except argparse.ArgumentError:  # the flag without its value: the command's parser says so
        return False
    return getattr(known, flag[2:]) is not None


def main(argv: list[str] | None = None) -> None:
    """``fewshot ARGS``: help, the version and unknown commands from the light parser; a
    command's help and its flag errors from its light parser; the command by
    :func:`fewshot.cli.dispatch.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top_parser()[0].parse_args(argv)  # prints the help or the version, or one-line error
    parser = build_parser(argv[0])
    if not reads_record(argv):
        parser.parse_args(argv)  # --help, or a flag error in one line: still without torch
    import_module("fewshot.cli.dispatch").main(argv, parser)
