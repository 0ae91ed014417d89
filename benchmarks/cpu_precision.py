"""Paired accuracy test of the CPU precisions: does bf16 training lose accuracy against fp32?

    python benchmarks/cpu_precision.py --out benchmarks/out/cpu-precision.json
    python benchmarks/cpu_precision.py --methods protonet --steps 200 --episodes 200   # quick

For each method, two runs from the same initial weights on the same training episodes (Omniglot
background, 5-way 1-shot 15-query, one episode per step, Adam 1e-3, ``--steps`` steps): one in
``fp32`` and one in ``bf16`` (channels-last as the CPU default has it, in both), each scored in its
own precision on the same fixed test episodes (Omniglot evaluation split, 5-way 1-shot 15-query).
:func:`fewshot.engine.evaluate.paired_test` compares them episode by episode. A difference within its
95% interval of 0 is "within noise" (of the test episodes: one training run per precision, so
the spread between training runs is not in the interval). For scale, ``--runs fp32 fp32-nchw``
trains fp32 without channels-last too: the same computation with float32 rounded in another
order, so its difference from fp32 is what rounding alone does to a training run.

MAML (second order, 1 inner step of 0.4, transductive BatchNorm) also reports how far bf16's
meta-gradient is from fp32's at the initial weights on one training batch, at 1, 2 and 5 inner
steps (relative L2 error, cosine similarity).
"""

from __future__ import annotations

import argparse
import os
import time

import common
import torch

from episodes import EpisodeSampler
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.engine.evaluate import paired_test
from fewshot.engine.precision import autocast, cpu_has_bf16

METHODS = {"protonet": {}, "matching": {"fce": True}, "relation": {},
           "maml": {"n_way": 5, "inner_steps": 1, "inner_lr": 0.4}}
N, K, Q = 5, 1, 15
RUNS = ("fp32", "bf16", "fp32-nchw")


def learner_of(method: str, seed: int) -> tuple[torch.nn.Module, ModelSpec]:
    """The method's Conv-4 learner, initialised from ``seed``."""
    torch.manual_seed(seed)
    spec = ModelSpec(method, "conv4", 1, 28, dict(METHODS[method]))
    return build_learner(spec), spec


def run(method: str, variant: str, splits: dict, episodes, steps: int) -> dict:
    """Train ``method`` as ``variant`` (fp32, bf16 or fp32-nchw: fp32 without channels-last)
    for ``steps`` steps from seed 0, and score it."""
    learner, spec = learner_of(method, 0)
    sampler = EpisodeSampler(splits["train"], N, K, Q, 1, seed=0)
    precision = variant[:4]
    result = train(learner, spec, sampler, TrainConfig(
        steps=steps, precision=precision, progress=False,
        channels_last=False if variant.endswith("nchw") else None))
    start = time.perf_counter()
    score = evaluate(learner, episodes, splits["test"], precision=precision)
    return {"score": score, "train_s": round(result.seconds, 1),
            "eval_s": round(time.perf_counter() - start, 1), "mean": score.mean,
            "ci95": score.ci95}


def maml_gradient_agreement(splits: dict, inner_steps: int) -> dict[str, float]:
    """How far bf16's second-order meta-gradient is from fp32's (same initial weights, same batch
    of 4 episodes): relative L2 error and cosine similarity."""
    grads = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        learner = build_learner(ModelSpec("maml", "conv4", 1, 28, {
            **METHODS["maml"], "inner_steps": inner_steps}))
        batch = EpisodeSampler(splits["train"], N, K, Q, 4, seed=0).sample()
        with autocast(torch.device("cpu"), precision):
            loss, _ = learner.batch_loss(batch)
        loss.backward()
        grads[precision] = torch.cat([p.grad.double().flatten() for p in learner.parameters()
                                      if p.grad is not None])
    a, b = grads["bf16"], grads["fp32"]
    return {"inner_steps": inner_steps, "rel_error": float((a - b).norm() / b.norm()),
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, 0))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--steps", type=int, default=1000, help="training steps of each run")
    p.add_argument("--episodes", type=int, default=1000, help="fixed test episodes")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--runs", nargs="+", choices=RUNS, default=RUNS[:2],
                   help="the runs of each method; each is compared with fp32 when both ran")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = common.omniglot_splits(torch.device("cpu"))
    episodes = common.test_episodes(splits["test"], N, K, Q, args.episodes, "omniglot-test")
    result = {**common.environment(torch.device("cpu")), "cpu_has_bf16": cpu_has_bf16(),
              "steps": args.steps, "episodes": args.episodes,
              "load_before": [round(x, 2) for x in os.getloadavg()], "rows": []}
    for method in args.methods:
        runs = {variant: run(method, variant, splits, episodes, args.steps)
                for variant in args.runs}
        row = {"method": method, **{k: {x: v for x, v in r.items() if x != "score"}
                                    for k, r in runs.items()}}
        for variant in [v for v in runs if v != "fp32"] if "fp32" in runs else []:
            row[f"{variant}_minus_fp32"] = paired_test(runs[variant]["score"],
                                                       runs["fp32"]["score"])
        if method == "maml" and "bf16" in runs:
            row["meta_gradient_bf16_vs_fp32"] = [maml_gradient_agreement(splits, s)
                                                 for s in (1, 2, 5)]
        result["rows"].append(row)
        print(row, flush=True)
        if args.out:
            common.write_json(result, args.out)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        common.write_json(result, args.out)


if __name__ == "__main__":
    main()
