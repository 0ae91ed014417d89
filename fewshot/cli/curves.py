"""``fewshot plot``: the training curves of one or more runs (their ``metrics.jsonl``) in one
figure: loss, training accuracy and validation accuracy against steps and against minutes
(:mod:`fewshot.engine.curves`). (Its arguments: :func:`fewshot.cli.flags.curves_arguments`.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.curves import FORMATS, metrics_path, plot_curves, pyplot, read_metrics, run_labels
from ..engine.runs import RUN_FILES, run_files
from .args import not_an_input, output_file


def check_out(out: str, runs: list[str]) -> None:
    """Refuse an ``--output`` that is not an image name, cannot be written, or is a file of one of
    the runs."""
    output_file("--output", out)
    if Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"--output {out}: give an image file name ending in "
                         f"{', '.join(FORMATS)}")
    for run in runs:
        folder = metrics_path(run).parent
        not_an_input("--output", out, {str(folder / name): folder / name
                                    for name in {*RUN_FILES, *run_files(folder)}})


def run(args: argparse.Namespace) -> None:
    check_out(args.output, args.runs)
    pyplot()  # a missing matplotlib is said before anything is read
    labels = run_labels(args.runs)
    records = {label: read_metrics(run) for label, run in zip(labels, args.runs, strict=True)}
    if not any(records.values()):
        raise ValueError(f"{', '.join(args.runs)}: no records yet (a run records its loss every "
                         f"--log-every steps): plot it later")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    plot_curves(records, args.output)
    print(f"wrote {args.output}: the curves of {len(records)} run(s)")
