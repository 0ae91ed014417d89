"""``fewshot demo``: the whole workflow in a few minutes on a CPU, on the embedded dataset."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from episodes import EpisodeSampler, FixedEpisodes, stroke_characters

from .engine.evaluate import evaluate
from .engine.precision import resolve_precision
from .engine.train import TrainConfig, train
from .models.learner import ModelSpec
from .registry import build_learner

SPEC = ModelSpec("protonet", "conv4", 1, 28)  # the demo's model: ProtoNet, Conv-4, 28x28 grey


def run_demo(seconds: float = 100, out: str = "runs/demo", device: torch.device | str = "cpu",
             episodes: int = 600, seed: int = 0, precision: str = "auto") -> float:
    """Meta-train ProtoNet (Conv-4) on the embedded dataset's 900 training classes for ``seconds``
    (20-way 1-shot 5-query episodes), then score 5-way 1-shot on ``episodes`` fixed episodes of the
    200 held-out test classes, training and scoring in ``precision`` (:mod:`fewshot.engine.precision`).
    Returns the mean test accuracy."""
    device = torch.device(device)
    torch.manual_seed(seed)
    start = time.perf_counter()
    print("loading the embedded dataset (generated and cached on first use)...")
    train_ds, val_ds, test_ds = (stroke_characters(s).to(device) for s in ("train", "val", "test"))
    print(f"  {train_ds.num_classes} train / {val_ds.num_classes} val / {test_ds.num_classes} test "
          f"classes of {tuple(train_ds.image_shape)} images, on {device}")
    spec = SPEC
    learner = build_learner(spec)
    sampler = EpisodeSampler(train_ds, 20, 1, 5, num_batches=10**6, seed=seed)
    val = (val_ds, FixedEpisodes.generate(val_ds, 5, 1, 15, 100, seed=seed + 1))
    config = TrainConfig(steps=10**6, lr=1e-3, time_limit=seconds, checkpoint_dir=out,
                         checkpoint_every=100, precision=precision)
    precision = resolve_precision(precision, device, spec.method)
    print(f"meta-training ProtoNet for {seconds:.0f} s on 20-way 1-shot episodes ({precision}, "
          f"{torch.get_num_threads()} threads)...")
    result = train(learner, spec, sampler, config, val=val, device=device)
    print(f"  {result.episodes} episodes in {result.seconds:.0f} s "
          f"({result.episodes_per_second:.1f} episodes/s); validation accuracy "
          f"{100 * result.best_val:.1f} %")
    test = FixedEpisodes.generate(test_ds, 5, 1, 15, episodes, seed=seed + 2)
    res = evaluate(learner, test, test_ds, batch_size=25, device=device, precision=precision)
    res.save_json(Path(out) / "test_5way1shot.json")
    print(f"held-out classes, 5-way 1-shot (chance 20 %): {100 * res.mean:.2f} +- "
          f"{100 * res.ci95:.2f} % over {len(test)} episodes "
          f"(total {time.perf_counter() - start:.0f} s; checkpoints and scores in {out})")
    return res.mean
