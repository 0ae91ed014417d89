"""Our FixMatch side by side with USB's (microsoft/Semi-supervised-learning, ``semilearn``): the
same network, labelled subset, unlabelled images, views, optimiser and steps; few-shot accuracy
and seconds per step, each run in its own process, in one call.

    python benchmarks/usb_fixmatch.py --usb-python /path/to/usb-venv/bin/python   # 200 steps, CPU
    python benchmarks/usb_fixmatch.py --quick --usb-python ...                     # smoke test
    python benchmarks/usb_fixmatch.py --timing-only --usb-python ...   # redo the timing rounds only
    python benchmarks/usb_fixmatch.py --render                                     # the table again

USB's import needs transformers, torchaudio, wandb, aim and scikit-image beside torch, so it is
installed in a virtual environment of its own that sees this one's packages (torch, numpy and
this library unchanged): ``python -m venv usb-venv``, a ``.pth`` file in its site-packages naming
this environment's site-packages, ``usb-venv/bin/pip install semilearn``. ``--usb-python`` is
its interpreter (default: this one, if ``semilearn`` imports here).

Runs (``--arms``), each in a fresh process, one after the other:

- ``ours``: ``fewshot.train`` of the ``fixmatch`` learner (``fewshot pretrain --method fixmatch``);
- ``usb``: USB's ``FixMatch`` (``peer_usb.py`` says which of its parts run) on the same batches
  with our optimiser and schedule;
- ``usb-recipe``: the same with USB's own optimiser and schedule (``get_optimizer``: Nesterov SGD,
  no weight decay on biases and BatchNorm; ``get_cosine_schedule_with_warmup``: ``cos(7 pi t /
  16)``, ending at about 0.2 of the learning rate, not 0).

All start from the same weights (seed 0) and draw the same batches: the reduced mini-ImageNet's
64 train classes at ``--image-size``, ``labelled_index(train, --per-class, seed=0)`` labelled, the
rest unlabelled (:func:`episodes.unlabelled_pool`), ``--batch`` labelled and ``mu`` (7) times as
many unlabelled images a step from one ``SemiSupervisedSampler`` (seed 0) with our learner's
views: weak flip and shift for the labelled images and the first unlabelled view, our batched
RandAugment and Cutout (:mod:`episodes.randaugment`) for the second. SGD 0.05, momentum 0.9,
weight decay 5e-4, cosine over ``--steps`` (the CPU preset of ``label_efficiency.py``). Each
backbone (and USB's EMA model's, ``ema_m`` 0.999, what USB evaluates) is scored with the
prototype head on the same fixed 5-way 1-shot and 5-shot val episodes as ``label_efficiency.py``,
paired against ``ours``. Seconds per step: those of each training run (batch drawing included,
scoring not), one run after the other, so a load that changes between runs changes them; and the
timing rounds (``--rounds``, 0: none): in each, every arm in a fresh process in turn, the median of
``--timed-steps`` steps after two; the median over rounds. The first and last steps' losses are
recorded: from the same weights on the same batch they agree to float precision
(``tests/test_usb_fixmatch.py`` checks this).

Where USB's own pipeline would differ (not used here, as both runs take our tensors): its strong
view is RandAugment with 3 operations (``RandAugment(3, 5)`` in its CIFAR, SVHN and STL-10
datasets; ours 2, as kekmodel/FixMatch-pytorch) on PIL images with a Cutout of side up to half the image
in gray (125, 123, 114) shifted inside the border; its weak view is a reflect-padded random crop
of ``1 - crop_ratio`` (0.125, our shift) and a flip; its unlabelled set includes the labelled
images (``include_lb_to_ulb``; here the rest only); its inputs are normalised by the dataset's
mean and standard deviation (here both runs see the same [0, 1] tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
import grid
import peer_usb
import torch

from episodes import (
    SemiSupervisedSampler,
    labelled_index,
    mini_imagenet,
    subset_items,
    unlabelled_pool,
)
from fewshot import TrainConfig, build_learner, make_spec, train
from fewshot.heads import PrototypeHead
from fewshot.heads.scoring import episode_features, evaluate_features

ARMS = ("ours", "usb", "usb-recipe")
SHOTS = (1, 5)
OUT = Path(__file__).parent / "results" / "usb-fixmatch"
SETTINGS = {"steps": 200, "image_size": 42, "per_class": 10, "batch": 64, "episodes": 1000}
QUICK = {"steps": 3, "image_size": 42, "per_class": 10, "batch": 8, "episodes": 20}


def load(cfg: dict, split: str):
    return mini_imagenet(Path(cfg["mini_root"]), split, image_size=cfg["image_size"]).to(
        cfg["device"])


def val_episodes(val, shot: int, cfg: dict):
    return grid.fixed_episodes(val, 5, shot, 15, 1000, "mini-val", cfg["episodes"])


def score(backbone: torch.nn.Module, val, cfg: dict) -> dict[int, dict]:
    """The prototype head on ``backbone`` over the fixed val episodes of each shot."""
    backbone.eval()
    out = {}
    for shot in SHOTS:
        episodes = val_episodes(val, shot, cfg)
        feats, where = episode_features(backbone, episodes, val)
        out[shot] = grid.scores(evaluate_features("prototype", PrototypeHead(), feats, where,
                                                  episodes, 50))
    return out


def worker(cfg: dict) -> dict:
    """Train and score one arm in this (fresh) process; with ``cfg["timing"]``, time its steps
    only (the first two not counted)."""
    torch.set_num_threads(cfg["threads"])
    device, arm, steps = torch.device(cfg["device"]), cfg["arm"], cfg["steps"]
    train_ds = load(cfg, "train")
    index = labelled_index(train_ds, per_class=cfg["per_class"], seed=0)
    labelled = subset_items(train_ds, index)
    torch.manual_seed(0)
    spec = make_spec("fixmatch", "conv4", 3, cfg["image_size"],
                     {"num_classes": labelled.num_classes})
    learner = build_learner(spec).to(device)
    sampler = SemiSupervisedSampler(labelled, unlabelled_pool(train_ds, index), cfg["batch"],
                                    learner.mu, 0, *learner.view_augments())
    config = TrainConfig(steps=steps, lr=0.05, optimizer="sgd", momentum=0.9,
                         weight_decay=5e-4, schedule="cosine", precision="fp32",
                         channels_last=False, progress=False, log_every=1)
    keys = ("loss", "sup_loss", "unsup_loss", "mask")
    if arm == "ours":
        history = train(learner, spec, sampler, config, device=device).history
        logs = [{k: h[k] for k in keys} for h in history]
        ends = [h["seconds"] for h in history]  # training seconds at the end of each step
        times = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
        backbones = {arm: learner.backbone}
    else:
        args = peer_usb.usb_config(labelled.num_classes, steps, cfg["batch"], learner.mu,
                                   lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
        alg = peer_usb.build_usb_fixmatch(learner.backbone, learner.classifier, args, device)
        if arm == "usb":
            peer_usb.use_our_optimizer(alg, config)
        peer_usb.start(alg)
        logs, times = [], []
        for _ in range(steps):
            tick = time.perf_counter()
            d = peer_usb.usb_step(alg, sampler.sample().to(device))
            common.sync(device)
            times.append(time.perf_counter() - tick)
            logs.append(dict(zip(keys, (d["train/total_loss"], d["train/sup_loss"],
                                        d["train/unsup_loss"], d["train/util_ratio"]),
                                 strict=True)))
        backbones = {arm: alg.model.backbone, f"{arm}-ema": alg.ema_model.backbone}
    if cfg.get("timing"):
        return {"arm": arm, "s_per_step": common.median(times[2:]), "times": times[2:]}
    val = load(cfg, "val")
    return {"arm": arm, "seconds": round(sum(times), 2), "s_per_step": sum(times) / steps,
            "first_step": logs[0], "last_step": logs[-1],
            "max_mask": max(x["mask"] for x in logs), **common.peak_memory(device),
            "cells": {name: score(b, val, cfg) for name, b in backbones.items()}}


def run_arm(arm: str, cfg: dict, python: str) -> dict:
    """:func:`worker` of ``arm`` in a fresh process of ``python``, with the load around it."""
    before = [round(x, 2) for x in os.getloadavg()]
    proc = subprocess.run([python, __file__, "_worker", json.dumps({**cfg, "arm": arm})],
                          capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the {arm} run failed: "
                         + (proc.stderr.strip().splitlines() or ["?"])[-1])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(python=python, load_before=before, load_after=[round(x, 2)
                                                              for x in os.getloadavg()])
    return row


def markdown(result: dict) -> str:
    """The table of a results JSON."""
    s = result["settings"]
    head = (f"{result['mode']}; {result['device']}; torch {result['torch']}; semilearn "
            f"{result.get('semilearn', '?')}; {result['date']}; {s['steps']} steps, "
            f"{s['image_size']}x{s['image_size']}, {s['per_class']} labels per class, batch "
            f"{s['batch']} + 7x{s['batch']} unlabelled; {s['episodes']} val episodes per shot")
    turns = result.get("timing", {}).get("arms", {})
    if turns:
        head += (f"; seconds per step in turns: median of {result['timing']['rounds']} rounds of "
                 f"{result['timing']['timed_steps']} steps")
    lines = ["| model | 5-way 1-shot (%) | 5-way 5-shot (%) | vs ours 1-shot (p) | vs ours "
             "5-shot (p) | s / step, training run (load before, after) | s / step in turns | "
             "first-step loss (sup, unsup, mask) | last-step loss (mask) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for name, cells in row["cells"].items():
            acc = [f"{100 * cells[str(k)]['mean']:.2f} +- {100 * cells[str(k)]['ci95']:.2f}"
                   for k in SHOTS]
            diff = [paired_text(result["paired"].get(f"{name}/{k}")) for k in SHOTS]
            f, last = row["first_step"], row["last_step"]
            turn = turns.get(row["arm"], {}).get("s_per_step")
            lines.append(f"| {name} | {acc[0]} | {acc[1]} | {diff[0]} | {diff[1]} | "
                         f"{row['s_per_step']:.3f} ({row['load_before'][0]}, "
                         f"{row['load_after'][0]}) | {'-' if turn is None else f'{turn:.3f}'} | "
                         f"{f['loss']:.6f} ({f['sup_loss']:.6f}, {f['unsup_loss']:.6f}, "
                         f"{f['mask']:.3f}) | {last['loss']:.6f} ({last['mask']:.3f}) |")
    return "\n".join([head, "", *lines])


def paired_text(p: dict | None) -> str:
    if p is None:
        return "-"
    if p["mean_diff"] == 0 and p["t_test_p"] != p["t_test_p"]:  # NaN: no episode differs
        return "0 (every episode equal)"
    return f"{100 * p['mean_diff']:+.2f} ({common.p_text(p['t_test_p'])})"


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for key, value in SETTINGS.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, help=f"default {value} "
                       f"({QUICK[key]} with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 3 steps, 20 episodes")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--usb-python", default=sys.executable,
                   help="the interpreter that imports semilearn (default: this one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    p.add_argument("--out-dir", type=Path, default=OUT)
    p.add_argument("--rounds", type=int, default=3,
                   help="timing rounds after the training runs (0: none)")
    p.add_argument("--timed-steps", type=int, default=10, help="steps timed per arm and round")
    p.add_argument("--timing-only", action="store_true",
                   help="redo the timing rounds only, keeping the trained arms of OUT")
    p.add_argument("--render", action="store_true", help="print OUT/table.md from its JSON")
    args = p.parse_args(argv)
    path = args.out_dir / "results.json"
    if args.render:
        if not path.is_file():
            p.error(f"no results to render at {path}: run the benchmark first")
        print(markdown(json.loads(path.read_text())))
        return
    cfg = {k: getattr(args, k) or (QUICK if args.quick else SETTINGS)[k] for k in SETTINGS}
    if min(*cfg.values(), args.threads, args.timed_steps) < 1 or args.rounds < 0:
        p.error("sizes, --threads and --timed-steps take numbers >= 1, --rounds >= 0")
    cfg.update(threads=args.threads, device=args.device, mini_root=str(args.mini_root))
    usb_arms = [a for a in args.arms if a != "ours"]
    probe = subprocess.run([args.usb_python, "-c", "import semilearn, importlib.metadata as m; "
                            "print(m.version('semilearn'))"], capture_output=True, text=True)
    if usb_arms and probe.returncode:
        p.error(f"--usb-python {args.usb_python} cannot import semilearn: give the interpreter "
                "of an environment where it is installed (see this script's help)")
    pythons = {arm: sys.executable if arm == "ours" else args.usb_python for arm in args.arms}
    if args.timing_only:
        if not path.is_file():
            p.error(f"--timing-only: no results at {path}: run the benchmark first")
        result = json.loads(path.read_text())
        cfg = result["settings"]  # the trained arms' sizes
    else:
        result = train_arms(args, cfg, probe.stdout.strip() or None, pythons, path)
    if args.rounds:
        result["timing"] = timing(cfg, pythons, args.rounds, args.timed_steps)
    common.write_json(result, path)
    table = markdown(json.loads(path.read_text()))
    (args.out_dir / "table.md").write_text(table + "\n")
    print(table)


def train_arms(args: argparse.Namespace, cfg: dict, version: str | None, pythons: dict,
               path: Path) -> dict:
    """Train and score every arm, one after the other; the results written after each."""
    val = load(cfg, "val")
    for shot in SHOTS:  # written once here, read by the runs
        val_episodes(val, shot, cfg)
    result = {"mode": "quick" if args.quick else "full" if cfg == {**cfg, **SETTINGS}
              else "reduced", **common.environment(torch.device(args.device)),
              "semilearn": version, "settings": cfg, "rows": [], "paired": {}}
    for arm, python in pythons.items():
        row = run_arm(arm, cfg, python)
        result["rows"].append(row)
        print(f"{arm}: {row['s_per_step']:.3f} s/step, first step {row['first_step']}", flush=True)
        base = next((r["cells"]["ours"] for r in result["rows"] if r["arm"] == "ours"), None)
        for name, cells in row["cells"].items():
            for shot in map(str, SHOTS):
                if base and name != "ours":
                    result["paired"][f"{name}/{shot}"] = grid.paired(cells[shot], base[shot])
        common.write_json(result, path)
    return result


def timing(cfg: dict, pythons: dict, rounds: int, timed: int) -> dict:
    """Seconds per step of every arm, each round starting each arm in a fresh process in turn
    (a load that changes slows them alike): the median of ``timed`` steps after two, per round;
    the median over rounds."""
    per: dict[str, list] = {arm: [] for arm in pythons}
    for r in range(rounds):
        for arm, python in pythons.items():
            row = run_arm(arm, {**cfg, "steps": timed + 2, "timing": True}, python)
            per[arm].append({k: row[k] for k in ("s_per_step", "load_before", "load_after")})
            print(f"timing round {r + 1}: {arm} {row['s_per_step']:.3f} s/step", flush=True)
    return {**common.environment(torch.device(cfg["device"])), "rounds": rounds,
            "timed_steps": timed, "arms": {
        arm: {"s_per_step": common.median([x["s_per_step"] for x in xs]), "per_round": xs}
        for arm, xs in per.items()}}

if __name__ == "__main__":
    main()
