"""Semi-supervised few-shot episodes (Ren et al. 2018): their table, meta-trained from scratch.

On Omniglot (10 % of the train images labelled) and the reduced mini-ImageNet (40 %), five rows
per setting: ProtoNet meta-trained on the labelled part alone, scored plain and with soft k-means
at test; ProtoNet meta-trained with soft k-means, with the distractor cluster and with masked soft
k-means on episodes that carry unlabelled images (with and without distractor classes, tested in
the same condition). What is trained how, against the authors' code:
``semisup_episodes_protocols.py``.

Everything runs through the command line a user types: ``fewshot train`` into
``OUT/checkpoints/<model>/`` (resumed with ``--resume`` when a budget stopped it), then ``fewshot
eval --output`` on one fixed episode file per condition (``OUT/episodes-<shot>s-d<D>.pt``, the
same episodes for every row: paired tests). Results accumulate in ``OUT/results.json``; run the
same command again to continue.

    python benchmarks/semisup_episodes.py --quick                         # smoke run, seconds
    python benchmarks/semisup_episodes.py --setting omniglot --steps 5000 --decay 1250
    python benchmarks/semisup_episodes.py --setting mini --device cuda    # the full protocol
    python benchmarks/semisup_episodes.py --setting mini-cpu   # 42x42, 2,000 steps: CPU minutes
    python benchmarks/semisup_episodes.py --render --setting omniglot [--splice BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common
import grid
import torch
from grid_render import difference, mean_ci, splice_blocks
from semisup_episodes_protocols import (
    ROW_TITLES,
    ROWS,
    SETTINGS,
    Setting,
    cell_name,
    model_key,
    models,
)

OUT = Path(__file__).parent / "out"
MODE = "semisup-episodes"


def fewshot(*argv: str) -> None:
    """Run one ``fewshot`` command in a child process (its output shown); raise on failure."""
    print("$ fewshot " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "fewshot.cli", *argv], check=True)


def data_args(s: Setting, args: argparse.Namespace) -> list[str]:
    root = {"omniglot": lambda: str(common.omniglot_root()),
            "miniimagenet": lambda: str(args.mini_root)}.get(s.dataset)
    return (["--dataset", s.dataset, *(["--root", root()] if root else []),
             "--image-size", str(s.image_size), "--device", args.device])


def train_model(key: str, method: str, shot: int, d: int | None, s: Setting,
                args: argparse.Namespace) -> dict | None:
    """Train (or continue) model ``key`` within the budget: ProtoNet on the labelled part alone
    (``d`` None), else with refinement ``method`` on episodes with ``d`` distractor classes.
    Returns its record once it has trained ``--steps`` steps, else None."""
    out = grid.checkpoints(args.out_dir, key)
    record, sessions_file = out / "record.json", out / "sessions.json"
    if record.is_file():
        return json.loads(record.read_text())
    left = args.budget.left()
    if left <= 0:
        return None
    labels = (["--label-fraction", str(s.label_ratio)] if d is None else
              ["--option", f"refine={method}", "--unlabelled-per-class", str(s.unlabelled),
               "--distractor-classes", str(d), "--label-ratio", str(s.label_ratio)])
    tick = time.monotonic()
    fewshot("train", "--method", "protonet", *data_args(s, args), "--way", str(s.way),
            "--shot", str(shot), "--query", str(s.train_query), *labels, "--label-seed", "0",
            "--steps", str(args.steps), "--lr", "1e-3", "--weight-decay", "5e-5",
            "--schedule", "step", "--lr-decay-every", str(args.decay), "--val-every", "0",
            "--val-episodes", "100", "--precision", args.precision, "--seed", "0",
            "--out", str(out), "--quiet",
            *(["--time-limit", str(int(left))] if left != float("inf") else []),
            *(["--resume"] if (out / "last.pt").is_file() else []))
    steps = max(json.loads(line).get("step", 0)
                for line in (out / "metrics.jsonl").read_text().splitlines())
    sessions = json.loads(sessions_file.read_text()) if sessions_file.is_file() else []
    sessions.append({"seconds": round(time.monotonic() - tick, 1), "until_step": steps,
                     **args.env})
    grid.save_results(sessions, sessions_file)
    if steps < args.steps:
        return None
    resolved = json.loads((out / "run.json").read_text()).get("resolved", {})
    rec = {"steps": steps, "seconds": round(sum(x["seconds"] for x in sessions), 1),
           "precision": resolved.get("precision", args.precision), "sessions": sessions}
    grid.save_results(rec, record)
    return rec


def score(row: str, model: str, refine: str | None, shot: int, d: int, s: Setting,
          args: argparse.Namespace) -> dict:
    """Row ``row`` (``model``'s last.pt, refined by ``refine`` at test) on the fixed episodes of
    condition (``shot``, ``d`` distractor classes)."""
    out = grid.checkpoints(args.out_dir, model)
    result = out / f"eval-{row}-{shot}s-d{d}.json"
    if not result.is_file():
        fewshot("eval", "--checkpoint", str(out / "last.pt"), *data_args(s, args),
                "--split", s.test_split, "--way", str(s.way), "--shot", str(shot),
                "--query", str(s.test_query), "--episodes", str(s.test_episodes), "--seed", "1",
                "--unlabelled-per-class", str(s.test_unlabelled), "--distractor-classes", str(d),
                "--episodes-file", str(args.out_dir / f"episodes-{shot}s-d{d}.pt"),
                *(["--refine", refine] if refine else []), "--output", str(result), "--quiet")
    r = json.loads(result.read_text())
    return {"mean": r["mean"], "ci95": r["ci95"], "episodes": len(r["accuracies"]),
            "accuracies": r["accuracies"], "model": model, "refine": refine}


def run(s: Setting, args: argparse.Namespace) -> None:
    res = args.results
    for key, method, shot, d in models(s):
        rec = train_model(key, method, shot, d, s, args)
        if rec is not None:
            res["models"][key] = rec
            grid.save_results(res, args.results_path)
    for shot in s.shots:
        for d in (s.distractors, 0):
            cells = {}
            for row, method, refine in ROWS:
                model = model_key(method, shot, d)
                if res["models"].get(model, {}).get("steps") is None:
                    continue
                cells[cell_name(row, shot, d)] = score(row, model, refine, shot, d, s, args)
            res["cells"].update(cells)
            res["paired"][f"{shot}s-d{d}"] = grid.pairs_within(cells)
            grid.save_results(res, args.results_path)


def condition_name(shot: int, d: int) -> str:
    """``"1-shot, no distractors"``, ``"5-shot, 5 distractor classes"``."""
    return f"{shot}-shot, {'no distractors' if d == 0 else f'{d} distractor classes'}"


def render(s: Setting, results: dict, setting_name: str) -> str:
    """The Markdown table: a row per method, a column per condition, paired against ProtoNet."""
    conds = [(shot, d) for shot in s.shots for d in (0, s.distractors)]
    published = {(row, shot, d): pct for row, shot, d, pct in s.published}
    with_published = [(shot, d) for shot, d in conds
                      if any(k[1:] == (shot, d) for k in published)]
    head = ["method", *(condition_name(shot, d) for shot, d in conds),
            *(f"published, {condition_name(shot, d)}" for shot, d in with_published)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, _, _ in ROWS:
        cols = [ROW_TITLES[row]]
        for shot, d in conds:
            cell = results["cells"].get(cell_name(row, shot, d))
            base = results["cells"].get(cell_name("protonet", shot, d))
            test = grid.paired(cell, base) if cell and base and row != "protonet" else None
            cols.append("-" if cell is None else mean_ci(cell) + (
                "" if test is None else f" ({difference(test)}, p "
                                        f"{common.p_text(test['t_test_p'])})"))
        cols += [f"{published[(row, shot, d)]:.2f}" if (row, shot, d) in published else "-"
                 for shot, d in with_published]
        lines.append("| " + " | ".join(cols) + " |")
    trained = [f"{k}: {m['steps']:,} steps in {m['seconds'] / 60:.1f} min ({m['precision']})"
               for k, m in results["models"].items()]
    return (f"Setting `{setting_name}` ({s.dataset}, {s.test_split} classes, {s.test_episodes} "
            f"fixed episodes per condition, {s.test_query} queries and {s.test_unlabelled} "
            f"unlabelled images per class); in brackets the paired difference against the "
            f"supervised row on the same episodes"
            + (f"; published figures: {s.published_source}" if s.published else "")
            + ".\n\n" + "\n".join(lines)
            + "\n\nTrained: " + "; ".join(trained) + ".")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setting", choices=tuple(SETTINGS), default="omniglot")
    ap.add_argument("--quick", action="store_true", help="--setting quick")
    ap.add_argument("--steps", type=int, help="training steps per model (default: the authors')")
    ap.add_argument("--decay", type=int, help="halve the learning rate every N steps "
                    "(default: the setting's)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-minutes", type=float, help="stop cleanly after this many minutes")
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    ap.add_argument("--out-dir", type=Path, help="default benchmarks/out/semisup-<setting>")
    ap.add_argument("--render", action="store_true", help="print the table (and --splice it)")
    ap.add_argument("--splice", type=Path, action="append", default=[],
                    help="with --render: replace the table between its markers in this file")
    args = ap.parse_args(argv)
    name = "quick" if args.quick else args.setting
    s = SETTINGS[name]
    args.steps, args.decay = args.steps or s.steps, args.decay or s.decay
    if args.steps < 1 or args.decay < 1:
        ap.error("--steps and --decay take numbers >= 1")
    args.out_dir = args.out_dir or OUT / f"semisup-{name}"
    args.results_path = args.out_dir / "results.json"
    results = grid.check_mode(grid.load_results(args.results_path) or grid.empty_results(),
                              MODE, args.results_path)
    if args.render:  # the folder's own setting, whatever --setting says
        name = results.get("protocol", {}).get("setting", name)
        s = SETTINGS[name]
    else:
        if results.setdefault("protocol", {"setting": name, "steps": args.steps,
                                           "decay": args.decay}) != {
                "setting": name, "steps": args.steps, "decay": args.decay}:
            raise SystemExit(f"{args.out_dir} holds a run of {results['protocol']}: give the "
                             f"same --setting/--steps/--decay, or another --out-dir")
        args.results, args.budget = results, grid.Budget.of_minutes(args.budget_minutes)
        args.env = common.environment(torch.device(args.device))
        run(s, args)
        grid.record_call(results, args.env, args.budget.wall(), setting=name)
        grid.save_results(results, args.results_path)
    table = render(s, results, name)
    print(table)
    for path in args.splice:
        if not splice_blocks(path, {f"semisup-episodes-{name}": table}):
            raise SystemExit(f"{path} has no <!-- semisup-episodes-{name}:start --> marker")


if __name__ == "__main__":
    main()
