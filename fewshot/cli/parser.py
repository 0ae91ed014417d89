"""The command line's parser class and its one-line errors: light (no torch), so that
``fewshot --help`` and ``fewshot --version`` answer before anything heavy is imported."""

from __future__ import annotations

import argparse
import errno
import sys
from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """Help that states every default (unless the text already does, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default  # by identity: a default of 0 or 0.0 is shown, not taken for False
        if "default" in text or default is None or default is False or default == [] \
                or default is argparse.SUPPRESS or text is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage dump), exit status 2, and whose
    help shows every default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def os_error_text(e: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, and the fix."""
    if not e.filename:
        return str(e)
    fix = {errno.ENOSPC: "free space there or write elsewhere",
           errno.EDQUOT: "free space there or write elsewhere",
           errno.EACCES: "give a path you can write to (or change its permissions)",
           errno.EPERM: "give a path you can write to (or change its permissions)",
           errno.EROFS: "give a path on a writable disk"}.get(e.errno or 0, "check the path")
    return f"{e.filename}: {(e.strerror or type(e).__name__).lower()}: {fix}"


def fail(message: str, status: int = 1) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``status``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


def add_split_arg(p: argparse.ArgumentParser) -> None:
    """``--split``: the class split a command working on a trained model reads (default test,
    the held-out classes, for every such command)."""
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="class split to read")


def add_output_arg(p: argparse.ArgumentParser, what: str, required: bool = False) -> None:
    """``--output FILE``: the one file a command writes (``what``)."""
    p.add_argument("--output", metavar="FILE", required=required, help=what)


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output and no notes on "
                   "stderr (errors are still printed)")


def say_data_note(args: argparse.Namespace, main: bool = True) -> None:
    """Print, once and unless ``--quiet``, which data settings the command took from its
    checkpoint's run (:func:`fewshot.cli.dispatch.checkpoint_defaults`); call it once the
    command's inputs are checked (``main``: whether this process speaks, rank 0)."""
    note = getattr(args, "data_note", None)
    if note and main and not getattr(args, "quiet", False):
        print(note, file=sys.stderr)
    args.data_note = None
