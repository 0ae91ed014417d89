"""What a training run reports as it goes: a tqdm bar on a terminal, plain periodic lines when
output goes to a file or pipe, and every logged value as one JSON line in ``metrics.jsonl``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from episodes.io import finite_json
from episodes.progress import bar, interactive, progress_enabled

METRICS_FILE = "metrics.jsonl"


def _line(entry: dict) -> str:
    """One strict JSON line (a non-finite value is written as null, never as bare ``NaN``)."""
    return json.dumps(finite_json(entry), allow_nan=False) + "\n"


class TrainLog:
    """Reports the records of a run's history.

    Args:
        total: the run's steps (None when it ends by time); initial: the step it starts from.
        history: the run's records so far (restored on resume): ``metrics.jsonl`` is rewritten
            from them, so records logged after the last checkpoint of a killed run are dropped.
        folder: where ``metrics.jsonl`` goes (None: nowhere).
        enabled: report progress at all (``metrics.jsonl`` is written regardless).
        every_seconds: least time between two plain lines (validation lines always print).
    """

    def __init__(self, total: int | None, initial: int, history: list[dict],
                 folder: str | Path | None = None, enabled: bool = True,
                 every_seconds: float = 10.0) -> None:
        self.history, self.total, self.every = history, total, every_seconds
        self.lines = enabled and progress_enabled() and not interactive()
        self.bar = bar(total=total, initial=initial, desc="training", enabled=enabled)
        self.last_line = time.monotonic()
        self.metrics = Path(folder) / METRICS_FILE if folder is not None else None
        if self.metrics is not None:
            self.metrics.parent.mkdir(parents=True, exist_ok=True)
            self.metrics.write_text("".join(_line(r) for r in history))

    def record(self, entry: dict) -> None:
        """Add ``entry`` (``step``, ``seconds`` and values such as ``loss``, ``acc``,
        ``val_acc``) to the history, ``metrics.jsonl``, the bar or a plain line."""
        self.history.append(entry)
        if self.metrics is not None:
            with open(self.metrics, "a") as f:
                f.write(_line(entry))
        values = {k: v for k, v in entry.items() if k not in ("step", "seconds")}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
        now = time.monotonic()
        if self.lines and ("val_acc" in entry or now - self.last_line >= self.every):
            self.last_line = now
            of = f"/{self.total}" if self.total else ""
            text = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"step {entry['step']}{of}  {text}  ({entry['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)

    def update(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
