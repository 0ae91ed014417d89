"""Seconds per supervised training step of each backbone, side by side: what a preset costs.

One step: a batch of random images through the backbone and a linear classifier, cross-entropy,
backward, SGD with momentum (the pre-training step of ``benchmarks/transfer.py``, without data
loading or augmentation). Median after one warm-up, with the process's peak memory. Used to
estimate a protocol's time on a machine before running it (e.g. ResNet-12 on the CPU).

    python benchmarks/backbone_step.py --threads 2                     # conv4, resnet12; 42, 84
    python benchmarks/backbone_step.py --device cuda --batch 64 --sizes 84
"""

from __future__ import annotations

import argparse
import json
from statistics import median

import common
import torch
from torch import nn

from fewshot.models.backbones import feature_dim, make_backbone


def step_seconds(backbone: str, size: int, batch: int, device: torch.device, iters: int,
                 classes: int = 64) -> float:
    """Median seconds of one training step of ``backbone`` + linear on ``[batch, 3, size, size]``."""
    net = make_backbone(backbone, 3)
    model = nn.Sequential(net, nn.Flatten(), nn.Linear(feature_dim(net, 3, size), classes))
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return median(common.step_times(step, device, 1, iters))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["conv4", "resnet12"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[42, 84])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(json.dumps(common.environment(device)))
    print(f"| backbone | image side | s / step ({args.batch} images) |\n| --- | --- | --- |")
    for backbone in args.backbones:
        for size in args.sizes:
            print(f"| {backbone} | {size} | "
                  f"{step_seconds(backbone, size, args.batch, device, args.iters):.3f} |",
                  flush=True)
    print(json.dumps(common.peak_memory(device)))


if __name__ == "__main__":
    main()
