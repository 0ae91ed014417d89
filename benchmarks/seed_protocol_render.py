"""The Markdown table of ``seed_protocol.py``'s results: a row per model and stage, then the
paired tests against label_efficiency's lines."""

from __future__ import annotations

from grid_render import duration, mean_ci, paired_row
from label_efficiency_protocols import SHOTS, cell_name


def render_table(results: dict) -> str:
    """Every model's stages (epochs, held-out test accuracy on the train classes, the prototype
    head's 5-way accuracies on the val classes, seconds), then every paired test."""
    lines = ["| model | stage | best epoch / trained | test images % (64 train classes) | "
             + " | ".join(f"5-way {s}-shot %" for s in SHOTS) + " | training | scoring |",
             "|---|---|---|---|" + "---|" * len(SHOTS) + "---|---|"]
    for key, rec in sorted(results["models"].items()):
        for stage, s in rec["stages"].items():
            cells = [results["cells"].get(cell_name(f"{key}/{stage}", shot)) for shot in SHOTS]
            lines.append(f"| {key} | {stage} | {s['best_epoch']} / {s['epochs']} | "
                         f"{mean_ci(s['test'])} | "
                         + " | ".join(mean_ci(c) if c else "-" for c in cells)
                         + f" | {duration(s['seconds'])} | {duration(s['score_seconds'])} |")
    if results["paired"]:
        lines += ["", "| paired (same episodes) | difference, points | t-test p | Wilcoxon p |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {paired_row(test)} |"
                  for name, test in sorted(results["paired"].items())]
    return "\n".join(lines)
