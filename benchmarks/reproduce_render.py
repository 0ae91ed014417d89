"""Markdown of ``benchmarks/reproduce.py``'s results JSON: the reproduction table (every cell,
measured or "not yet run", the published number beside it), paired tests, and the protocols."""

from __future__ import annotations

from reproduce_protocols import SETTINGS, Protocol


def _training(model: dict | None) -> str:
    if not model or "steps" not in model:
        return "-"
    sec = model["seconds"]
    took = f"{sec:.0f} s" if sec < 600 else f"{sec / 60:.0f} min"
    return f"{model['steps']:,} / {model['target_steps']:,} steps, {took}"


def results_table(results: dict, cells: dict[str, Protocol]) -> list[str]:
    """One row per cell, in protocol order."""
    lines = ["| cell | ours: test accuracy % (95% interval) | published % | test episodes "
             "(queries) | training: steps, time | how it stopped | device | date |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in cells.items():
        c, model = results["cells"].get(name), results["models"].get(p.model_key)
        pub = f"{p.published:.2f}" + (f" +- {p.published_ci:.2f}" if p.published_ci else "")
        if c is None:
            state = ("not yet run" if not model else
                     f"not yet run (training: {model.get('steps', 0):,} steps so far)")
            lines.append(f"| {name} | {state} | {pub} | - | {_training(model)} | - | - | - |")
            continue
        smoke = " (smoke run, not a result)" if c["mode"].startswith("smoke") else ""
        lines.append(f"| {name} | {100 * c['mean']:.2f} +- {100 * c['ci95']:.2f}{smoke} | {pub} | "
                     f"{c['episodes']} ({c['query']}) | {_training(model)} | {c['stopped']} | "
                     f"{c['device']} | {c['date']} |")
    return lines


def paired_table(results: dict) -> list[str]:
    lines = ["| setting | a - b | difference, points (95%) | t-test p | Wilcoxon p |",
             "|---|---|---|---|---|"]
    for setting, pairs in results["paired"].items():
        for pair, t in pairs.items():
            lines.append(f"| {setting} | {pair} | {100 * t['mean_diff']:+.2f} +- "
                         f"{100 * t['ci95']:.2f} | {t['t_test_p']:.3g} | {t['wilcoxon_p']:.3g} |")
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


def markdown(results: dict, cells: dict[str, Protocol]) -> str:
    """The whole section body: results, paired tests, protocols."""
    calls = results.get("calls", [])
    head = [f"{len(results['cells'])} of {len(cells)} cells scored, over {len(calls)} call(s) "
            f"({sum(c['wall_seconds'] for c in calls) / 60:.1f} min of wall time); every method "
            "of a setting on the same fixed test episodes (Omniglot: Vinyals test classes; "
            "mini-ImageNet: the reduced copy's 16 **val** classes, its test classes being "
            "withheld, so not comparable with the published figures).", ""]
    return "\n".join(head + results_table(results, cells)
                     + ["", "Paired tests between methods on the same episodes:", ""]
                     + paired_table(results) + ["", "Protocols (reproduce_protocols.py):", ""]
                     + protocol_table(cells))
