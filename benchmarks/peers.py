"""Training speed side by side with the peers, in one run per part.

    python benchmarks/peers.py metric --device cuda --out benchmarks/out/peers-metric.json
    python benchmarks/peers.py maml --steps 1 --device cuda --out benchmarks/out/peers-maml1.json
    python benchmarks/peers.py maml --steps 5 --device cuda --out benchmarks/out/peers-maml5.json
    python benchmarks/peers.py --render benchmarks/out/peers-metric.json   # the Markdown table
    python benchmarks/peers.py metric --quick                              # reduced CPU run

Every variant runs in a fresh subprocess (its peak memory is its own, nothing is shared between
variants), one after the other (``--together``: all in one process, taking turns round by round,
so a changing load slows them alike; ``--repeat``: the whole sequence again, medians); a variant
whose package is not installed, or that needs CUDA on a CPU, is listed as skipped, and a variant
that fails is listed with its error.

metric: training episodes/s at 5-way 1-shot 15-query on random 1x28x28 images (Omniglot's shape;
speed does not depend on the pixels), all sampled on the device by our EpisodeSampler, so the
methods are compared, not data loaders: ours (ProtoNet, Matching with FCE, Relation) through
``fewshot.train`` with the episodes per step that ``--episodes-per-step auto`` picks on this device
and with one; ProtoNet written as a plain loop; easyfsl's classifiers with their training step
(:mod:`peer_metric`). A warm-up round, then ``--rounds`` rounds of ``--episodes`` episodes (each
cut at ``--round-seconds``); the median round.

maml: seconds per meta-iteration (meta-batch ``--batch``, 5-way 1-shot 15-query, ``--steps``
inner steps of 0.4, second order; forward, backward, Adam) on a fixed random batch: ours (eager,
its ``compile=true`` option, CUDA graph replay of the eager iteration), a plain autograd loop,
``higher`` and parallel-metalearn (vmap and sequential) (:mod:`peer_maml`), all from the same
Conv-4 weights (the first meta-loss is printed for comparison). ``--warmup`` iterations, then
``--iters`` timed ones (stopped after ``--max-seconds``); the median. Peak memory: CUDA
``max_memory_allocated`` (reset after set-up); on a CPU the process's peak resident set, with the
resident set after set-up beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import common
import peer_metric as pmet
import torch
from peer_workers import worker

METRIC_METHODS = list(pmet.METRIC_SPECS)
METRIC_VARIANTS = ["fewshot-auto", "fewshot-1", "fewshot-1-fp32", "fewshot-1-bf16",
                   "fewshot-1-fp32-nchw", "plain", "easyfsl"]
MAML_VARIANTS = ["fewshot", "fewshot-bf16", "fewshot-compile", "fewshot-cudagraph", "plain",
                 "higher", "metalearn-vmap", "metalearn-seq"]
HEADLINE = {"metric": "episodes_per_s", "maml": "s_per_iter"}  # the median over --repeat
NEEDS = {"easyfsl": "easyfsl", "higher": "higher", "metalearn-vmap": "metalearn",
         "metalearn-seq": "metalearn"}  # variant -> module it imports
PIP = {"easyfsl": "easyfsl", "higher": "higher", "metalearn": "parallel-metalearn"}
SETTINGS = {"rounds": (int, "metric: timed rounds"),
            "episodes": (int, "metric: episodes per round"),
            "warmup_episodes": (int, "metric: episodes of the untimed round"),
            "round_seconds": (float, "metric: cut a round after this many seconds"),
            "batch": (int, "maml: tasks per meta-iteration"),
            "warmup": (int, "maml: untimed iterations, the first one's loss kept (>= 1)"),
            "iters": (int, "maml: timed iterations"),
            "max_seconds": (float, "maml: stop timing a variant after this many seconds (at "
                                   "least 2 timed)")}
FULL = {"rounds": 3, "episodes": 2000, "warmup_episodes": 200, "round_seconds": 8.0,
        "batch": 32, "warmup": 3, "iters": 20, "max_seconds": 40.0}
QUICK = {"rounds": 2, "episodes": 6, "warmup_episodes": 2, "round_seconds": 8.0,
         "batch": 4, "warmup": 1, "iters": 2, "max_seconds": 40.0}


def skip_reason(variant: str, device: str) -> str | None:
    """Why a variant cannot run here (None: it can)."""
    module = NEEDS.get(variant)
    if module and importlib.util.find_spec(module) is None:
        return f"skipped: {PIP[module]} is not installed (pip install '.[peers]')"
    if variant == "fewshot-cudagraph" and torch.device(device).type != "cuda":
        return "skipped: needs CUDA"
    return None


# ---------------------------------------------------------------- the run
def run_part(args: argparse.Namespace, result: dict) -> None:
    """Each variant in a fresh subprocess (with ``--together``, all of them in one, taking turns
    round by round), all of them in turn ``--repeat`` times (a busy machine slows them alike);
    rows printed and saved as they finish, each row's figure the median of its repeats so far."""
    if args.part == "metric":
        jobs = [{"variant": v, "method": m} for m in args.methods for v in args.variants
                if v != "plain" or m == "protonet"]  # the plain loop is written for ProtoNet
    else:
        jobs = [{"variant": v, "steps": s} for s in args.steps for v in args.variants]
    keys = ("device", "threads", "rounds", "episodes", "warmup_episodes", "round_seconds",
            "batch", "hidden", "vmap", "warmup", "iters", "max_seconds")
    cfg = {"part": args.part, **{k: getattr(args, k) for k in keys}}
    result["rows"] = rows = []
    key = HEADLINE[args.part]
    for repeat in range(args.repeat):
        for i, row in enumerate(measure(jobs, cfg, args.together)):
            if repeat and "skipped" not in row:
                row["repeats"] = rows[i]["repeats"] + [row[key]]
                row[key] = statistics.median(row["repeats"])
                rows[i] = row
            elif not repeat:
                rows.append({**row, "repeats": [row[key]]} if "skipped" not in row else row)
            print(row_text(rows[i]), flush=True)
            if args.out:
                common.write_json(result, args.out)


def measure(jobs: list[dict], cfg: dict, together: bool) -> Iterator[dict]:
    """A row per job: its figures, or why it was skipped (or failed)."""
    reasons = [skip_reason(job["variant"], cfg["device"]) for job in jobs]
    if together:
        runnable = [job for job, reason in zip(jobs, reasons, strict=True) if reason is None]
        proc = launch({**cfg, "jobs": runnable})
        failed = proc.returncode and failure(proc)
        measured = iter([] if failed else json.loads(proc.stdout.strip().splitlines()[-1]))
        for job, reason in zip(jobs, reasons, strict=True):
            yield {**job, **({"skipped": reason or failed} if reason or failed
                             else next(measured))}
        return
    for job, reason in zip(jobs, reasons, strict=True):
        if reason is None:
            proc = launch({**cfg, **job})
            reason = proc.returncode and failure(proc)
        yield {**job, **({"skipped": reason} if reason
                         else json.loads(proc.stdout.strip().splitlines()[-1]))}


def failure(proc: subprocess.CompletedProcess) -> str:
    """The error line of a failed worker (its stderr's tail printed)."""
    print(proc.stderr[-3000:], file=sys.stderr)
    return "error: " + (proc.stderr.strip().splitlines() or ["?"])[-1]


def launch(cfg: dict) -> subprocess.CompletedProcess:
    """:func:`worker` of ``cfg`` in a fresh Python process (its JSON on the last line)."""
    return subprocess.run([sys.executable, __file__, "_worker", json.dumps(cfg)],
                          capture_output=True, text=True)


def row_text(row: dict) -> str:
    name = f"{row['variant']:17s} " + (row.get("method", "") or f"{row['steps']} step(s)")
    if "skipped" in row:
        return f"{name}: {row['skipped']}"
    mem = memory_text(row)
    if "episodes_per_s" in row:
        return (f"{name}: {row['episodes_per_s']:.1f} episodes/s ({row['episodes_per_step']} per "
                f"step), peak {mem}")
    return (f"{name}: {row['s_per_iter']:.4f} s/iteration, peak {mem}, first loss "
            f"{row['first_loss']:.6f}")


def memory_text(row: dict) -> str:
    if "peak_cuda_gb" in row:
        return f"{row['peak_cuda_gb']:.2f} GiB CUDA"
    if row.get("together"):
        return f"{row['peak_rss_gb']:.2f} GiB RSS (the variants' process)"
    return f"{row['peak_rss_gb']:.2f} GiB RSS ({row['rss_after_setup_gb']:.2f} after set-up)"


def markdown(result: dict) -> str:
    """The table of a results JSON."""
    head = (f"{result['mode']}; {result['device']}; torch {result['torch']}; {result['date']}; "
            f"load average {result['load_before']} before, {result.get('load_after')} after")
    rows = result["rows"]
    if result["part"] == "metric":
        lines = ["| method | variant | precision, layout | episodes/step | episodes/s (median) | "
                 "per repeat | peak memory |", "|---|---|---|---|---|---|---|"]
        for r in rows:  # peers, and ours before precisions were recorded: fp32, NCHW
            layout = (f"{r.get('precision', 'fp32')}, "
                      f"{'NHWC' if r.get('channels_last') else 'NCHW'}")
            lines.append(f"| {r['method']} | {r['variant']} | " + (
                f"{layout} | {r['episodes_per_step']} | {r['episodes_per_s']:.1f} | "
                f"{[round(x, 1) for x in r.get('repeats', [r['episodes_per_s']])]} | "
                f"{memory_text(r)} |" if "skipped" not in r else f"| {r['skipped']} | | | |"))
    else:
        lines = ["| inner steps | variant | s / meta-iteration (median) | timed | first iteration "
                 "(s) | first loss | peak memory |", "|---|---|---|---|---|---|---|"]
        for r in rows:  # --together measures no first iteration on its own
            first = f"{r['first_iter_s']:.2f}" if "first_iter_s" in r else "-"
            lines.append(f"| {r['steps']} | {r['variant']} | " + (
                f"{r['s_per_iter']:.4f} | {len(r['times'])} | {first} | "
                f"{r['first_loss']:.6f} | {memory_text(r)} |" if "skipped" not in r
                else f"{r['skipped']} | | | | |"))
    return "\n".join([head, "", *lines])


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("part", nargs="?", choices=["metric", "maml"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="reduced CPU run: few episodes and iterations, MAML batch 4, 1 thread")
    p.add_argument("--variants", nargs="+", help=f"metric: of {METRIC_VARIANTS}; maml: of "
                   f"{MAML_VARIANTS} (default: all)")
    p.add_argument("--methods", nargs="+", default=METRIC_METHODS, choices=METRIC_METHODS)
    for key, (kind, help_text) in SETTINGS.items():
        p.add_argument("--" + key.replace("_", "-"), type=kind, default=None,
                       help=f"{help_text} (default {FULL[key]}; {QUICK[key]} with --quick)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5], help="maml: inner steps")
    p.add_argument("--hidden", type=int, default=64, help="maml: Conv-4 width")
    p.add_argument("--vmap", default="auto", choices=["auto", "true", "false"],
                   help="maml: our variants' vmap option (auto: the device's default)")
    p.add_argument("--threads", type=int, help="CPU threads (default torch's; 1 with --quick)")
    p.add_argument("--together", action="store_true", help="all variants in one process, "
                   "taking turns round by round (metric: --rounds; maml: --iters single "
                   "iterations); peak memory is then theirs together")
    p.add_argument("--repeat", type=int, default=1, help="run all the variants in turn this many "
                   "times; each row's figure is the median of its repeats")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--render", type=Path, help="print the Markdown table of a results JSON")
    args = p.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return
    if args.part is None:
        p.error("give a part (metric or maml), or --render FILE")
    allowed = METRIC_VARIANTS if args.part == "metric" else MAML_VARIANTS
    args.variants = args.variants or allowed
    if bad := [v for v in args.variants if v not in allowed]:
        p.error(f"--variants {' '.join(bad)}: {args.part} variants are {', '.join(allowed)}")
    for key in SETTINGS:
        if getattr(args, key) is None:
            setattr(args, key, (QUICK if args.quick else FULL)[key])
    if args.quick:
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    full = all(getattr(args, k) == FULL[k] for k in FULL) and args.hidden == 64
    mode = ("full settings" if full else "reduced CPU run (--quick)" if args.quick
            else "reduced settings")
    result = {"part": args.part, "mode": mode, **common.environment(torch.device(args.device)),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "render")},
              "load_before": [round(x, 2) for x in os.getloadavg()]}
    run_part(args, result)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        common.write_json(result, args.out)
        print(markdown(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
