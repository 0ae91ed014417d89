"""Markdown of ``benchmarks/reproduce.py``'s results JSON: the reproduction table (every cell,
measured or "not yet run", the published number beside it), the time-to-accuracy curves, paired
tests, and the protocols; the compact method x setting grid the README quotes (:func:`summary`);
:func:`splice`, which writes them into a Markdown file between their markers; and
:func:`run_mode`, the kind of results a command gives.

Cells of a time-to-accuracy run (``--cap-minutes`` / ``--until-published``) are marked for what
they are, distinct from full-protocol cells: the published accuracy reached (or not) in so many
hours of training, with the papers' episode shapes and shorter training than the papers'."""

from __future__ import annotations

import argparse
from pathlib import Path

from grid_render import curve_table, duration, mean_ci, paired_row, splice_blocks, wall_minutes
from reproduce_protocols import SETTINGS, Protocol, protocols

SMOKE_MARKER, TABLE_MARKER = "reproduce-smoke", "reproduce-table"
TTA_MARKER = "reproduce-time-to-accuracy"  # the table of a time-to-accuracy run
SUMMARY = "reproduce-summary"  # the README's grid (full-protocol and time-to-accuracy results)
SMOKE = "SMOKE, not a result"
TIME_TO_ACCURACY = "time to accuracy (papers' episode shapes, training capped in time)"
SHORTER = "papers' episode shapes, shorter training"
MINI_NOTE = ("† Published on the full mini-ImageNet: its 20 **test** classes, 600 images per "
             "class. Ours: the reduced copy's 16 **val** classes, 100 images per class (its test "
             "classes are withheld): not comparable with the published figure.")


def run_mode(args: argparse.Namespace) -> str:
    """What the results of this command are: the smoke test, the full protocol, time to
    accuracy, or reduced."""
    if args.quick:
        return "smoke (--quick)"
    if args.synthetic:
        return "smoke on random images (--synthetic)"
    if args.cap_minutes or args.until_published:
        return TIME_TO_ACCURACY
    cuts = [f"--{k.replace('_', '-')} {v}" for k, v in (("steps", args.steps),
                                                          ("test_episodes", args.test_episodes))
            if v is not None]
    return f"reduced ({', '.join(cuts)})" if cuts else "full protocol"


def is_time_to_accuracy(mode: str | None) -> bool:
    return (mode or "").startswith("time to accuracy")


def _training(model: dict | None) -> str:
    if not model or "steps" not in model:
        return "-"
    shape = f"{model['episodes']}, " if "episodes" in model else ""
    return f"{shape}{model['steps']:,} / {model['target_steps']:,} steps, {duration(model['seconds'])}"


def reached_minutes(p: Protocol, model: dict | None) -> float | None:
    """Training minutes of the model's first curve point at or above ``p``'s published accuracy
    in its setting; None if no point reached it."""
    for point in (model or {}).get("curve", []):
        if 100 * point["accuracy"].get(p.setting, float("-inf")) >= p.published:
            return point["train_minutes"]
    return None


def time_note(p: Protocol, cell: dict, model: dict | None, long: bool = True) -> str:
    """What a time-to-accuracy cell is: ``published 98.8 reached in 0.41 CPU h; papers' episode
    shapes, shorter training than the papers'`` (or ``not reached in`` its training time)."""
    unit = "CPU h" if str(cell.get("device", "")).startswith("CPU") else "GPU h"
    at = reached_minutes(p, model)
    when = (f"reached in {at / 60:.2g} {unit}" if at is not None else
            f"not reached in {cell['train_seconds'] / 3600:.2g} {unit}")
    return f"published {p.published:g} {when}; {SHORTER}" + (" than the papers'" if long else "")


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
                     f"not yet run (training: {model['steps']:,} steps so far{_latest(p, model)})")
            lines.append(f"| {name} | {_published(p)} | {state} | {_protocol(p)} | "
                         f"{_training(model)} | - | - | - | - |")
            continue
        label = ("" if c["mode"] == "full protocol" else f" ({SMOKE})"
                 if c["mode"].startswith("smoke") else f" ({time_note(p, c, model)})"
                 if is_time_to_accuracy(c["mode"]) else f" ({c['mode']}, not the full protocol)")
        lines.append(f"| {name} | {_published(p)} | {mean_ci(c)}{label} | {_protocol(p)} | "
                     f"{_training(model)} | "
                     f"{c['episodes']} ({c['query']}) | {c['stopped']} | {c['device']} | "
                     f"{c['date']} |")
    return lines


def paired_table(results: dict) -> list[str]:
    lines = ["| setting | a - b | difference, points (95%) | t-test p | Wilcoxon p |",
             "|---|---|---|---|---|"]
    for setting, pairs in results["paired"].items():
        for pair, t in pairs.items():
            lines.append(f"| {setting} | {pair} | {paired_row(t, 3)} |")
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


def _latest(p: Protocol, model: dict) -> str:
    """A model in time-to-accuracy training: its latest curve point in ``p``'s setting."""
    point = next((q for q in reversed(model.get("curve", [])) if p.setting in q["accuracy"]), None)
    return ("" if point is None else f"; {100 * point['accuracy'][p.setting]:.2f} % after "
            f"{point['train_minutes']:g} min of training, {point['episodes']} test episodes")


def curves(results: dict, cells: dict[str, Protocol]) -> list[str]:
    """Time to accuracy: per model with a curve, how it stopped and a table of test accuracy
    against training minutes in each setting it serves."""
    lines = ["Time to accuracy: test accuracy % on the first fixed test episodes of each setting "
             "against minutes of training (`train()`'s clock: no validation, scoring or "
             f"checkpoints), per model; {SHORTER} than the papers' (their full protocols are in "
             "the protocol table).", ""]
    for key, model in results["models"].items():
        served = [p for p in cells.values() if p.model_key == key]
        if not model.get("curve") or not served:
            continue
        pubs = ", ".join(f"{p.setting} {p.published:g}" for p in served)
        lines += [f"**{key}** ({model.get('stopped') or 'training'}; published %: {pubs})", ""]
        lines += curve_table(model["curve"], [p.setting for p in served]) + [""]
    return lines[:-1]


def is_smoke(results: dict | None, smoke: bool) -> bool:
    """Whether ``results`` are (or, with none yet, would be) ``--quick`` smoke results."""
    if results is None:
        return smoke
    modes = [results.get("mode", "")] + [c["mode"] for c in results["cells"].values()]
    return any(m.startswith("smoke") for m in modes)


def markdown(results: dict | None, cells: dict[str, Protocol], smoke: bool = False,
             source: str | None = None) -> str:
    """The section body: results (every cell), then for full-protocol and time-to-accuracy
    results the curves, the paired tests and the protocols. ``results`` None: no call has run
    yet; ``smoke``: label them as the --quick smoke test (so are results in which any cell is
    one); ``source``: the results folder named as rendered from (default: the usual one)."""
    smoke = is_smoke(results, smoke)
    results = results or {"cells": {}, "models": {}, "paired": {}}
    calls = results.get("calls", [])
    scored = len([n for n in cells if n in results["cells"]])
    head = [f"**{SMOKE.upper()}: the `--quick` smoke test.** Every cell ran the harness's whole code "
            "path (build, train with a checkpoint and a resume, score, paired tests) on a few "
            "steps and episodes: the accuracies say that it runs, not what the methods reach.", ""
            ] if smoke else []
    if is_time_to_accuracy(results.get("mode")):
        head += ["**Time to accuracy, not the full protocol**: each model trained with its "
                 "paper's episode shapes for at most a capped training time (or until it reached "
                 "the published accuracy), much shorter than the paper's training.", ""]
    source = source or f"{'reproduce-quick' if smoke else 'reproduce'}/results.json"
    head += [f"{scored} of {len(cells)} cells scored, over {len(calls)} call(s) "
             f"({wall_minutes(results):.1f} min of wall time); every method "
             "of a setting on the same fixed test episodes (Omniglot: the Vinyals split's test "
             "classes; mini-ImageNet: see †). Rendered by `python benchmarks/reproduce.py "
             f"--render{' --quick' if smoke else ''}` from `{source}`.", ""]
    body = head + results_table(results, cells) + ["", MINI_NOTE]
    if smoke:  # paired tests of a smoke run mean nothing: they are in its results.json
        return "\n".join(body)
    if any(m.get("curve") for m in results["models"].values()):
        body += ["", *curves(results, cells)]
    body += ["", "Paired tests between methods on the same episodes:", ""]
    body += paired_table(results) if results["paired"] else ["(none yet)"]
    body += ["", "Protocols (`benchmarks/reproduce_protocols.py`):", ""]
    return "\n".join(body + protocol_table(cells))


def summary(results: dict | None, cells: dict[str, Protocol]) -> str:
    """The README's grid: one row per method, one column per setting, each entry ``ours
    (published)`` from full-protocol results (ours in bold), ``ours (published ... reached or
    not in N CPU h; ...)`` from time-to-accuracy results, or ``not yet run (published)``."""
    results = results or {"cells": {}}
    models = results.get("models", {})
    methods = list(dict.fromkeys(p.method for p in cells.values()))
    lines = ["| method | " + " | ".join(
                 f"{'Omniglot' if s.dataset == 'omniglot' else 'mini-ImageNet †'} "
                 f"{s.way}-way {s.shot}-shot" for s in SETTINGS.values()) + " |",
             "|---" * (len(SETTINGS) + 1) + "|"]
    for method in methods:
        row = []
        for setting in SETTINGS:
            name = f"{method}/{setting}"
            c, p = results["cells"].get(name), cells.get(name)
            if p is None:
                row.append("-")
            elif c and c.get("mode") == "full protocol":
                row.append(f"**{100 * c['mean']:.1f}** ({p.published:.1f})")
            elif c and is_time_to_accuracy(c.get("mode")):
                row.append(f"{100 * c['mean']:.1f} ({time_note(p, c, models.get(p.model_key), False)})")
            else:
                row.append(f"not yet run ({p.published:.1f})")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    done = sum(c.get("mode") == "full protocol" for c in results["cells"].values())
    timed = sum(is_time_to_accuracy(c.get("mode")) for c in results["cells"].values())
    also = (f"; {timed} in time to accuracy (not in bold: the published accuracy reached or not "
            f"in that much training, {SHORTER} than the papers')" if timed else "")
    return "\n".join([f"Test accuracy %, ours in bold (published in brackets): {done} of "
                      f"{len(cells)} cells measured with the full protocol{also}.", "", *lines, "",
                      "† ours on the reduced copy's 16 val classes, not comparable (BENCHMARKS.md)."])


def marker(results: dict | None, smoke: bool) -> str:
    """Where the table of ``results`` goes: the smoke test's, a time-to-accuracy run's or the
    full-protocol table's markers."""
    if is_smoke(results, smoke):
        return SMOKE_MARKER
    return TTA_MARKER if is_time_to_accuracy((results or {}).get("mode")) else TABLE_MARKER


def splice(path: Path, text: str, name: str, extra: dict[str, str] | None = None) -> None:
    """Replace what lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``path``
    with ``text``, and likewise each ``extra`` marker name -> text (:func:`splice_blocks`); at
    least one of the markers must be there."""
    if not splice_blocks(path, {name: text, **(extra or {})}):
        start, end = (f"<!-- {name}:{k} -->" for k in ("start", "end"))
        raise SystemExit(f"{path}: needs the lines {start} and {end} (or <!-- {SUMMARY}:start "
                         f"-->/end), once each and in that order, around the table to rewrite")


def render(results: dict | None, args: argparse.Namespace) -> None:
    """Print the Markdown of ``results`` (None: nothing run yet), or splice it into --splice:
    the table between its markers (:func:`marker`) and, except for smoke results, the README's
    grid between ``<!-- reproduce-summary:start/end -->``."""
    timed = is_time_to_accuracy((results or {}).get("mode"))
    text = markdown(results, protocols(), args.quick,
                    f"{args.out_dir.name}/results.json" if timed else None)
    if args.splice is None:
        print(text)
        return
    name = marker(results, args.quick)  # smoke results never in the results' place
    extra = {} if name == SMOKE_MARKER else {SUMMARY: summary(results, protocols())}
    splice(args.splice, text, name, extra)
    print(f"{args.splice}: table rewritten from {args.results_path}")
