"""How fast is the CPU path, and what makes it faster? Side by side in one run.

Every variant runs in its own process (so thread counts, allocator settings and peak RSS are its
own), on synthetic images of the real shapes (speed does not depend on pixel values), and the
variants take turns over ``--rounds`` rounds, so a busy machine slows them alike; the median
round is reported. Workloads: ProtoNet Conv-4 on Omniglot-sized episodes (1x28x28, 5-way 1-shot
15-query) and on mini-ImageNet-sized ones (3x84x84, 5-way 5-shot 15-query).

    python benchmarks/cpu_speed.py --baseline-src /path/to/old/checkout --json out.json
    python benchmarks/cpu_speed.py --raw 28 84       # a plain Conv-4 step: fp32/bf16 x NCHW/NHWC
    python benchmarks/cpu_speed.py --raw 84 --raw-backbone resnet12 --raw-batch 16

Variants: ``code=<src>`` the library at another checkout (``--baseline-src``); ``default`` (the
CPU fast path: ``--precision auto``, channels-last weights); ``fp32``, ``bf16`` (that precision,
channels-last); ``fp32-nchw`` (fp32 without channels-last, the path before the fast path);
``threads=1``; ``thp`` (PyTorch's CPU allocator asks for transparent huge pages,
``THP_MEM_ALLOC_ENABLE=1``); ``compile`` (the default with the backbone through
``torch.compile``; its compilation in the warm-up); ``T=4`` (four episodes per step).

``--raw``: no training loop, a plain backbone (``--raw-backbone``, default Conv-4: four
conv-BN-ReLU-pool blocks of 64) forward and backward on ``--raw-batch`` images (80) per side given,
in fp32 and bf16 autocast, NCHW and channels-last, in one process taking turns (one thread unless
``--threads``), the median of ``--rounds`` rounds after one warm-up round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

WORKLOADS = {"omniglot": {"shape": (1, 28, 28), "way": 5, "shot": 1, "query": 15},
             "mini": {"shape": (3, 84, 84), "way": 5, "shot": 5, "query": 15}}
VARIANTS = ["default", "fp32", "bf16", "fp32-nchw", "threads=1", "thp", "compile", "T=4"]


def child(cfg: dict) -> dict:
    """One measurement in this process: training episodes/s, evaluation episodes/s, peak RSS."""
    sys.path.insert(0, cfg["src"])
    import torch

    from episodes import EpisodeSampler, FixedEpisodes, TensorClassDataset
    from fewshot import TrainConfig, build_learner, evaluate, make_spec, train

    if cfg["variant"] == "threads=1":
        torch.set_num_threads(1)
    w = WORKLOADS[cfg["workload"]]
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(32).repeat_interleave(25)
    images = torch.randint(0, 256, (len(targets), *w["shape"]), generator=g, dtype=torch.uint8)
    data = TensorClassDataset(images, targets, [f"c{i}" for i in range(32)])
    torch.manual_seed(0)
    spec = make_spec("protonet", "conv4", w["shape"][0], w["shape"][1], {})
    learner = build_learner(spec)
    if cfg["variant"] == "compile":
        learner.backbone = torch.compile(learner.backbone)
    per_step = 4 if cfg["variant"] == "T=4" else 1
    steps = max(cfg["steps"] // per_step, 2)
    sampler = EpisodeSampler(data, w["way"], w["shot"], w["query"], per_step, seed=0)
    options, scoring = {"progress": False}, {}
    if "precision" in {f.name for f in fields(TrainConfig)}:  # not in a checkout before it
        from fewshot.engine.precision import resolve_precision
        variant = cfg["variant"]
        options["precision"] = variant[:4] if variant.startswith(("fp32", "bf16")) else "auto"
        options["channels_last"] = False if variant.endswith("nchw") else None
        scoring["precision"] = resolve_precision(options["precision"], "cpu", spec.method)
    train(learner, spec, sampler, TrainConfig(steps=2, **options))  # warm-up
    result = train(learner, spec, sampler, TrainConfig(steps=2 + steps, **options))
    episodes = FixedEpisodes.generate(data, w["way"], w["shot"], w["query"], cfg["episodes"], 1)
    evaluate(learner, FixedEpisodes(episodes.classes[:2], episodes.items[:2], episodes.k_shot,
                                    episodes.fingerprint), data, **scoring)  # warm-up
    start = time.perf_counter()
    evaluate(learner, episodes, data, **scoring)
    eval_s = time.perf_counter() - start
    return {"precision": scoring.get("precision", "fp32"),
            "train_episodes_per_s": result.episodes / result.seconds,
            "eval_episodes_per_s": cfg["episodes"] / eval_s,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def raw_step(side: int, rounds: int, backbone: str = "conv4", batch: int = 80
             ) -> dict[str, float]:
    """Median milliseconds of a plain ``backbone`` forward and backward on ``[batch, C, side,
    side]`` random images (C: 1 for 28, else 3) in fp32/bf16 x NCHW/channels-last, taking
    turns."""
    import torch

    from fewshot.engine.precision import autocast, to_channels_last
    from fewshot.models.backbones import make_backbone

    channels = 1 if side == 28 else 3
    variants = {}
    for name in ("fp32 NCHW", "bf16 NCHW", "fp32 NHWC", "bf16 NHWC"):
        torch.manual_seed(0)
        model = make_backbone(backbone, channels)
        x = torch.randn(batch, channels, side, side)
        variants[name] = (to_channels_last(model) if "NHWC" in name else model, x,
                          name.split()[0])

    def step(model, x, precision) -> None:
        with autocast(torch.device("cpu"), precision):
            loss = model(x).float().pow(2).mean()
        loss.backward()

    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds + 1):  # round 0: warm-up
        for name, args in variants.items():
            start = time.perf_counter()
            step(*args)
            if r:
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def run_variant(variant: str, src: str, workload: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if variant == "thp":
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cfg = {"variant": variant, "src": src, "workload": workload, "steps": args.steps,
           "episodes": args.episodes}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--baseline-src", help="an older checkout to compare with (variant code=...)")
    p.add_argument("--variants", nargs="*", default=VARIANTS)
    p.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="timed training episodes per round")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per round")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--raw", type=int, nargs="+", metavar="SIDE", help="time a plain backbone "
                   "step on images of this side (28, 84) instead of the library's variants")
    p.add_argument("--raw-backbone", default="conv4", help="--raw: the backbone")
    p.add_argument("--raw-batch", type=int, default=80, help="--raw: images per step")
    p.add_argument("--threads", type=int, default=1, help="--raw: CPU threads")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.raw:
        import torch
        torch.set_num_threads(args.threads)
        raw = {side: raw_step(side, args.rounds, args.raw_backbone, args.raw_batch)
               for side in args.raw}
        for side, ms in raw.items():
            print(f"{side}x{side}: " + ", ".join(f"{k} {v:.1f} ms ({ms['fp32 NCHW'] / v:.2f}x)"
                                                  for k, v in ms.items()), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"raw_ms": raw, "threads": args.threads,
                                                   "backbone": args.raw_backbone,
                                                   "batch": args.raw_batch,
                                                   "load": os.getloadavg()}, indent=1))
        return
    here = str(Path(__file__).resolve().parents[1])
    runs = [(v, here) for v in args.variants]
    if args.baseline_src:
        runs.insert(0, (f"code={Path(args.baseline_src).name}", args.baseline_src))
    results: dict = {}
    for workload in args.workloads:
        for r in range(args.rounds):
            for variant, src in runs:
                res = run_variant(variant.split("code=")[0] or "default", src, workload, args)
                results.setdefault(workload, {}).setdefault(variant, []).append(res)
                print(f"{workload} round {r} {variant}: {res}", flush=True)
    summary = {w: {v: {k: statistics.median(x[k] for x in rs) if k != "precision" else rs[0][k]
                       for k in rs[0]} for v, rs in vs.items()} for w, vs in results.items()}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results,
                                               "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
