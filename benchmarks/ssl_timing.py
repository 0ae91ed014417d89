"""Seconds per training epoch of each self-supervised method (and of the supervised fine-tuning)
at a preset's sizes, from the median of a few timed steps: the estimate of a benchmark run's
length before running it. Prints one line per model and the total of the preset.

    python benchmarks/ssl_timing.py --preset cpu --threads 1 --steps 3
    python benchmarks/ssl_timing.py --preset cpu --threads 1 --steps 3 --methods gan

``--methods`` also takes the methods that the benchmark does not run (``MORE_SSL``); run one
method per process to read its peak memory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import grid
import torch
from ssl_protocols import HEADLINE, MORE_SSL, PRESETS, SSL

from episodes import AugmentConfig, ImageBatchSampler, labelled_subset, mini_imagenet
from fewshot import build_learner, make_spec
from fewshot.engine.train import TrainConfig, accumulate, make_optimizer


def seconds_per_step(learner, sampler, cfg: TrainConfig, steps: int) -> float:
    """Median seconds of one optimizer step (after a warm-up step)."""
    learner.begin_training(sampler, 1000)
    learner.train()
    opt, _ = make_optimizer(learner.param_groups(), cfg)

    def step() -> None:
        batch = sampler.sample()
        opt.zero_grad()
        accumulate(learner, batch, [slice(0, sampler.batch_size)], False)
        opt.step()
        learner.end_step()

    return common.median_step_time(step, torch.device("cpu"), warmup=1, iters=steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", choices=SSL + MORE_SSL, default=list(SSL))
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    train_ds = mini_imagenet(args.mini_root, "train", image_size=p.image_size)
    total = 0.0
    for method in args.methods:
        learner = grid.pretext_learner(method, p, train_ds)[0]
        sampler = ImageBatchSampler(train_ds, p.ssl_batch, views=learner.view_augments())
        tick = time.perf_counter()
        s = seconds_per_step(learner, sampler, TrainConfig(lr=1e-3), args.steps)
        relabel = (time.perf_counter() - tick - (args.steps + 1) * s
                   if method in ("deepcluster", "uic") else 0.0)  # the first labelling pass
        epoch = s * (len(train_ds) // p.ssl_batch) + relabel
        run = epoch * p.ssl_epochs
        total += run
        print(f"ssl-{method}: {s:.2f} s/step, {epoch:.0f} s/epoch (labelling pass "
              f"{relabel:.0f} s), {p.ssl_epochs} epochs: {run / 3600:.2f} h", flush=True)
    data = labelled_subset(train_ds, p.labelled_fraction)
    learner = build_learner(make_spec("classifier", p.backbone, 3, p.image_size,
                                      {"num_classes": data.num_classes}))
    sampler = ImageBatchSampler(data, 64, augment=AugmentConfig.standard())
    s = seconds_per_step(learner, sampler, TrainConfig(lr=0.05, optimizer="sgd"), args.steps)
    sup = s * (len(data) // 64) * p.finetune_epochs
    n_sup = 1 + len([m for m in args.methods if m in HEADLINE])
    total += n_sup * sup
    print(f"sup10 (and each sup10-<method>): {s:.2f} s/step, {p.finetune_epochs} epochs of "
          f"{len(data)} images: {sup / 60:.1f} min, x {n_sup}", flush=True)
    print(f"total training of preset {args.preset}: {total / 3600:.1f} h at {args.threads} "
          f"thread(s) (scoring adds about a minute per model); {common.peak_memory('cpu')}")


if __name__ == "__main__":
    main()
