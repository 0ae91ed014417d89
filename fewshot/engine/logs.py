"""What a training run reports as it goes.

Every record (``step``, ``seconds`` of training and values such as ``loss``, ``acc``, ``val_acc``)
goes to the run folder three ways: one strict JSON line in ``metrics.jsonl``, one row of
``metrics.csv``, and, with ``tensorboard=True``, TensorBoard scalars under ``tensorboard/``. All
three are rewritten from the run's history when a run starts or resumes, so a resumed run has
each record exactly once. Progress goes to the terminal as a tqdm bar (validation results as
lines above it), or off a terminal as a heartbeat line at least every 10 s
(:class:`episodes.progress.Heartbeat`) and one line per validation.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from episodes.io import atomic_write_text, finite_json
from episodes.progress import bar, say

from . import distributed

METRICS_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
PREVIEW_FILES = "preview-step*.png"  # generative pre-training's images at each validation
LOG_EVERY = 10  # default steps between two training records (the last step is always recorded)
FIRST_COLUMNS = ("step", "seconds", "loss", "acc", "val_acc")  # metrics.csv's first columns
INSTALL_TENSORBOARD = "pip install 'fewshot[tensorboard]'"


def preview_file(step: int) -> str:
    """The name of the preview image written at ``step`` (one of :data:`PREVIEW_FILES`)."""
    return f"preview-step{step:06d}.png"


def _line(entry: dict) -> str:
    """One strict JSON line (a non-finite value is written as null, never as bare ``NaN``)."""
    return json.dumps(finite_json(entry), allow_nan=False) + "\n"


def csv_columns(records: Iterable[dict]) -> list[str]:
    """``metrics.csv``'s header: :data:`FIRST_COLUMNS`, then every other key of ``records`` in
    the order it first appears."""
    columns = list(FIRST_COLUMNS)
    for r in records:
        columns += [k for k in r if k not in columns]
    return columns


def _csv_text(records: Iterable[dict], columns: list[str], header: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard(flag: str = "--tensorboard") -> None:
    """Raise ``ValueError`` (one line, with the fix) unless the tensorboard package is installed."""
    if not tensorboard_available():
        raise ValueError(f"{flag} needs the tensorboard package: {INSTALL_TENSORBOARD}, or leave "
                         f"out {flag} (metrics.jsonl and metrics.csv are written regardless)")


def tensorboard_writer(folder: Path) -> Any:
    """A ``SummaryWriter`` writing into ``folder`` (emptied first: the run's history is
    written anew)."""
    require_tensorboard()
    # imported here: torch.utils.tensorboard fails to import without the optional package
    from torch.utils.tensorboard import SummaryWriter
    shutil.rmtree(folder, ignore_errors=True)
    return SummaryWriter(str(folder))


class TrainLog:
    """Reports the records of a run's history.

    Args:
        total: the run's steps (None when it ends by time); initial: the step it starts from.
        history: the run's records so far (restored on resume): the run files are rewritten
            from them, so records logged after the last checkpoint of a killed run are dropped.
        folder: where ``metrics.jsonl``, ``metrics.csv`` and ``tensorboard/`` go (None: nowhere).
        enabled: report progress at all (the files are written regardless).
        tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
        every_seconds: longest silence off a terminal (validation lines always print).
    """

    def __init__(self, total: int | None, initial: int, history: list[dict],
                 folder: str | Path | None = None, enabled: bool = True,
                 tensorboard: bool = False, every_seconds: float = 10.0) -> None:
        self.history, self.enabled, self.latest = history, enabled, {}
        self.bar = bar(total=total, initial=initial, desc="training", unit="step",
                       enabled=enabled, every=every_seconds)
        self.folder = Path(folder) if folder is not None else None
        self.columns = csv_columns(history)
        self.board = None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / METRICS_FILE).write_text("".join(_line(r) for r in history))
            self._rewrite_csv()
            if tensorboard:
                self.board = tensorboard_writer(self.folder / TENSORBOARD_DIR)
                for r in history:
                    self._board(r)

    def _rewrite_csv(self) -> None:
        atomic_write_text(_csv_text(self.history, self.columns, True), self.folder / CSV_FILE)

    def _board(self, entry: dict) -> None:
        for k, v in entry.items():
            if k != "step":
                self.board.add_scalar(k, v, entry["step"])

    def record(self, entry: dict) -> None:
        """Add ``entry`` (``step``, ``seconds`` and values such as ``loss``, ``acc``,
        ``val_acc``) to the history and the run files, the bar, and a validation's to a line."""
        self.history.append(entry)
        if self.folder is not None:
            with open(self.folder / METRICS_FILE, "a") as f:
                f.write(_line(entry))
            if set(entry) - set(self.columns):  # a new column: the header changes
                self.columns = csv_columns(self.history)
                self._rewrite_csv()
            else:
                with open(self.folder / CSV_FILE, "a", newline="") as f:
                    f.write(_csv_text([entry], self.columns, False))
            if self.board is not None:
                self._board(entry)
                self.board.flush()
        values = {k: v for k, v in entry.items() if k not in ("step", "seconds")}
        self.latest.update(values)  # the bar shows the latest value of each
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in self.latest.items()}, refresh=False)
        if self.enabled and any(k.startswith("val_") for k in entry):
            of = f"/{self.bar.total}" if self.bar.total else ""
            text = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
            say(f"step {entry['step']}{of}  {text}  ({entry['seconds']:.0f} s)")

    def update(self) -> None:
        self.bar.update(1)

    def doing(self, what: str) -> None:
        """Name what the run is doing now on the bar or heartbeat (``training``, ``validating``)."""
        self.bar.set_description(what, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.board is not None:
            self.board.close()


class RunningMeans:
    """Sums of each step's ``[loss, accuracy]`` since the last record, kept on the device
    (reading them waits for it: only when a record is due).

    Args:
        every: steps between two records (:meth:`due`; the last step is always due).
        state: :meth:`state` of the checkpoint a run resumes from, so that the first record
            after resuming averages the same steps an uninterrupted run's does.
        main: this process is rank 0 (which alone holds the saved sums of a distributed run).
    """

    def __init__(self, device: torch.device, every: int, state: dict | None = None,
                 main: bool = True) -> None:
        self.every = every
        self.sums = torch.zeros(2, device=device)
        self.count = int(state["count"]) if state else 0
        if state and main:
            self.sums = torch.tensor(state["sums"], dtype=torch.float32, device=device)

    def add(self, values: Tensor) -> None:
        """Add one step's ``[loss, accuracy]`` (a float tensor ``[2]`` on the device)."""
        self.sums += values
        self.count += 1

    def due(self, step: int, last: bool) -> bool:
        return self.count > 0 and (step % self.every == 0 or last)

    def take(self, ctx: distributed.Context) -> tuple[float, float, int]:
        """The mean loss and accuracy over the steps since the last record (of every rank), and
        how many steps; the sums start again from zero."""
        if ctx.active:
            distributed.all_reduce_([self.sums])
        loss, acc = (self.sums / self.count).tolist()
        count, self.count = self.count, 0
        self.sums.zero_()
        return loss, acc, count

    def state(self, ctx: distributed.Context) -> dict:
        """What a checkpoint keeps (every rank must call this in a distributed run: rank 0 then
        holds the sums of all)."""
        if ctx.active and self.count:
            distributed.all_reduce_([self.sums])
            if not ctx.main:
                self.sums.zero_()
        return {"sums": self.sums.tolist(), "count": self.count}
