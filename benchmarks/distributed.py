"""Meta-training throughput with 1 and several processes (torch.distributed).

Each configuration runs the one training loop (:func:`fewshot.engine.train.train`) under ``torchrun``
on synthetic images of Omniglot's shape (1x28x28; speed does not depend on pixel values), with
the same global batch of T episodes per step split across the processes, and reports training
episodes/s (rank 0's clock, after a warm-up), the time of one all-reduce of a gradient-sized
buffer, and the bytes each rank sends per step (ring all-reduce: ``2 (W-1)/W`` x gradient bytes).
Configurations take turns over ``--rounds`` rounds, so a busy machine slows them alike; the median
is reported.

    python benchmarks/distributed.py                        # CPU: 1 and 2 processes, gloo
    python benchmarks/distributed.py --device cuda --procs 1 2 4 8 --threads 4 --episodes 64

Workloads: ProtoNet Conv-4 (5-way 1-shot 15-query; DDP) and MAML Conv-4 (5-way 1-shot 15-query,
one inner step, second order; all-reduce of the meta-gradient).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
METHODS = {"protonet": {}, "maml": {"n_way": 5, "inner_steps": 1}}


def worker(args: argparse.Namespace) -> None:
    """One measurement, on every rank of a torchrun launch; rank 0 prints one JSON line."""
    sys.path.insert(0, str(CHECKOUT))
    import torch
    import torch.distributed as dist

    from episodes import EpisodeSampler, TensorClassDataset
    from fewshot import TrainConfig, build_learner, make_spec, train
    from fewshot.engine import distributed as fd

    torch.set_num_threads(args.threads)
    device = fd.local_device(torch.device(args.device))
    ctx = fd.init(device, timeout=300)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (200 * 20, 1, 28, 28), generator=g, dtype=torch.uint8)
    ds = TensorClassDataset(images, torch.arange(200).repeat_interleave(20),
                            [str(c) for c in range(200)]).to(device)
    torch.manual_seed(0)
    learner = build_learner(make_spec(args.method, "conv4", 1, 28, dict(METHODS[args.method])))
    sampler = EpisodeSampler(ds, 5, 1, 15, episodes_per_batch=args.episodes, seed=0)
    run = TrainConfig(steps=args.warmup, progress=False)
    train(learner, None, sampler, run, device=device)
    result = train(learner, None, sampler, TrainConfig(steps=args.steps, progress=False),
                   device=device)
    grad_bytes = sum(p.numel() * p.element_size() for p in learner.parameters()
                     if p.requires_grad)
    comm_ms = 0.0
    if ctx.active:
        flat = torch.zeros(grad_bytes // 4, device=device)
        for _ in range(3):
            dist.all_reduce(flat)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(flat)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        comm_ms = (time.perf_counter() - tick) / 20 * 1000
    if ctx.main:
        w = ctx.world_size
        print(json.dumps({"method": args.method, "procs": w, "threads": args.threads,
                          "episodes_per_step": args.episodes,
                          "episodes_per_s": result.episodes_per_second,
                          "step_ms": 1000 * result.seconds / args.steps,
                          "allreduce_ms": comm_ms, "grad_bytes": grad_bytes,
                          "sent_bytes_per_step": int(2 * (w - 1) / w * grad_bytes)}),
              flush=True)
    fd.shutdown()


def launch(method: str, procs: int, args: argparse.Namespace) -> dict:
    """One configuration under torchrun; rank 0's JSON."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
           "--standalone", str(Path(__file__).resolve()), "--worker",
           "--method", method, "--device", args.device, "--threads", str(args.threads),
           "--episodes", str(args.episodes), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        sys.exit(f"{method} on {procs} processes failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=tuple(METHODS), default="protonet")
    p.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    p.add_argument("--device", default="cpu", help="cpu or cuda (each process takes its GPU)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--episodes", type=int, default=8, help="episodes per step (all processes)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=3, help="turns of every configuration")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.rounds):
        for method in args.methods:
            for procs in args.procs:
                runs.setdefault((method, procs), []).append(launch(method, procs, args))
    rows = []
    for (method, procs), results in runs.items():
        row = dict(results[0])
        for key in ("episodes_per_s", "step_ms", "allreduce_ms"):
            row[key] = statistics.median(r[key] for r in results)
        row["rounds"] = [round(r["episodes_per_s"], 2) for r in results]
        rows.append(row)
        print(f"{method:9s} {procs} proc x {args.threads} thread(s): "
              f"{row['episodes_per_s']:7.2f} episodes/s (rounds {row['rounds']}), step "
              f"{row['step_ms']:.1f} ms, all-reduce of {row['grad_bytes'] / 1e6:.2f} MB "
              f"{row['allreduce_ms']:.2f} ms")
    print(f"load average: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
