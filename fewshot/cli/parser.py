"""The command line's parser class and its one-line errors: light (no torch), so that
``fewshot --help`` and ``fewshot --version`` answer before anything heavy is imported."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """Help that states every default (unless the text already does, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
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


def fail(message: str, status: int = 1) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``status``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)
