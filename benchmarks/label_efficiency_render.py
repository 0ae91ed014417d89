"""The tables and the figure of ``label_efficiency.py``: accuracy against labelled images per
class, one row (table) or line (figure) per method, with 95% intervals, paired differences
against ``sup`` at the same level and the seconds of training of every point: a table and a
panel per shot, and, where the models were scored on held-out images of the train classes, one
more of those (results without them render as before)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import p_text  # noqa: E402
from grid import paired  # noqa: E402
from grid_render import duration, mean_ci  # noqa: E402
from label_efficiency_protocols import (  # noqa: E402
    BASELINE,
    SHOTS,
    SSL_LINES,
    cell_name,
    heldout_name,
    line_kind,
    model_key,
)


def pretrain_key(line: str) -> str | None:
    """The self-supervised model a ``ft-`` line starts from (None for other lines)."""
    return f"ssl-{line.removeprefix('ft-')}" if line_kind(line) == "fine-tuned" else None


def point(results: dict, name: str, p_key: str = "t_test_p") -> str:
    """One table cell, of cell ``name``: accuracy +- 95% interval, and for other lines than
    ``sup`` the paired difference to ``sup`` at the level (points) with its p (``p_key`` of the
    paired test)."""
    cell = results["cells"].get(name)
    if not cell:
        return "-"
    test = results["paired"].get(name)
    diff = f" ({100 * test['mean_diff']:+.2f}, p {p_text(test[p_key])})" if test else ""
    return mean_ci(cell) + diff


def has_heldout(results: dict, lines: tuple[str, ...], levels: tuple[int, ...]) -> bool:
    """Whether any of these points was scored on held-out images of the train classes."""
    return any(heldout_name(model_key(line, n)) in results["cells"] for line in lines
               for n in levels)


def seconds(results: dict, line: str, level: int) -> str:
    """The training seconds of a point (and of the pre-training it started from)."""
    rec = results["models"].get(model_key(line, level))
    if not rec:
        return "-"
    pre = pretrain_key(line)
    pre_rec = results["models"].get(pre) if pre else None
    return duration(rec["seconds"]) + (f" + {duration(pre_rec['seconds'])}" if pre_rec else "")


def render_table(results: dict, preset: str, lines: tuple[str, ...],
                 levels: tuple[int, ...]) -> str:
    """A Markdown table per shot (rows: lines, columns: labels per class) and one of the seconds
    of training."""
    head = "| line | " + " | ".join(f"{n} labels / class" for n in levels) + " |"
    rule = "| --- |" + " --- |" * len(levels)
    out = [f"Preset {preset}; prototype head, 5-way, 15 queries, the same fixed episodes of the "
           f"16 val classes for every point; % +- 95% interval, in brackets: minus `{BASELINE}` "
           f"at the same level on the same episodes (points), paired t-test p."]
    for shot in SHOTS:
        out += ["", f"5-way {shot}-shot:", "", head, rule]
        out += [f"| {line} | " + " | ".join(point(results, cell_name(model_key(line, n), shot))
                                            for n in levels) + " |" for line in lines]
    if has_heldout(results, lines, levels):
        held = results["holdout"]  # recorded before any model trained
        out += ["", f"Held-out images of the train classes ({held['per_class']} per class, seed "
                f"{held['seed']}, never trained on), each model's own "
                f"classifier over the train classes; % +- 95% interval, in brackets: minus "
                f"`{BASELINE}` at the same level on the same images (points), McNemar's exact p:",
                "", head, rule]
        out += [f"| {line} | " + " | ".join(point(results, heldout_name(model_key(line, n)),
                                                  "mcnemar_p") for n in levels) + " |"
                for line in lines]
    out += ["", "Seconds of training (`ft-` lines: + the pre-training, shared by every level):",
            "", head, rule]
    out += [f"| {line} | " + " | ".join(seconds(results, line, n) for n in levels) + " |"
            for line in lines]
    alone = [f"`{key}` {' / '.join(mean_ci(results['cells'][cell_name(key, s)]) for s in SHOTS)}"
             for key in dict.fromkeys(filter(None, map(pretrain_key, lines)))
             if all(cell_name(key, s) in results["cells"] for s in SHOTS)]
    if alone:
        out += ["", "The pre-trained backbones alone (no labels at all), 1-shot / 5-shot: "
                + "; ".join(alone) + "."]
    return "\n".join(out)


def versus(results: dict, name: str, other: str) -> str:
    """Cell ``name`` minus cell ``other`` on the same episodes: ``"+1.20, p 0.003"`` (points)."""
    a, b = results["cells"].get(name), results["cells"].get(other)
    if not (a and b) or name == other:
        return "-"
    test = paired(a, b)
    return f"{100 * test['mean_diff']:+.2f}, p {p_text(test['t_test_p'])}"


def render_pretrained(results: dict, level: int, reference: str = "ssl-rotation") -> str:
    """The table of every pre-trained backbone alone (``ssl-<method>``, no labels): accuracy per
    shot, paired against ``sup`` at ``level`` labels per class and against ``reference``, with
    seconds per step and per epoch of the pre-training and the training process's peak memory."""
    base = model_key(BASELINE, level)
    out = [f"Prototype head on each backbone alone, the same fixed val episodes; in brackets: "
           f"minus `{base}` (trained on {level} labels per class) and minus `{reference}`, "
           "points, paired t-test p.", "",
           "| pre-training (no labels) | " + " | ".join(
               f"5w{s}s % | vs `{base}` | vs `{reference}`" for s in SHOTS)
           + " | s / step | s / epoch | peak memory |",
           "| --- |" + " --- | --- | --- |" * len(SHOTS) + " --- | --- | --- |"]
    for method in SSL_LINES:
        key, rec = f"ssl-{method}", results["models"].get(f"ssl-{method}")
        if not rec or not all(cell_name(key, s) in results["cells"] for s in SHOTS):
            continue
        row = [key.removeprefix("ssl-")]
        for s in SHOTS:
            name = cell_name(key, s)
            row += [mean_ci(results["cells"][name]), versus(results, name, cell_name(base, s)),
                    versus(results, name, cell_name(reference, s))]
        per_step = rec["seconds"] / rec["steps"]
        epoch = rec.get("train_images")
        row += [f"{per_step:.2f}", f"{per_step * epoch / rec['batch']:.0f}" if epoch else "-",
                f"{max(s.get('peak_rss_gb', 0) for s in rec['sessions']):.2f} GB"]
        out.append("| " + " | ".join(row) + " |")
    base_rec = results["models"].get(base)
    if base_rec:
        out += ["", f"`{base}` itself: " + " / ".join(
            mean_ci(results["cells"][cell_name(base, s)]) for s in SHOTS
            if cell_name(base, s) in results["cells"]) + f" % ({duration(base_rec['seconds'])})."]
    return "\n".join(out)


def render_figure(results: dict, preset: str, lines: tuple[str, ...], levels: tuple[int, ...],
                  path: Path) -> None:
    """Accuracy (%) against labels per class (log axis), a panel per shot (and one of the
    held-out images of the train classes, where scored), a line per method with its 95%
    intervals as error bars; written to ``path`` (PNG)."""
    rows = -(-len(lines) // 5)  # legend rows below the panels, five entries a row
    panels: list[tuple[Callable[[str], str], str]] = [
        (lambda key, s=shot: cell_name(key, s), f"5-way {shot}-shot accuracy, val classes (%)")
        for shot in SHOTS]
    if has_heldout(results, lines, levels):
        panels.append((heldout_name, "accuracy on held-out train-class images (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4 + 0.3 * rows),
                             squeeze=False)
    for ax, (name_of, ylabel) in zip(axes[0], panels, strict=True):
        for i, line in enumerate(lines):
            pts = [(n, results["cells"][c]) for n in levels
                   if (c := name_of(model_key(line, n))) in results["cells"]]
            if not pts:
                continue
            x = [n * (1 + 0.02 * (i - len(lines) / 2)) for n, _ in pts]  # apart, not hidden
            ax.errorbar(x, [100 * c["mean"] for _, c in pts],
                        yerr=[100 * c["ci95"] for _, c in pts], marker="o", capsize=3,
                        label=line)
        ax.set_xscale("log")
        ax.set_xticks(list(levels), [str(n) for n in levels])
        ax.minorticks_off()
        ax.set_xlabel("labelled images per train class")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    fig.suptitle(f"Label efficiency, reduced mini-ImageNet (preset {preset})")
    fig.tight_layout(rect=(0, 0.08 * rows, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
