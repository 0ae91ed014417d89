"""Rendering helpers of the benchmark grid (``grid.py``): the text of durations, accuracies,
paired tests and time-to-accuracy curves in Markdown tables, and :func:`splice_blocks`, which
writes rendered text into a Markdown file between its ``<!-- NAME:start/end -->`` markers."""

from __future__ import annotations

from pathlib import Path

from common import p_text


def duration(seconds: float | None) -> str:
    """``"42 s"`` under ten minutes, else ``"17 min"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def mean_ci(cell: dict) -> str:
    """A cell's mean accuracy with its 95% interval, in percent: ``"97.12 +- 0.34"``."""
    return f"{100 * cell['mean']:.2f} +- {100 * cell['ci95']:.2f}"


def difference(test: dict) -> str:
    """A paired test's mean difference with its 95% interval, in points: ``"+1.20 +- 0.40"``."""
    return f"{100 * test['mean_diff']:+.2f} +- {100 * test['ci95']:.2f}"


def wall_minutes(results: dict) -> float:
    """Minutes of wall time over every call recorded in ``results``."""
    return sum(c["wall_seconds"] for c in results.get("calls", [])) / 60


def curve_text(curve: list[dict], setting: str) -> str:
    """A time-to-accuracy curve on one line: ``"0.8 -> 91.85, 7.53 -> 96.93"`` (training
    minutes -> test accuracy %)."""
    return ", ".join(f"{p['train_minutes']:g} -> {100 * p['accuracy'][setting]:.2f}"
                     for p in curve if setting in p["accuracy"])


def curve_table(curve: list[dict], settings: list[str]) -> list[str]:
    """A time-to-accuracy curve as a Markdown table: a row per point (training minutes, steps,
    the test accuracy % of each setting, the test episodes scored)."""
    lines = ["| training minutes | steps | " + " | ".join(f"{s} %" for s in settings)
             + " | test episodes |", "|---|---|" + "---|" * len(settings) + "---|"]
    for p in curve:
        accs = [f"{100 * p['accuracy'][s]:.2f}" if s in p["accuracy"] else "-" for s in settings]
        lines.append(f"| {p['train_minutes']:g} | {p['steps']:,} | " + " | ".join(accs)
                     + f" | {p['episodes']} |")
    return lines


def paired_row(test: dict, digits: int = 2) -> str:
    """A paired test's difference, t-test p and Wilcoxon p as Markdown table cells."""
    return (f"{difference(test)} | {p_text(test['t_test_p'], digits)} | "
            f"{p_text(test['wilcoxon_p'], digits)}")


def splice_blocks(path: Path, blocks: dict[str, str]) -> list[str]:
    """For each marker name -> text of ``blocks`` that ``path`` has, replace what lies between
    ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` (each once, start before end) with the
    text; returns the names rewritten (a README may hold only some of them)."""
    doc, found = Path(path).read_text(), []
    for name, body in blocks.items():
        start, end = (f"<!-- {name}:{k} -->" for k in ("start", "end"))
        if start not in doc and end not in doc:
            continue
        if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
            raise SystemExit(f"{path}: needs the lines {start} and {end}, once each and in that "
                             f"order, around the table to rewrite")
        before, rest = doc.split(start)
        doc = f"{before}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"
        found.append(name)
    if found:
        Path(path).write_text(doc)
    return found
