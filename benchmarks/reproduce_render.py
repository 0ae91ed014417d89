"""Markdown of ``benchmarks/reproduce.py``'s results JSON: the reproduction table (every cell,
measured or "not yet run", the published number beside it), paired tests, and the protocols; the
compact method x setting grid the README quotes (:func:`summary`); and :func:`splice`, which writes
them into a Markdown file between their markers."""

from __future__ import annotations

from pathlib import Path

from common import p_text
from reproduce_protocols import SETTINGS, Protocol

MARKERS = {False: "reproduce-table", True: "reproduce-smoke"}  # smoke -> marker name
SUMMARY = "reproduce-summary"  # the README's grid (full-protocol results only)
SMOKE = "SMOKE, not a result"
MINI_NOTE = ("† Published on the full mini-ImageNet: its 20 **test** classes, 600 images per "
             "class. Ours: the reduced copy's 16 **val** classes, 100 images per class (its test "
             "classes are withheld): not comparable with the published figure.")


def _training(model: dict | None) -> str:
    if not model or "steps" not in model:
        return "-"
    sec = model["seconds"]
    took = f"{sec:.0f} s" if sec < 600 else f"{sec / 60:.0f} min"
    shape = f"{model['episodes']}, " if "episodes" in model else ""
    return f"{shape}{model['steps']:,} / {model['target_steps']:,} steps, {took}"


def _published(p: Protocol) -> str:
    pub = f"{p.published:.2f}" + (f" +- {p.published_ci:.2f}" if p.published_ci else "")
    return pub + (" †" if SETTINGS[p.setting].dataset == "mini" else "")


def _protocol(p: Protocol) -> str:
    """The protocol in a few words: training episodes x per step, steps (at most), model kept."""
    kept = "best val" if p.select == "best" else "last"
    return (f"{p.train_way}w{p.train_shot}s{p.train_query}q x {p.meta_batch}, "
            f"{'<= ' if p.patience else ''}{p.steps:,} steps, {kept}")


def results_table(results: dict, cells: dict[str, Protocol]) -> list[str]:
    """One row per cell, in protocol order: measured, or "not yet run"."""
    lines = ["| cell | published % | ours: test accuracy % (95% interval) | protocol: episodes "
             "(way, shot, queries) x per step, steps, model kept | trained: episodes x per step, "
             "steps, time | test episodes (queries) | how it stopped | device | date |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, p in cells.items():
        c, model = results["cells"].get(name), results["models"].get(p.model_key)
        if c is None:
            state = ("not yet run" if not model or not model.get("steps") else
                     f"not yet run (training: {model['steps']:,} steps so far)")
            lines.append(f"| {name} | {_published(p)} | {state} | {_protocol(p)} | "
                         f"{_training(model)} | - | - | - | - |")
            continue
        label = ("" if c["mode"] == "full protocol" else f" ({SMOKE})"
                 if c["mode"].startswith("smoke") else f" ({c['mode']}, not the full protocol)")
        lines.append(f"| {name} | {_published(p)} | {100 * c['mean']:.2f} +- "
                     f"{100 * c['ci95']:.2f}{label} | {_protocol(p)} | {_training(model)} | "
                     f"{c['episodes']} ({c['query']}) | {c['stopped']} | {c['device']} | "
                     f"{c['date']} |")
    return lines


def paired_table(results: dict) -> list[str]:
    lines = ["| setting | a - b | difference, points (95%) | t-test p | Wilcoxon p |",
             "|---|---|---|---|---|"]
    for setting, pairs in results["paired"].items():
        for pair, t in pairs.items():
            lines.append(f"| {setting} | {pair} | {100 * t['mean_diff']:+.2f} +- "
                         f"{100 * t['ci95']:.2f} | {p_text(t['t_test_p'], 3)} | "
                         f"{p_text(t['wilcoxon_p'], 3)} |")
    return lines


def protocol_table(cells: dict[str, Protocol]) -> list[str]:
    """The protocols as data: one row per cell, then what was verified and how we differ."""
    lines = ["| cell | training episodes (way, shot, queries) x per step | optimiser | steps | "
             "classes | model kept | test time | paper's test |", "|---|---|---|---|---|---|---|---|"]
    notes: dict[tuple[str, str], Protocol] = {}
    for name, p in cells.items():
        stop = ("best val" + (f", early stop after {p.patience:,} steps without a better one"
                              if p.patience else "") + f" (val every {p.val_every:,})"
                if p.select == "best" else "last")
        lines.append(f"| {name} | {p.train_way}w{p.train_shot}s{p.train_query}q x {p.meta_batch} "
                     f"| {p.optimizer} | {p.steps:,} | {p.classes} | {stop} | {p.test} | "
                     f"{p.paper_test} |")
        notes.setdefault((p.method, SETTINGS[p.setting].dataset), p)
    lines.append("")
    for (method, ds), p in notes.items():
        lines.append(f"- **{method}, {ds}.** Verified: {p.source}. Differs: {p.differs}.")
    return lines


def is_smoke(results: dict | None, smoke: bool) -> bool:
    """Whether ``results`` are (or, with none yet, would be) ``--quick`` smoke results."""
    if results is None:
        return smoke
    modes = [results.get("mode", "")] + [c["mode"] for c in results["cells"].values()]
    return any(m.startswith("smoke") for m in modes)


def markdown(results: dict | None, cells: dict[str, Protocol], smoke: bool = False) -> str:
    """The section body: results (every cell), then for full-protocol results the paired tests
    and the protocols. ``results`` None: no call has run yet; ``smoke``: label them as the
    --quick smoke test (so are results in which any cell is one)."""
    smoke = is_smoke(results, smoke)
    results = results or {"cells": {}, "models": {}, "paired": {}}
    calls = results.get("calls", [])
    scored = len([n for n in cells if n in results["cells"]])
    head = [f"**{SMOKE.upper()}: the `--quick` smoke test.** Every cell ran the harness's whole code "
            "path (build, train with a checkpoint and a resume, score, paired tests) on a few "
            "steps and episodes: the accuracies say that it runs, not what the methods reach.", ""
            ] if smoke else []
    head += [f"{scored} of {len(cells)} cells scored, over {len(calls)} call(s) "
             f"({sum(c['wall_seconds'] for c in calls) / 60:.1f} min of wall time); every method "
             "of a setting on the same fixed test episodes (Omniglot: the Vinyals split's test "
             "classes; mini-ImageNet: see †). Rendered by `python benchmarks/reproduce.py "
             f"--render{' --quick' if smoke else ''}` from `{'reproduce-quick' if smoke else 'reproduce'}"
             "/results.json`.", ""]
    body = head + results_table(results, cells) + ["", MINI_NOTE]
    if smoke:  # paired tests of a smoke run mean nothing: they are in its results.json
        return "\n".join(body)
    body += ["", "Paired tests between methods on the same episodes:", ""]
    body += paired_table(results) if results["paired"] else ["(none yet)"]
    body += ["", "Protocols (`benchmarks/reproduce_protocols.py`):", ""]
    return "\n".join(body + protocol_table(cells))


def summary(results: dict | None, cells: dict[str, Protocol]) -> str:
    """The README's grid: one row per method, one column per setting, each entry ``ours
    (published)`` from full-protocol results only, or ``not yet run (published)``."""
    results = results or {"cells": {}}
    methods = list(dict.fromkeys(p.method for p in cells.values()))
    lines = ["| method | " + " | ".join(
                 f"{'Omniglot' if s.dataset == 'omniglot' else 'mini-ImageNet †'} "
                 f"{s.way}-way {s.shot}-shot" for s in SETTINGS.values()) + " |",
             "|---" * (len(SETTINGS) + 1) + "|"]
    for method in methods:
        row = []
        for setting in SETTINGS:
            name = f"{method}/{setting}"
            c = results["cells"].get(name)
            ours = (f"**{100 * c['mean']:.1f}**" if c and c.get("mode") == "full protocol"
                    else "not yet run")
            row.append(f"{ours} ({cells[name].published:.1f})" if name in cells else "-")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    done = sum(c.get("mode") == "full protocol" for c in results["cells"].values())
    return "\n".join([f"Test accuracy %, ours in bold (published in brackets): {done} of "
                      f"{len(cells)} cells measured with the full protocol.", "", *lines, "",
                      "† ours on the reduced copy's 16 val classes, not comparable (BENCHMARKS.md)."])


def splice(path: Path, text: str, smoke: bool, extra: dict[str, str] | None = None) -> None:
    """Replace what lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``path``
    with ``text`` (NAME from :data:`MARKERS`), and likewise each ``extra`` marker name -> text
    (:func:`splice_blocks`); at least one of the markers must be there."""
    if not splice_blocks(path, {MARKERS[smoke]: text, **(extra or {})}):
        start, end = (f"<!-- {MARKERS[smoke]}:{k} -->" for k in ("start", "end"))
        raise SystemExit(f"{path}: needs the lines {start} and {end} (or <!-- {SUMMARY}:start "
                         f"-->/end), once each and in that order, around the table to rewrite")


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
