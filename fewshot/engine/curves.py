"""Training curves of run folders (``fewshot plot``): the records of ``metrics.jsonl``
(:mod:`fewshot.engine.logs`) drawn as training loss, training accuracy and validation accuracy
against steps and against minutes of training, several runs overlaid.

matplotlib is an optional dependency (the ``plot`` extra, also in ``notebooks``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .logs import METRICS_FILE

PANELS = (("loss", "training loss"), ("acc", "training accuracy"),
          ("val_acc", "validation accuracy"))
AXES = (("step", "step"), ("minutes", "minutes of training"))
FORMATS = (".png", ".svg", ".pdf")
DPI = 150
INSTALL_MATPLOTLIB = "pip install 'fewshot[plot]'"


def pyplot() -> Any:
    """``matplotlib.pyplot`` drawing into files (the Agg backend), or a one-line ``ValueError``
    with the install command when matplotlib is missing."""
    try:
        # imported here: matplotlib is optional, and slow to import for commands that do not draw
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(f"plotting needs matplotlib: {INSTALL_MATPLOTLIB}") from None
    return plt


def metrics_path(run: str | os.PathLike) -> Path:
    """``metrics.jsonl`` of a run folder (or the file itself), with a one-line error naming the
    fix when there is none."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run} has no {METRICS_FILE}: give a run folder that fewshot "
                                f"train or pretrain wrote (its --out), or its {METRICS_FILE}")
    return path


def read_metrics(run: str | os.PathLike) -> list[dict]:
    """The records of a run (a run folder or its ``metrics.jsonl``), in order; ``null`` (a
    non-finite value) is read as NaN. A last line still being written (no newline yet) is left
    out, so a running training can be read."""
    path = metrics_path(run)
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is not a whole record yet
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_refuse)
        except ValueError as e:
            raise ValueError(f"{path} line {i} is not a JSON record ({e}): give a "
                             f"{METRICS_FILE} that fewshot wrote") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path} line {i} is not a training record (no step): give a "
                             f"{METRICS_FILE} that fewshot wrote")
        records.append({k: math.nan if v is None else v for k, v in record.items()})
    return records


def _refuse(constant: str) -> None:
    raise ValueError(f"bare {constant} is not JSON")


def series(records: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of the records holding ``key``; ``x`` is ``step`` or ``minutes`` (of
    training, from the records' ``seconds``)."""
    xs, ys = [], []
    for r in records:
        if key in r:
            xs.append(r["step"] if x == "step" else r.get("seconds", math.nan) / 60)
            ys.append(float(r[key]))
    return xs, ys


def run_labels(runs: list[str]) -> list[str]:
    """Each run's folder name, or the path as given where two runs share a name."""
    names = [Path(os.path.normpath(r)).name if Path(r).is_dir() else
             Path(os.path.normpath(r)).parent.name for r in runs]
    return [n if names.count(n) == 1 and n else r for n, r in zip(names, runs, strict=True)]


def plot_curves(runs: Mapping[str, list[dict]], path: str | os.PathLike) -> None:
    """Draw the records of ``runs`` (label -> records) into the image file ``path`` (.png, .svg
    or .pdf, :data:`DPI` dots per inch): a row of panels against steps, a row against minutes,
    one colour per run, a legend of the labels."""
    plt = pyplot()
    fig, axes = plt.subplots(len(AXES), len(PANELS), figsize=(5 * len(PANELS), 3.6 * len(AXES)),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for row, (x, xlabel) in enumerate(AXES):
        for col, (key, name) in enumerate(PANELS):
            ax = axes[row][col]
            drawn = False
            for i, (label, records) in enumerate(runs.items()):
                xs, ys = series(records, key, x)
                if xs:
                    ax.plot(xs, ys, color=colours(i % colours.N), label=label,
                            marker="o" if key.startswith("val_") or len(xs) < 20 else None,
                            markersize=3)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                        transform=ax.transAxes, color="grey")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}  # one entry per run, from whichever panel drew it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels = [label for label in runs if label in legend]
    if labels:
        fig.legend([legend[label] for label in labels], labels, loc="upper center",
                   ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
