"""Progress output that suits where it goes: a tqdm bar on a terminal, a plain heartbeat line at
least every :data:`HEARTBEAT` seconds when output is a file or pipe (what it is doing, how far,
the rate and the time left), and nothing at all once :func:`set_progress` turned it off
(``--quiet``)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm  # bars only ever go to a terminal: never tqdm.auto's notebook widget

HEARTBEAT = 10.0  # seconds: the longest a command stays silent off a terminal
clock = time.monotonic  # the heartbeat's clock (a test may replace it)
_enabled = True
_last_said = clock()  # when the last progress line was printed (or the program started)
_print_lock = threading.Lock()  # a heartbeat thread and the main thread never mix their lines


def set_progress(enabled: bool) -> None:
    """Turn every progress bar and progress line of ``episodes`` and ``fewshot`` on or off."""
    global _enabled
    _enabled = bool(enabled)


def progress_enabled() -> bool:
    return _enabled


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr), where a bar redraws in place."""
    return sys.stderr.isatty()


def say(text: str) -> None:
    """Print one progress line on stderr (unless progress is off), above a terminal's bars."""
    global _last_said
    if not _enabled:
        return
    _last_said = clock()
    if interactive():
        tqdm.write(text, file=sys.stderr)
    else:
        with _print_lock:
            print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 6000 else f"{seconds / 3600:.1f} h"


class Heartbeat:
    """The plain-line stand-in for a tqdm bar off a terminal: the same calls (iteration,
    ``update``, ``set_postfix``, ``set_description``, ``close``, ``with``), and a line such as
    ``training: 40/300 (13%), 1.9 step/s, 2.3 min left, 21 s in, loss 1.2310`` whenever
    ``every`` seconds passed since the last progress line of the program (this heartbeat's, an
    earlier one's, or another line): at an update, and from a background thread when no update
    came in time (then the line says how long the current item has been running), so while
    heartbeats run, lines are never more than ``every`` seconds apart, even across several jobs
    in a row (the splits of a dataset being decoded). A job that starts after a longer silence
    speaks ``every / 2`` seconds after it began at the earliest: a short one says nothing."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str = "working", initial: int = 0, unit: str = "it",
                 every: float = HEARTBEAT) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start = initial
        self.every, self.postfix = every, ""
        self.began = self.last_update = clock()
        # silent since: the program's last line if it was recent (jobs in a row keep one
        # cadence), else half a period before this job began (a short job says nothing)
        fresh = self.began - _last_said < every
        self.quiet_since = _last_said if fresh else self.began - every / 2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.last_update = clock()
        self.tick(self.last_update)

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = False,
                    **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in {**(values or {}), **kwargs}.items())

    def set_postfix_str(self, text: str = "", refresh: bool = False) -> None:
        self.postfix = text

    def set_description(self, desc: str | None = None, refresh: bool = False) -> None:
        self.desc = desc or ""

    def write(self, text: str) -> None:
        say(text)

    def text(self, now: float) -> str:
        """The heartbeat line at time ``now`` (``clock()``)."""
        done, elapsed = self.n - self.start, now - self.began
        parts = [f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.n} {self.unit}"]
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s"
                         if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            if self.total:
                parts.append(f"{duration(max(self.total - self.n, 0) / rate)} left")
        parts.append(f"{duration(elapsed)} in")
        if now - self.last_update >= self.every:  # one item is taking long: say so
            parts.append(f"the current one running for {duration(now - self.last_update)}")
        return f"{self.desc}: {', '.join(parts)}" + (f", {self.postfix}" if self.postfix else "")

    def line(self, now: float) -> None:
        global _last_said
        _last_said = now
        say(self.text(now))

    def due(self) -> float:
        """When the next line is due: ``every`` seconds after the last one."""
        return max(self.quiet_since, _last_said) + self.every

    def tick(self, now: float) -> None:
        """A line if it is due."""
        if now >= self.due():
            self.line(now)

    def _beat(self) -> None:
        """The background thread: wakes when the next line is due."""
        while not self._stop.wait(max(self.due() - clock(), 0.01)):
            self.tick(clock())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


Meter = tqdm | Heartbeat  # what :func:`bar` returns: update(n), set_description(...), close()


def bar(iterable: Iterable | None = None, *, total: int | None = None, min_total: int = 0,
        enabled: bool = True, **kwargs: Any) -> Meter:
    """A tqdm bar on a terminal (for at least ``min_total`` items: small jobs get none), a
    :class:`Heartbeat` off a terminal, or a silent tqdm when not ``enabled`` or progress is off.

    ``kwargs`` go to tqdm (``desc``, ``initial``, ``unit`` and ``every`` also to the heartbeat)."""
    n = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    on = enabled and _enabled
    if on and not interactive():
        keep = {k: kwargs[k] for k in ("desc", "initial", "unit", "every") if k in kwargs}
        return Heartbeat(iterable, total=n, **keep)
    kwargs.pop("every", None)
    small = n is not None and n < min_total
    return tqdm(iterable, total=total, disable=not (on and interactive()) or small, **kwargs)
