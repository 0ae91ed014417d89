"""Progress output that suits where it goes: a tqdm bar on a terminal, nothing (or plain lines,
see :class:`fewshot.train`'s log) when output is a file or pipe, and nothing at all once
:func:`set_progress` turned it off (``--quiet``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm  # bars only ever go to a terminal: never tqdm.auto's notebook widget

_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn every progress bar and progress line of ``episodes`` and ``fewshot`` on or off."""
    global _enabled
    _enabled = bool(enabled)


def progress_enabled() -> bool:
    return _enabled


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr), where a bar redraws in place."""
    return sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, total: int | None = None, min_total: int = 0,
        enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, shown only when ``enabled``, on a terminal, when progress is on, and for at
    least ``min_total`` items (a bar written into a log file is one long line of carriage
    returns)."""
    n = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    small = n is not None and n < min_total
    return tqdm(iterable, total=total, disable=not (enabled and _enabled and interactive()) or small,
                **kwargs)
