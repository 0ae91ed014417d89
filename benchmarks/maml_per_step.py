"""Why MAML with per-step BatchNorm statistics (``bn=per_step``) scores chance: inner-loop traces.

    python benchmarks/maml_per_step.py CHECKPOINT --episodes 100 --steps 5 --out trace.json

CHECKPOINT: a MAML trained with ``bn=per_step`` on Omniglot (``benchmarks/maml.py omniglot --bn
per_step --save-dir DIR`` keeps ``DIR/<setting>-<order>-per_step/last.pt``). Per-step training
normalises with batch statistics, so the same weights can be run either way. On fixed 5-way
1-shot test episodes (seed 2017, 15 queries per class), every inner step k = 0..steps is traced
with four choices of statistics, (support forwards, query forward): (batch, batch) is the
transductive evaluation, (running, running) is ``bn=per_step``'s, the two mixed ones separate the
inner loop from the query forward. Per step: the support loss, the query accuracy, the query
logits' largest magnitude (median over episodes of the per-episode maximum), and the size of the
update just taken relative to the weights (``||w_k - w_{k-1}|| / ||w_{k-1}||`` over the conv
weights). At k = 0, the support batch's statistics at every BatchNorm input against the running
statistics of set 0 (mean of batch var / running var over channels, and of |batch mean - running
mean| / running std): whether the stored statistics describe the activations they normalise.
"""

from __future__ import annotations

import argparse
import math
from statistics import median

import torch
import torch.nn.functional as F
from common import environment, omniglot_root, write_json
from torch import Tensor, nn
from torch.func import functional_call

from episodes import FixedEpisodes, omniglot
from fewshot import load_learner
from fewshot.methods.maml import bn_free_buffers, inner_loop

MODES = [("batch", "batch"), ("running", "running"), ("batch", "running"), ("running", "batch")]


def trace(learner: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, steps: int,
          lr: float, support: str, query: str) -> list[dict]:
    """One task (sx ``[S, C, H, W]``, qx ``[M, C, H, W]``): a row per inner step k = 0..steps."""
    net, stats = learner.net, learner.bn_stats
    free = bn_free_buffers(net)

    def buffers(kind: str):
        return (lambda k: free) if kind == "batch" else (lambda k: stats.buffers(net, k))

    params = {n: p.detach() for n, p in net.named_parameters()}
    history = [params, *inner_loop(net, params, buffers(support), sx, sy, lr, steps)]
    conv = [n for n, p in params.items() if p.dim() == 4]
    rows = []
    with torch.no_grad():
        for k, p in enumerate(history):
            s_logits = functional_call(net, (p, buffers(support)(k)), (sx,))
            q_logits = functional_call(net, (p, buffers(query)(k)), (qx,))
            prev = history[max(k - 1, 0)]
            step = math.sqrt(sum(float((p[n] - prev[n]).pow(2).sum()) for n in conv)) / math.sqrt(
                sum(float(prev[n].pow(2).sum()) for n in conv))
            rows.append({"support_loss": float(F.cross_entropy(s_logits, sy)),
                         "query_acc": float((q_logits.argmax(-1) == qy).float().mean()),
                         "max_logit": float(q_logits.abs().max()), "rel_update": step})
    return rows


def stat_match(learner: nn.Module, sx: Tensor) -> list[dict]:
    """Per BatchNorm layer: the support batch's statistics at its input (parameters before any
    update, batch statistics upstream) against running set 0."""
    net, stats, seen = learner.net, learner.bn_stats, []
    layers = {m: name for name, m in net.named_modules() if name in stats.layers}

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        seen.append((layers[module], x.mean((0, 2, 3)), x.var((0, 2, 3), correction=0)))

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            functional_call(net, (dict(net.named_parameters()), bn_free_buffers(net)), (sx,))
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, mean, var in seen:
        rm, rv = stats.stat("mean", name)[0], stats.stat("var", name)[0]
        out.append({"layer": name, "var_ratio": float((var / rv).mean()),
                    "mean_offset_in_std": float(((mean - rm).abs() / rv.sqrt()).mean())})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lrs", type=float, nargs="+", help="inner rates (default: the trained one)")
    p.add_argument("--out")
    args = p.parse_args()
    learner = load_learner(args.checkpoint)[0].eval()
    if learner.bn_stats is None:
        raise SystemExit("the checkpoint was not trained with bn=per_step")
    test_ds = omniglot(omniglot_root(), "test")
    episodes = FixedEpisodes.generate(test_ds, 5, 1, 15, args.episodes, seed=2017)
    batches = list(episodes.batches(test_ds, 50, "cpu"))
    result = {**environment(torch.device("cpu")), "checkpoint": args.checkpoint,
              "episodes": args.episodes, "traces": [], "stat_match": []}
    for b in batches:
        for t in range(b.support_x.shape[0]):
            result["stat_match"].append(stat_match(learner, b.support_x[t]))
    for i, layer in enumerate(result["stat_match"][0]):
        ratios = [m[i]["var_ratio"] for m in result["stat_match"]]
        offsets = [m[i]["mean_offset_in_std"] for m in result["stat_match"]]
        print(f"layer {layer['layer']}: support var / running var {median(ratios):.3f} (median), "
              f"|mean offset| {median(offsets):.3f} running std")
    for lr in args.lrs or [learner.inner_lr]:
        for support, query in MODES:
            tasks = [trace(learner, b.support_x[t], b.support_y[t], b.query_x[t], b.query_y[t],
                           args.steps, lr, support, query)
                     for b in batches for t in range(b.support_x.shape[0])]
            for k in range(args.steps + 1):
                col = {key: [task[k][key] for task in tasks] for key in tasks[0][k]}
                row = {"lr": lr, "support_bn": support, "query_bn": query, "step": k,
                       "query_acc": sum(col["query_acc"]) / len(tasks),
                       **{key: median(col[key]) for key in ("support_loss", "max_logit",
                                                            "rel_update")}}
                result["traces"].append(row)
                print(f"lr {lr} support {support:7s} query {query:7s} step {k}: "
                      f"acc {100 * row['query_acc']:.1f} %, support loss {row['support_loss']:.3g}, "
                      f"max |logit| {row['max_logit']:.3g}, update {row['rel_update']:.3g}",
                      flush=True)
            if args.out:
                write_json(result, args.out)


if __name__ == "__main__":
    main()
