"""Markdown of ``benchmarks/transfer.py``'s results JSON: accuracy with its 95% interval per
(backbone, method, shot), the paired difference from ProtoNet from scratch on the same episodes,
and the time of each cell (its model's training, shared where the model is, and its scoring)."""

from __future__ import annotations

import argparse

from common import p_text
from grid_render import difference, duration, mean_ci, wall_minutes
from transfer_protocols import BACKBONES, FEATURE_HEADS, METHODS, SHOTS, cell_name, model_key, training


def _accuracy(cell: dict | None) -> str:
    if not cell or not cell.get("accuracies"):
        return "not yet run"
    n = len(cell["accuracies"])
    if cell.get("ci95") is None:
        return f"{n} episodes so far"
    text = f"{mean_ci(cell)} ({n})"
    return text + ("" if cell.get("status") == "done" else ", scoring")


def _paired(test: dict | None) -> str:
    if not test:
        return "-"
    return (f"{difference(test)} "
            f"(t {p_text(test['t_test_p'])}, W {p_text(test['wilcoxon_p'])})")


def _time(results: dict, cell: dict | None, key: str, shot: int) -> str:
    """The model's training (shared by the cells of a pre-training), the features of the test
    images through it (shared by the feature heads of a shot) and the cell's own scoring."""
    model = results["models"].get(key, {})
    shared = "shared " if key.startswith("pretrain-") else ""
    train = (f"{shared}training {duration(model.get('seconds'))}"
             + ("" if model.get("status") == "done" or not model else
                f" ({model.get('steps', 0):,}/{model.get('target_steps', 0):,} steps)"))
    feats = model.get("feature_seconds", {}).get(str(shot))
    by_features = cell and (cell.get("scored_with") or {}).get("head") in FEATURE_HEADS
    feats = f"; {shared}features {duration(feats)}" if by_features and feats is not None else ""
    return f"{train}{feats}; scoring {duration(cell.get('seconds')) if cell else '-'}"


def table(results: dict, backbones: tuple[str, ...] = BACKBONES) -> list[str]:
    head = ["method"] + [f"5-way {s}-shot % (episodes)" for s in SHOTS] + [
        f"{s}-shot minus ProtoNet, points (paired p)" for s in SHOTS] + [
        f"time ({s}-shot)" for s in SHOTS]
    lines: list[str] = []
    for backbone in backbones:
        lines += [f"**{backbone}**", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for method in METHODS:
            row = [method]
            found = [results["cells"].get(cell_name(backbone, s, method)) for s in SHOTS]
            row += [_accuracy(c) for c in found]
            row += [_paired(results["paired"].get(cell_name(backbone, s, method)))
                    if method != "protonet" else "(reference)" for s in SHOTS]
            row += [_time(results, c, model_key(method, backbone, s), s)
                    for c, s in zip(found, SHOTS, strict=True)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def models(results: dict, preset) -> list[str]:
    lines = ["| model | training (preset) | steps done | training time | features of the "
             "test images |", "|---|---|---|---|---|"]
    for key, m in results["models"].items():
        feats = ", ".join(f"{s}-shot {v:.0f} s" for s, v in m.get("feature_seconds", {}).items())
        lines.append(f"| {key} | {m.get('training') or training(key, preset).describe()} | "
                     f"{m.get('steps', 0):,} / {m.get('target_steps', 0):,} | "
                     f"{duration(m.get('seconds'))} | {feats or '-'} |")
    return lines


def markdown(results: dict, args: argparse.Namespace) -> str:
    calls = results.get("calls", [])
    devices = sorted({c["device"] for c in calls})
    scored = sum(c.get("status") == "done" for c in results["cells"].values())
    head = [f"Preset `{args.preset_name}`: {scored} cells scored over {len(calls)} call(s), "
            f"{wall_minutes(results):.1f} min of wall time, on "
            f"{', '.join(devices) or '-'}; images {args.preset.image_size} x "
            f"{args.preset.image_size}. Accuracy: mean +- 95% interval over the fixed test "
            "episodes of the reduced mini-ImageNet's 16 val classes (15 queries); paired: the "
            "cell minus ProtoNet from scratch (same backbone and shot) on the episodes both "
            "scored, with the paired t-test and Wilcoxon p-values.", ""]
    return "\n".join(head + table(results, tuple(args.backbones)) + ["Models:", ""]
                     + models(results, args.preset))
