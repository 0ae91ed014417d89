"""The ``fewshot`` command: demo, train, pretrain, eval, plot-embeddings, plot, predict.

Every command calls the library; there is one training loop and one evaluation. Every user error
ends the command with one line on stderr naming the input and the fix, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from episodes import ImageFileError
from episodes.progress import set_progress

from ..engine import distributed
from ..engine.runs import RunError, legacy_args, read_run
from . import curves, demo, evaluate, plot, predict, pretrain, train
from .args import Parser, fail, os_error_text, pick_device

COMMANDS = (demo, train, pretrain, evaluate, plot, curves, predict)  # one module per command
DISTRIBUTED = ("train", "pretrain", "eval")  # commands that run under torchrun
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, KeyError,
               ImageFileError, RunError)


def build_parser() -> Parser:
    parser = Parser(prog="fewshot", description="Few-shot learning: meta-train a learner on a "
                    "dataset's train classes, score it on fixed episodes of held-out classes, "
                    "and label new images from a few labelled ones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
        parser.subcommands[command.NAME] = p
    return parser


NOT_REPLAYED = ("out", "overwrite", "resume", "config")  # where and how to write: said anew


def replay_defaults(parser: Parser, argv: list[str]) -> None:
    """For ``train --config RUN_JSON``: make the recorded settings the train command's defaults,
    so the run is replayed and arguments given on the command line override them.

    Where the replay writes is never taken from the file: ``--out`` must be given on the command
    line, and ``--overwrite``/``--resume`` apply only when given there. Every recorded value is
    checked as the flag's own value would be."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config")
    probe.add_argument("--out")
    known, _ = probe.parse_known_args(argv[1:])
    if not argv or argv[0] not in ("train", "pretrain") or not known.config:
        return
    try:
        record = read_run(known.config)
    except RunError as e:
        raise RunError(f"--config: {e}") from None
    if record.get("command", "train") != argv[0]:
        raise RunError(f"{known.config} is the record of a fewshot {record['command']} run: "
                       f"replay it with fewshot {record['command']} --config")
    if known.out is None:
        raise RunError(f"--config {known.config} replays a run's settings but not its folder: "
                       f"give --out (a new folder, or the run's own with --resume to continue it)")
    recorded = legacy_args(record["args"])
    spec = record.get("spec") or {}
    recorded["option"] = [(k, str(v)) for k, v in (spec.get("options") or {}).items()]
    recorded["augment_option"] = [(k, ",".join(map(str, v)) if isinstance(v, list | tuple)
                                   else str(v)) for k, v in recorded.get("augment_option", {}).items()]
    for flag in ("method", "backbone"):
        if flag in spec and argv[0] == "train":
            recorded[flag] = spec[flag]
    command = parser.subcommands[argv[0]]
    actions = {a.dest: a for a in command._actions}  # noqa: SLF001 - argparse has no public list
    replayed = {k: v for k, v in recorded.items() if k in actions and k not in NOT_REPLAYED}
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    for key, value in replayed.items():
        if not given & set(actions[key].option_strings):  # a flag given overrides the record
            check_recorded(known.config, actions[key], value)
    command.set_defaults(**replayed)


def check_recorded(path: str, action: argparse.Action, value: object) -> None:
    """Raise :class:`RunError` unless ``value``, recorded for ``action`` in ``path``, passes the
    checks the flag's own value gets (its type and choices)."""
    flag = action.option_strings[0] if action.option_strings else action.dest
    values = value if isinstance(value, list) and action.nargs not in (None, "?") else [value]
    for v in values:
        if v is None or isinstance(v, bool) or isinstance(v, list | tuple):
            continue
        try:
            if action.type is not None and callable(action.type):
                action.type(str(v))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise RunError(f"--config {path}: its {flag} {v!r} is refused ({e}): correct it in "
                           f"the file or give {flag} on the command line") from None
        if action.choices is not None and v not in action.choices:
            raise RunError(f"--config {path}: its {flag} {v!r} is not one of "
                           f"{', '.join(map(str, action.choices))}: correct it in the file or "
                           f"give {flag} on the command line")


def one_line_warning(message: Warning | str, category: type[Warning], *args: object,
                     **kwargs: object) -> str:
    """Warnings as ``warning: message`` lines (not Python's file, line and source)."""
    return f"warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = one_line_warning
    parser = build_parser()
    args = None
    try:
        replay_defaults(parser, argv)
        args = parser.parse_args(argv)
        set_progress(not getattr(args, "quiet", False) and distributed.launched().main)
        if args.command in DISTRIBUTED and distributed.launched().active:
            distributed.init(pick_device(args.device),
                             getattr(args, "dist_timeout", distributed.DEFAULT_TIMEOUT))
        args.func(args)
        distributed.shutdown()  # after a failure the process exits without waiting for peers
    except OSError as e:  # a full disk, a read-only place, a missing file: named, with the fix
        fail(os_error_text(e))
    except USER_ERRORS as e:
        fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except RuntimeError as e:
        if not distributed.lost_peers(e):
            raise
        fail(distributed.failure(e, getattr(args, "out", None)))
