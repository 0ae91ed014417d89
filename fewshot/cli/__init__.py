"""The ``fewshot`` command: demo, train, pretrain, eval, plot-embeddings, plot, predict, options.

Every command calls the library; there is one training loop and one evaluation. Every user error
ends the command with one line on stderr naming the input and the fix, and a non-zero exit status.

This module is light: ``fewshot``, ``fewshot --help``, ``fewshot --version`` and a mistyped
command are answered from :data:`COMMANDS` without importing torch. A command's module (and
torch) is imported by name when the command is parsed or run (:func:`build_parser`,
:mod:`fewshot.cli.dispatch`): a dispatch table, not an import hidden to dodge a cycle.
"""

from __future__ import annotations

import sys
from importlib import import_module

from ..version import __version__
from .parser import Parser

# command -> (its module, which has add_arguments(parser) and run(args); its one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fewshot.cli.demo", "train ProtoNet on the embedded dataset and score it on held-out "
             "classes (a few minutes on a laptop CPU)"),
    "train": ("fewshot.cli.train", "meta-train a learner on a dataset's train classes"),
    "pretrain": ("fewshot.cli.pretrain", "pre-train a backbone with a classifier over all train "
                 "classes on ordinary mini-batches, or self-supervised on their images alone "
                 "(then: fewshot eval --head, or fewshot train --init)"),
    "eval": ("fewshot.cli.evaluate", "score a checkpoint on fixed episodes (mean, 95%% interval)"),
    "plot-embeddings": ("fewshot.cli.plot", "a 2-D projection (PCA or t-SNE) of a checkpoint's "
                        "backbone features of a split's images, coloured by class"),
    "plot": ("fewshot.cli.curves", "draw the training curves of runs (loss, training and "
             "validation accuracy against steps and minutes) into one figure"),
    "predict": ("fewshot.cli.predict", "label query images from a few labelled support images"),
    "options": ("fewshot.cli.options", "list the typed options of a method (or of a head or a "
                "dataset): name, type, default, bounds, meaning"),
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
    for name, (_, text) in COMMANDS.items():
        parser.subcommands[name] = sub.add_parser(name, help=text, description=text[0].upper()
                                                  + text[1:].replace("%%", "%") + ".")
    return parser, sub


def build_parser(only: str | None = None) -> Parser:
    """The full parser: every command's arguments (this imports every command's module), or,
    with ``only``, that command's arguments alone (the others stay empty: only its module is
    imported)."""
    parser, _ = top_parser()
    for name, (module, _) in COMMANDS.items():
        if only is not None and name != only:
            continue
        command = import_module(module)
        p = parser.subcommands[name]
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """``fewshot ARGS``: help, the version and unknown commands from the light parser; a command
    by :func:`fewshot.cli.dispatch.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top_parser()[0].parse_args(argv)  # prints the help or the version, or one-line error
    import_module("fewshot.cli.dispatch").main(argv)
