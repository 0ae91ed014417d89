"""Issue 10: how fast is the CPU path, and what makes it faster? Side by side in one run.

Every variant runs in its own process (so thread counts, allocator settings and peak RSS are its
own), on synthetic images of the real shapes (speed does not depend on pixel values), and the
variants take turns over ``--rounds`` rounds, so a busy machine slows them alike; the median
round is reported. Workloads: ProtoNet Conv-4 on Omniglot-sized episodes (1x28x28, 5-way 1-shot
15-query) and on mini-ImageNet-sized ones (3x84x84, 5-way 5-shot 15-query).

    python benchmarks/cpu_speed.py --baseline-src /path/to/old/checkout --json out.json

Variants: ``code=<src>`` the library at another checkout (``--baseline-src``, e.g. the commit
before issue 15); ``default``; ``threads=1``; ``thp`` (PyTorch's CPU allocator asks for
transparent huge pages, ``THP_MEM_ALLOC_ENABLE=1``); ``channels_last`` (model and images in
NHWC); ``T=4`` (four episodes per step).
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
from pathlib import Path

WORKLOADS = {"omniglot": {"shape": (1, 28, 28), "way": 5, "shot": 1, "query": 15},
             "mini": {"shape": (3, 84, 84), "way": 5, "shot": 5, "query": 15}}
VARIANTS = ["default", "threads=1", "thp", "channels_last", "T=4"]


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
    if cfg["variant"] == "channels_last":
        backbone = learner.backbone.to(memory_format=torch.channels_last)
        learner.backbone = torch.nn.Sequential(ChannelsLast(), backbone)
    per_step = 4 if cfg["variant"] == "T=4" else 1
    steps = max(cfg["steps"] // per_step, 2)
    sampler = EpisodeSampler(data, w["way"], w["shot"], w["query"], per_step, seed=0)
    train(learner, spec, sampler, TrainConfig(steps=2, progress=False))  # warm-up
    result = train(learner, spec, sampler, TrainConfig(steps=2 + steps, progress=False,
                                                       resume=False))
    episodes = FixedEpisodes.generate(data, w["way"], w["shot"], w["query"], cfg["episodes"], 1)
    evaluate(learner, FixedEpisodes(episodes.classes[:2], episodes.items[:2], episodes.k_shot,
                                    episodes.fingerprint), data)  # warm-up
    start = time.perf_counter()
    evaluate(learner, episodes, data)
    eval_s = time.perf_counter() - start
    return {"train_episodes_per_s": result.episodes / result.seconds,
            "eval_episodes_per_s": cfg["episodes"] / eval_s,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class ChannelsLast:
    """Module-like callable: images to NHWC memory format (for the channels_last variant)."""

    def __new__(cls):
        import torch

        class _M(torch.nn.Module):
            def forward(self, x):
                return x.contiguous(memory_format=torch.channels_last)
        return _M()


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
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
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
    summary = {w: {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                   for v, rs in vs.items()} for w, vs in results.items()}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results,
                                               "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
