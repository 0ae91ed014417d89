"""MAML benchmarks: Omniglot accuracy (Finn et al. 2017's settings) and speed/memory side by side.

    python benchmarks/maml.py speed --device cuda            # full: GPU, meta-batch 32
    python benchmarks/maml.py omniglot --device cuda         # full: 4 settings x 2 orders
    python benchmarks/maml.py speed --quick                  # reduced CPU runs (said in the output)
    python benchmarks/maml.py omniglot --quick

speed: meta-batch 32 of 5-way 1-shot 15-query tasks, Conv-4 (64 filters), 28x28, 1 and 5 inner
steps, second order: seconds per meta-iteration (forward, backward, Adam; median after warm-up) and
peak memory of the library's vmapped MAML (transductive and per-step BatchNorm statistics), vmap in
chunks, the per-task loop and ``higher`` (when installed). Each variant runs in a fresh subprocess
so that its peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the
process's peak resident set (``common.peak_rss_gb``), with the resident set after setup (before the first
meta-iteration) alongside. Meta-gradients of every
variant are compared with the loop's on the same first batch (float32; TF32 off on GPU).

omniglot: Vinyals split, 28x28, Conv-4 (64 filters, max-pool), Adam 1e-3; 5-way: meta-batch 32, 1
inner step of 0.4 (3 at test); 20-way: meta-batch 16, 5 inner steps of 0.1 (5 at test); 60,000
meta-iterations; scored on fixed test episodes (15 queries per class) with 95% intervals.
``--bn transductive per_step`` trains and scores both BatchNorm modes side by side (a model trained
with ``per_step`` is also scored transductively: the training is the same). ``--eval-steps 1 3``
scores every model with each number of test inner steps on the same episodes, with paired tests
(``fewshot.engine.evaluate.paired_test``) against the first; ``--save-dir`` keeps the checkpoints (for
``benchmarks/maml_per_step.py``), which ``--rescore`` scores again instead of training.
Published (second / first order): 98.7 / 98.3, 99.9 / 99.2, 95.8 / 89.4, 98.9 / 97.9.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from common import environment, median, omniglot_root, peak_rss_gb, step_times, write_json
from peer_maml import higher_meta_loss, maml_batch

from episodes import EpisodeSampler, FixedEpisodes, omniglot
from episodes.io import default_cache_dir
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, load_learner, train
from fewshot.engine.evaluate import EvalResult, paired_test

SETTINGS = {  # name: n, k, meta-batch, inner steps, inner lr, test steps, train queries
    "5w1s": (5, 1, 32, 1, 0.4, 3, 15), "5w5s": (5, 5, 32, 1, 0.4, 3, 15),
    "20w1s": (20, 1, 16, 5, 0.1, 5, 5), "20w5s": (20, 5, 16, 5, 0.1, 5, 5)}


# ---------------------------------------------------------------- speed and memory
def worker(cfg: dict) -> dict:
    """One variant in this (fresh) process: time meta-iterations, measure peak memory."""
    device = torch.device(cfg["device"])
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    t, n = cfg["batch"], 5
    spec = ModelSpec("maml", "conv4", 1, 28, {"inner_steps": cfg["steps"], "n_way": n,
                                              "vmap": cfg["variant"] != "loop",
                                              "bn": "per_step" if cfg["variant"] == "per_step"
                                              else "transductive",
                                              "chunk_size": cfg.get("chunk"),
                                              "hidden": cfg.get("hidden", 64)})
    learner = build_learner(spec).to(device)
    opt = torch.optim.Adam(learner.parameters(), 1e-3)
    sx, sy, qx, qy = maml_batch(t, device)

    def meta_loss() -> torch.Tensor:
        if cfg["variant"] != "higher":
            return learner.loss(learner(sx, sy, qx, n), qy)
        return higher_meta_loss(learner.net, sx, sy, qx, qy, cfg["steps"])

    def step(update: bool = True) -> None:
        opt.zero_grad(set_to_none=True)
        loss = meta_loss()
        if loss.requires_grad:
            loss.backward()
        if update:
            opt.step()

    rss0 = peak_rss_gb()
    step(update=False)  # the gradient check, on the untrained weights
    grads = torch.cat([p.grad.flatten() for p in learner.net.parameters()]).cpu()
    torch.save(grads, cfg["grad_file"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = step_times(step, device, cfg["warmup"], cfg["iters"])
    out = {"s_per_iter": median(times), "times": times}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        out["peak_rss_gib"] = peak_rss_gb()
        out["rss_before_gib"] = rss0
    return out


def speed(args: argparse.Namespace, result: dict) -> None:
    """Each variant in a fresh subprocess; rows printed and saved as soon as they finish."""
    variants = [("loop", None), ("vmap", None), ("per_step", None),
                *[("chunked", c) for c in args.chunks]]
    try:
        import higher  # noqa: F401
        variants.append(("higher", None))
    except ImportError:
        print("higher is not installed: skipping it (pip install higher)")
    variants = [v for v in variants if v[0] in args.variants]
    result["rows"] = rows = []
    tmp = Path(default_cache_dir()) / "maml-bench"
    tmp.mkdir(parents=True, exist_ok=True)
    for steps in args.steps:
        ref = None
        for variant, chunk in variants:
            cfg = {"device": args.device, "batch": args.batch, "steps": steps, "variant": variant,
                   "hidden": args.hidden, "chunk": chunk, "warmup": args.warmup,
                   "iters": args.iters, "grad_file": str(tmp / f"grad-{variant}-{chunk}-{steps}.pt")}
            proc = subprocess.run([sys.executable, __file__, "_worker", json.dumps(cfg)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:])
                rows.append({**cfg, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            row = {**cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}
            grads = torch.load(cfg["grad_file"], weights_only=True)
            ref = grads if variant == "loop" else ref
            row["grad_rel_diff_vs_loop"] = (float((grads - ref).norm() / ref.norm())
                                            if ref is not None else float("nan"))
            rows.append(row)
            mem = row.get("peak_gib", row.get("peak_rss_gib"))
            print(f"{steps} step(s) {variant:6s} chunk={chunk} width={args.hidden}: "
                  f"{row['s_per_iter']:.3f} s/iter, peak {mem:.2f} GiB, "
                  f"grad diff vs loop {row['grad_rel_diff_vs_loop']:.1e}", flush=True)
            save(result, args.out)


# ---------------------------------------------------------------- Omniglot accuracy
def accuracy(args: argparse.Namespace, result: dict) -> None:
    device = torch.device(args.device)
    root = omniglot_root()
    train_ds, test_ds = omniglot(root, "train").to(device), omniglot(root, "test").to(device)
    result["rows"] = results = []
    for name in args.settings:
        n, k, batch, steps, lr, test_steps, q = SETTINGS[name]
        batch = args.batch or batch
        episodes = FixedEpisodes.generate(test_ds, n, k, 15, args.test_episodes, seed=2017)
        for order, bn in [(o, b) for o in args.orders for b in args.bn]:
            torch.manual_seed(0)
            spec = ModelSpec("maml", "conv4", 1, 28, {
                "hidden": args.hidden, "n_way": n, "inner_steps": steps, "eval_inner_steps": test_steps,
                "inner_lr": lr, "first_order": order == "first", "chunk_size": args.chunk, "bn": bn})
            learner = build_learner(spec)
            sampler = EpisodeSampler(train_ds, n, k, q, episodes_per_batch=batch, seed=0)
            keep = (str(Path(args.save_dir) / f"{name}-{order}-{bn}") if args.save_dir else None)
            if args.rescore:  # the model kept by an earlier run, scored with the current code
                learner, _, ckpt = load_learner(Path(keep) / "last.pt", device)
                steps, seconds = ckpt["step"], ckpt["seconds"]
            else:
                run = train(learner, spec, sampler, TrainConfig(
                    steps=args.iterations, lr=1e-3, time_limit=args.time_limit, progress=False,
                    checkpoint_dir=keep), device=device)
                steps, seconds = run.steps, run.seconds
            base = {"setting": name, "order": order, "bn": bn, "meta_batch": batch,
                    "iterations": steps, "train_seconds": seconds,
                    "s_per_iter": seconds / max(steps, 1), "rescored": args.rescore}
            print(f"{name} {order} order, {bn} BatchNorm: {steps} iterations ({seconds:.0f} s)",
                  flush=True)
            for eval_bn in ([bn, "transductive"] if bn == "per_step" else [bn]):
                ref = None  # paired tests against the first test steps, same statistics
                for eval_steps in args.eval_steps or [test_steps]:
                    res = scored(learner, episodes, test_ds, eval_steps, eval_bn, args, device)
                    row = {**base, "eval_bn": eval_bn, "eval_steps": eval_steps, "acc": res.mean,
                           "ci95": res.ci95, "test_episodes": len(res.accuracies),
                           "accuracies": res.accuracies.tolist()}
                    if ref is not None:
                        row["paired_vs_first"] = paired_test(res, ref)
                    ref = res if ref is None else ref
                    print(f"  scored with {eval_bn} statistics, {eval_steps} test step(s): "
                          f"{100 * res.mean:.2f} +- {100 * res.ci95:.2f} %"
                          + (f"; minus the first: {row['paired_vs_first']}" if "paired_vs_first"
                             in row else ""), flush=True)
                    results.append(row)
            save(result, args.out)


def scored(learner: torch.nn.Module, episodes: FixedEpisodes, test_ds, steps: int, bn: str,
           args: argparse.Namespace, device: torch.device) -> EvalResult:
    """Test accuracy with ``steps`` test inner steps and ``bn`` statistics: a learner trained with
    ``bn=per_step`` can also be scored transductively (its training is the transductive one)."""
    stats, steps_before = learner.bn_stats, learner.eval_inner_steps
    learner.bn_stats = stats if bn == "per_step" else None
    learner.eval_inner_steps = steps
    try:
        return evaluate(learner, episodes, test_ds, batch_size=args.eval_batch, device=device)
    finally:
        learner.bn_stats, learner.eval_inner_steps = stats, steps_before


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["speed", "omniglot"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="reduced CPU run (fewer iterations)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5], help="speed: inner steps")
    p.add_argument("--chunks", type=int, nargs="*", default=[8], help="speed: chunk sizes")
    p.add_argument("--variants", nargs="+", default=["loop", "vmap", "per_step", "chunked", "higher"],
                   help="speed: which of loop, vmap, per_step (vmap, per-step BatchNorm statistics), "
                        "chunked (vmap with --chunks), higher to run")
    p.add_argument("--batch", type=int, help="meta-batch (speed: 32; omniglot: the paper's)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20, help="speed: timed meta-iterations")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--orders", nargs="+", default=["second", "first"])
    p.add_argument("--bn", nargs="+", default=["transductive"], choices=["transductive", "per_step"],
                   help="omniglot: BatchNorm statistics (both: side by side)")
    p.add_argument("--eval-steps", type=int, nargs="+",
                   help="omniglot: test inner steps to score every model with, on the same "
                        "episodes, with paired tests against the first (default: the setting's)")
    p.add_argument("--save-dir", help="omniglot: keep each run's checkpoints in a folder here")
    p.add_argument("--rescore", action="store_true",
                   help="omniglot: score the checkpoints in --save-dir instead of training")
    p.add_argument("--iterations", type=int, default=60000, help="omniglot: meta-iterations")
    p.add_argument("--time-limit", type=float, help="omniglot: seconds of training per run")
    p.add_argument("--test-episodes", type=int, help="omniglot: fixed test episodes (1000; 100 --quick)")
    p.add_argument("--eval-batch", type=int, default=50)
    p.add_argument("--chunk", type=int, help="omniglot: chunk size of the task batch")
    p.add_argument("--hidden", type=int, default=64, help="Conv-4 width (64 in the papers)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.quick:  # reduced CPU run: few timed iterations, short training, fewer test episodes
        args.warmup, args.iters = 0, min(args.iters, 2)  # the gradient-check iteration warms up
        args.test_episodes = args.test_episodes or 100
        args.time_limit = args.time_limit or 180.0
    args.test_episodes = args.test_episodes or 1000
    if args.part == "speed":
        args.batch = args.batch or 32
    result = {**environment(torch.device(args.device)),
              "mode": "reduced CPU run" if args.quick else "full protocol"}
    (speed if args.part == "speed" else accuracy)(args, result)
    save(result, args.out)


def save(result: dict, path: str | None) -> None:
    """Write the results gathered so far (after every row: a killed run keeps them)."""
    if path:
        write_json(result, path)


if __name__ == "__main__":
    main()
