"""Running a command: replaying a recorded run's settings, importing the command's running module
(and torch), and the one-line answer to every user error."""

from __future__ import annotations

import argparse
import warnings

from episodes import ImageFileError
from episodes.progress import set_progress

from ..engine import distributed
from ..engine.provenance import DATA_SETTINGS, checkpoint_run
from ..engine.runs import RunError, legacy_args, read_run
from . import COMMANDS, RECORDED, build_parser, function
from .data import pick_device
from .parser import Parser, fail, os_error_text

DISTRIBUTED = ("train", "pretrain", "eval")  # commands that run under torchrun
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, KeyError,
               ImageFileError, RunError)


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
            check_recorded(f"--config {known.config}", actions[key], value)
    command.set_defaults(**replayed)


def check_recorded(source: str, action: argparse.Action, value: object) -> None:
    """Raise :class:`RunError` unless ``value``, recorded for ``action`` in ``source`` (e.g.
    ``--config run.json``), passes the checks the flag's own value gets (its type and
    choices)."""
    flag = action.option_strings[0] if action.option_strings else action.dest
    values = value if isinstance(value, list) and action.nargs not in (None, "?") else [value]
    for v in values:
        if v is None or isinstance(v, bool) or isinstance(v, list | tuple):
            continue
        try:
            if action.type is not None and callable(action.type):
                action.type(str(v))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise RunError(f"{source}: its {flag} {v!r} is refused ({e}): correct it in "
                           f"the file or give {flag} on the command line") from None
        if action.choices is not None and v not in action.choices:
            raise RunError(f"{source}: its {flag} {v!r} is not one of "
                           f"{', '.join(map(str, action.choices))}: correct it in the file or "
                           f"give {flag} on the command line")


# commands that take a checkpoint's data settings
FROM_RUN = tuple(c for c, flag in RECORDED.items() if flag == "--checkpoint")


def checkpoint_defaults(parser: Parser, argv: list[str]) -> str | None:
    """For a command of :data:`FROM_RUN` given ``--checkpoint``: make the data settings of the
    checkpoint's run (``run.json`` beside it, :data:`~fewshot.engine.provenance.DATA_SETTINGS`)
    the command's defaults, so that ``fewshot eval --checkpoint RUN/best.pt`` reads the run's
    dataset; arguments given override them. A ``--dataset`` given that is not the run's takes
    none of them (they describe another dataset). Returns the line that says what was taken
    (None: nothing)."""
    if not argv or argv[0] not in FROM_RUN:
        return None
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--checkpoint")
    probe.add_argument("--dataset")
    known, _ = probe.parse_known_args(argv[1:])
    found = checkpoint_run(known.checkpoint) if known.checkpoint else None
    if found is None or "dataset" not in found[1]:  # no run.json, or a demo's (embedded data)
        return None
    path, recorded = found
    if known.dataset is not None and known.dataset != recorded["dataset"]:
        return None
    command = parser.subcommands[argv[0]]
    actions = {a.dest: a for a in command._actions}  # noqa: SLF001 - argparse has no public list
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    taken = {}
    for key in DATA_SETTINGS:
        action = actions.get(key)
        if action is None or key not in recorded or given & set(action.option_strings):
            continue
        value = recorded[key]
        if value == action.default or (value is None and action.default is None):
            continue
        check_recorded(f"--checkpoint {known.checkpoint}'s run {path}", action, value)
        taken[key] = value
    if not taken:
        return None
    command.set_defaults(**taken)
    return (f"data settings from {path} (flags given override them): "
            + " ".join(flag_text(actions[k], v) for k, v in taken.items()))


def flag_text(action: argparse.Action, value: object) -> str:
    """How the command line would give ``value`` for ``action``: ``--flag``, ``--flag V``."""
    flag = action.option_strings[0]
    if isinstance(value, bool):
        return flag
    return " ".join([flag, *map(str, value if isinstance(value, list | tuple) else [value])])


def unsaid(args: argparse.Namespace | None) -> str:
    """For an error before the command said which data settings it took from the checkpoint's
    run: that note, to end the error's line (the error may be in one of them)."""
    note = getattr(args, "data_note", None)
    return f" ({note})" if note else ""


def one_line_warning(message: Warning | str, category: type[Warning], *args: object,
                     **kwargs: object) -> str:
    """Warnings as ``warning: message`` lines (not Python's file, line and source)."""
    return f"warning: {' '.join(str(message).split())}\n"


def main(argv: list[str], parser: Parser | None = None) -> None:
    """Parse ``argv`` (a command and its arguments) with the command's ``parser`` (built when
    not given) and run the command; every user error ends it with one line and a non-zero
    status."""
    warnings.formatwarning = one_line_warning
    parser = parser or build_parser(argv[0])  # the command's arguments only
    args = None
    try:
        replay_defaults(parser, argv)
        taken = checkpoint_defaults(parser, argv)
        args = parser.parse_args(argv)
        args.data_note = taken  # said by the command once its inputs are checked (say_data_note)
        set_progress(not getattr(args, "quiet", False) and distributed.launched().main)
        if args.command in DISTRIBUTED and distributed.launched().active:
            distributed.init(pick_device(args.device),
                             getattr(args, "dist_timeout", distributed.DEFAULT_TIMEOUT))
        function(COMMANDS[args.command].run)(args)
        distributed.shutdown()  # after a failure the process exits without waiting for peers
    except OSError as e:  # a full disk, a read-only place, a missing file: named, with the fix
        fail(os_error_text(e) + unsaid(args))
    except USER_ERRORS as e:
        fail(str(e.args[0] if isinstance(e, KeyError) and e.args else e) + unsaid(args))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except RuntimeError as e:
        if not distributed.lost_peers(e):
            raise
        fail(distributed.failure(e, getattr(args, "out", None)))
