"""Benchmark the metric learners (ProtoNet, Matching Networks with and without FCE, Relation
Networks) with the one training loop, on identical fixed test episodes.

Parts (``--parts``):
- ``omniglot``: Vinyals split, 28x28. One model per (method, shot), trained on ``--train-way``-way
  episodes of the train classes, then scored on the same fixed test episodes at 5 and 20 way.
- ``mini``: the reduced mini-ImageNet (84x84, the 64 train classes for training, the 16 val classes
  as test set), 5-way 1-shot and 5-shot, Conv-4; paired tests between every two methods.
- ``speed``: training episodes/s of each method at 5-way 1-shot 15-query on 28x28 Omniglot, in
  interleaved rounds in one run (median over rounds), so the ratios are fair on a busy machine.

Labels ending in ``_old`` are the learners with the earlier defaults, through options (identical, weights and
outputs, to commit 350b0d9): their paired tests against the current defaults are the before/after
comparison. ``--episodes-dir`` saves the fixed test episodes there and reuses them in later runs.

Full protocol (a GPU): ``python benchmarks/metric_learners.py --device cuda``.
Reduced CPU run: ``python benchmarks/metric_learners.py --quick`` (fewer steps and episodes; the
output says so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import common
import torch
from common import sync

from episodes import EpisodeSampler, FixedEpisodes, image_folder, omniglot
from fewshot import ModelSpec, build_learner
from fewshot.engine.evaluate import evaluate, paired_test
from fewshot.engine.train import TrainConfig, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METHODS = {  # label -> (method, options)
    "protonet": ("protonet", {}),
    "matching_fce": ("matching", {"fce": True}),
    "matching": ("matching", {"fce": False}),
    "relation": ("relation", {}),
    # the earlier defaults, through options
    "matching_fce_old": ("matching", {"fce": True, "normalize_query": True}),
    "matching_old": ("matching", {"fce": False, "normalize_query": True}),
    "relation_old": ("relation", {"separate_passes": False, "batch_stats_at_test": False,
                                  "init": "pytorch", "encoder_padding": 1, "grad_clip": None}),
}
FULL = {"omni_steps": 10000, "omni_train_way": 20, "omni_train_query": 5,
        "omni_test_episodes": 1000, "omni_query_20": 15, "mini_steps": 20000,
        "mini_train_query": 15, "mini_test_query": 15, "mini_test_episodes": 1000,
        "lr_decay_every": 2500, "speed_steps": 200, "speed_rounds": 5}
QUICK = {"omni_steps": 150, "omni_train_way": 5, "omni_train_query": 5, "omni_test_episodes": 100,
         "omni_query_20": 5, "mini_steps": 30, "mini_train_query": 5, "mini_test_query": 5,
         "mini_test_episodes": 50, "lr_decay_every": 0, "speed_steps": 20, "speed_rounds": 3}


def omniglot_root(root: Path | None) -> Path:
    """The Omniglot PNG folder: ``root``, or the shared copy written out once (see common.py)."""
    return root if root is not None else common.omniglot_root()


def add_variant(text: str) -> None:
    """``NAME=BASE:KEY=VALUE,KEY=VALUE``: a label NAME with BASE's method and options, some
    changed (for ablations: ``relation_noclip=relation:grad_clip=none``)."""
    name, _, rest = text.partition("=")
    base, _, changes = rest.partition(":")
    if not name or base not in METHODS:
        raise SystemExit(f"--variant {text!r}: expected NAME=BASE:KEY=VALUE,... with BASE one of "
                         f"{list(METHODS)}")
    method, options = METHODS[base]
    METHODS[name] = (method, {**options, **dict(kv.split("=", 1) for kv in changes.split(",")
                                              if kv)})


def spec_for(label: str, channels: int, size: int) -> ModelSpec:
    method, options = METHODS[label]
    return ModelSpec(method, "conv4", channels, size, dict(options))


def train_method(label: str, data, channels: int, size: int, way: int, shot: int, query: int,
                 steps: int, args, seed: int):
    """Train one fresh learner with :func:`fewshot.engine.train.train`; returns (learner, record)."""
    torch.manual_seed(seed)
    spec = spec_for(label, channels, size)
    learner = build_learner(spec)
    sampler = EpisodeSampler(data, way, shot, query, episodes_per_batch=args.episodes_per_batch,
                             seed=seed, device=args.device)
    config = TrainConfig(steps=steps, lr=args.lr, lr_decay_every=args.lr_decay_every,
                         progress=False, time_limit=args.time_limit, precision=args.precision)
    result = train(learner, spec, sampler, config, device=args.device)
    record = {"train_way": way, "train_shot": shot, "train_query": query, "steps": result.steps,
              "train_seconds": round(result.seconds, 1),
              "train_episodes_per_s": round(result.episodes_per_second, 2),
              "final_train_loss": result.history[-1]["loss"] if result.history else None}
    print(f"  trained {label:13s} {way}-way {shot}-shot: {result.steps} steps in "
          f"{result.seconds:.0f} s ({result.episodes_per_second:.1f} episodes/s)", flush=True)
    return learner, record


def fixed_episodes(data, way: int, shot: int, query: int, count: int, seed: int, args
                   ) -> FixedEpisodes:
    """Fixed test episodes: loaded from ``--episodes-dir`` when saved there by an earlier run,
    else generated from ``seed`` (and saved there)."""
    if args.episodes_dir is None:
        return FixedEpisodes.generate(data, way, shot, query, count, seed=seed)
    path = args.episodes_dir / f"{way}w{shot}s{query}q-{count}-seed{seed}.pt"
    if path.is_file():
        episodes = FixedEpisodes.load(path)
        episodes.check(data)
        return episodes
    episodes = FixedEpisodes.generate(data, way, shot, query, count, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    episodes.save(path)
    return episodes


def score(learners: dict, episodes: FixedEpisodes, data, args) -> dict:
    """Evaluate every learner on the same episodes; paired tests between every two."""
    results = {lab: evaluate(lrn, episodes, data, batch_size=args.eval_batch, device=args.device)
               for lab, lrn in learners.items()}
    out = {lab: {"mean": r.mean, "ci95": r.ci95} for lab, r in results.items()}
    pairs = {f"{a} - {b}": paired_test(results[a], results[b])
             for a, b in itertools.combinations(results, 2)}
    for lab, r in results.items():
        print(f"    {lab:13s} {r}", flush=True)
    return {"accuracy": out, "paired": pairs}


def save(args) -> None:
    """Write the results gathered so far (after every configuration: a killed run keeps them)."""
    if args.out:
        common.write_json(args.results, args.out)


def run_omniglot(args, p: dict, out: dict) -> None:
    root = omniglot_root(args.omniglot_root)
    train_set, test_set = omniglot(root, "train").to(args.device), omniglot(root, "test")
    test_set = test_set.to(args.device)
    for shot in args.shots:
        learners, records = {}, {}
        for label in args.methods:
            learners[label], records[label] = train_method(
                label, train_set, 1, 28, p["omni_train_way"], shot, p["omni_train_query"],
                p["omni_steps"], args, seed=shot)
        for way in (5, 20):
            query = 15 if way == 5 else p["omni_query_20"]
            episodes = fixed_episodes(test_set, way, shot, query, p["omni_test_episodes"],
                                      1000 + 10 * way + shot, args)
            print(f"  Omniglot test {way}-way {shot}-shot {query}-query, {len(episodes)} "
                  "fixed episodes:", flush=True)
            out[f"{way}-way {shot}-shot"] = {"query": query, "train": records,
                                             **score(learners, episodes, test_set, args)}
            save(args)


def run_mini(args, p: dict, out: dict) -> None:
    root = args.mini_root
    load = dict(split_dir=root / "splits" / "ravi", image_size=84)
    train_set = image_folder(root / "images", "train", **load).to(args.device)
    test_set = image_folder(root / "images", "val", **load).to(args.device)
    for shot in args.shots:
        learners, records = {}, {}
        for label in args.methods:
            learners[label], records[label] = train_method(
                label, train_set, 3, 84, 5, shot, p["mini_train_query"], p["mini_steps"], args,
                seed=shot)
        query = p["mini_test_query"]
        episodes = fixed_episodes(test_set, 5, shot, query, p["mini_test_episodes"], 2000 + shot,
                                  args)
        print(f"  mini-ImageNet val classes 5-way {shot}-shot {query}-query, {len(episodes)} "
              "fixed episodes:", flush=True)
        out[f"5-way {shot}-shot"] = {"query": query, "train": records,
                                     **score(learners, episodes, test_set, args)}
        save(args)


def run_speed(args, p: dict, out: dict) -> None:
    """Training episodes/s at 5-way 1-shot 15-query, methods interleaved in rounds."""
    root = omniglot_root(args.omniglot_root)
    data = omniglot(root, "train").to(args.device)
    device = torch.device(args.device)
    learners = {lab: build_learner(spec_for(lab, 1, 28)) for lab in args.methods}
    rates: dict[str, list[float]] = {lab: [] for lab in args.methods}
    for r in range(p["speed_rounds"] + 1):  # round 0 is the warm-up
        for lab, learner in learners.items():
            sampler = EpisodeSampler(data, 5, 1, 15, episodes_per_batch=1, seed=r, device=device)
            config = TrainConfig(steps=p["speed_steps"], lr=args.lr, progress=False, precision=args.precision)
            sync(device)
            start = time.perf_counter()
            res = train(learner, spec_for(lab, 1, 28), sampler, config, device=device)
            sync(device)
            if r > 0:
                rates[lab].append(res.episodes / (time.perf_counter() - start))
    med = {lab: statistics.median(v) for lab, v in rates.items()}
    out.update({lab: {"episodes_per_s": round(med[lab], 2),
                      "rounds": [round(v, 2) for v in rates[lab]]} for lab in rates})
    for lab in rates:
        print(f"  {lab:13s} {med[lab]:8.2f} episodes/s (rounds {out[lab]['rounds']})", flush=True)
    if "matching_fce" in med and "matching" in med:
        out["fce_cost"] = {"slowdown": round(med["matching"] / med["matching_fce"], 3)}
        print(f"  FCE: {out['fce_cost']['slowdown']:.2f}x the time per episode of Matching "
              "without FCE", flush=True)


def markdown(results: dict) -> str:
    """The tables of a results JSON: accuracy +- 95% interval, training time, paired tests."""
    lines = [f"{results['meta']['mode']}; {results['meta']['device']}; torch "
             f"{results['meta']['torch']}; {results['meta']['date']}", ""]
    for part in ("omniglot", "mini"):
        if not any(k != "wall_seconds" for k in results.get(part, {})):
            continue
        cfgs = [k for k in results[part] if k != "wall_seconds"]
        labels = list(results[part][cfgs[0]]["accuracy"])
        wall = results[part].get("wall_seconds")
        lines += [f"**{part}** (test accuracy %, mean +- 95% interval; "
                  + (f"wall {wall:.0f} s)" if wall is not None else "run incomplete)"), "",
                  "| method | " + " | ".join(f"{c} ({results[part][c]['query']}q)" for c in cfgs)
                  + " | training (steps, s, episodes/s) per shot |",
                  "|---" * (len(cfgs) + 2) + "|"]
        for lab in labels:
            accs = [results[part][c]["accuracy"][lab] for c in cfgs]
            trains = {r["train_shot"]: r for r in (results[part][c]["train"][lab] for c in cfgs)}
            train_txt = "; ".join(f"{s}-shot {r['train_way']}w{r['train_query']}q: {r['steps']}, "
                                  f"{r['train_seconds']:.0f}, {r['train_episodes_per_s']:.2f}"
                                  for s, r in sorted(trains.items()))
            lines.append(f"| {lab} | " + " | ".join(f"{100 * a['mean']:.2f} +- {100 * a['ci95']:.2f}"
                                                  for a in accs) + f" | {train_txt} |")
        lines += ["", "Paired tests (a - b in points, 95% interval, t-test p, Wilcoxon p):", "",
                  "| config | a - b | diff | t p | Wilcoxon p |", "|---|---|---|---|---|"]
        for c in cfgs:
            for pair, t in results[part][c]["paired"].items():
                lines.append(f"| {c} | {pair} | {100 * t['mean_diff']:+.2f} +- {100 * t['ci95']:.2f}"
                             f" | {common.p_text(t['t_test_p'], 3)} | {common.p_text(t['wilcoxon_p'], 3)} |")
        lines.append("")
    if "speed" in results:
        lines += ["**training speed**, 5-way 1-shot 15-query, 28x28 (median episodes/s over rounds)",
                  "", "| method | episodes/s | rounds |", "|---|---|---|"]
        lines += [f"| {lab} | {v['episodes_per_s']:.2f} | {v['rounds']} |"
                  for lab, v in results["speed"].items() if isinstance(v, dict) and "rounds" in v]
        if "fce_cost" in results["speed"]:
            lines.append(f"\nFCE costs {results['speed']['fce_cost']['slowdown']:.2f}x the time "
                         "per episode of Matching without FCE.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parts", default="omniglot,mini,speed")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"of {list(METHODS)}")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=BASE:KEY=VALUE,...",
                    help="an extra label: BASE's options with some changed (usable in --methods)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="reduced CPU run")
    ap.add_argument("--omniglot-root", type=Path, default=None,
                    help="Omniglot PNG layout (default: written from ../shared/data/omniglot)")
    ap.add_argument("--mini-root", type=Path, default=SHARED / "miniimagenet")
    for key in FULL:  # protocol settings: defaults from FULL, or QUICK with --quick
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                        help=f"default {FULL[key]} ({QUICK[key]} with --quick)")
    ap.add_argument("--episodes-per-batch", type=int, default=1)
    ap.add_argument("--shots", default="1,5", help="shots to train and test (default 1,5)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-batch", type=int, default=25)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per training run")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: torch's; 1 with --quick, best on a busy machine)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--episodes-dir", type=Path, default=None,
                    help="save the fixed test episodes here, and reuse those saved by earlier runs")
    ap.add_argument("--render", type=Path, default=None,
                    help="print the markdown tables of a results JSON and exit")
    args = ap.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return
    p = dict(QUICK if args.quick else FULL)
    for key in p:
        if getattr(args, key, None) is not None:
            p[key] = getattr(args, key)
    args.lr_decay_every = p["lr_decay_every"]
    for text in args.variant:
        add_variant(text)
    args.methods = args.methods.split(",")
    args.shots = [int(k) for k in args.shots.split(",")]
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    mode = ("reduced CPU run (--quick)" if args.quick else "full protocol" if p == FULL
            else "reduced run (settings below)")
    meta = {"mode": mode,
            **common.environment(torch.device(args.device)), "settings": p}
    print(json.dumps(meta), flush=True)
    args.results = {"meta": meta}
    runners = {"omniglot": run_omniglot, "mini": run_mini, "speed": run_speed}
    for part in args.parts.split(","):
        print(f"== {part} ({meta['mode']})", flush=True)
        start = time.perf_counter()
        args.results[part] = {}
        runners[part](args, p, args.results[part])
        args.results[part]["wall_seconds"] = round(time.perf_counter() - start, 1)
        save(args)


if __name__ == "__main__":
    main()
