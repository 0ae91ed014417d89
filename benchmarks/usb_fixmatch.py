"""Our FixMatch side by side with USB's (microsoft/Semi-supervised-learning, ``semilearn``): the
same network, labelled subset, unlabelled images, views, optimiser and steps; few-shot accuracy
and seconds per step, each run in its own process, in one call.

    python benchmarks/usb_fixmatch.py --usb-python /path/to/usb-venv/bin/python   # 200 steps, CPU
    python benchmarks/usb_fixmatch.py --quick --usb-python ...                     # smoke test
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
  16)``, ending at 0.2 of the learning rate, not 0).

All start from the same weights (seed 0) and draw the same batches: the reduced mini-ImageNet's
64 train classes at ``--image-size``, ``labelled_index(train, --per-class, seed=0)`` labelled, the
rest unlabelled (:func:`episodes.unlabelled_pool`), ``--batch`` labelled and ``mu`` (7) times as
many unlabelled images a step from one ``SemiSupervisedSampler`` (seed 0) with our learner's
views: weak flip and shift for the labelled images and the first unlabelled view, our batched
RandAugment and Cutout (:mod:`episodes.randaugment`) for the second. SGD 0.05, momentum 0.9,
weight decay 5e-4, cosine over ``--steps`` (the CPU preset of ``label_efficiency.py``). Each
backbone (and USB's EMA model's, ``ema_m`` 0.999, what USB evaluates) is scored with the
prototype head on the same fixed 5-way 1-shot and 5-shot val episodes as ``label_efficiency.py``,
paired against ``ours``; seconds per step are training seconds (batch drawing included, scoring
not) over the steps. The first step's losses of the runs are recorded: from the same weights on
the same batch they agree to float precision (``tests/test_usb_fixmatch.py`` checks this).

Where USB's own pipeline would differ (not used here, as both runs take our tensors): its strong
view is RandAugment with 3 operations (``RandAugment(3, 5)`` in its CIFAR, SVHN and STL-10
datasets; ours 2, as the FixMatch paper) on PIL images with a Cutout of side up to half the image
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
    """Train and score one arm in this (fresh) process."""
    torch.set_num_threads(cfg["threads"])
    device, arm = torch.device(cfg["device"]), cfg["arm"]
    train_ds = load(cfg, "train")
    index = labelled_index(train_ds, per_class=cfg["per_class"], seed=0)
    labelled = subset_items(train_ds, index)
    torch.manual_seed(0)
    spec = make_spec("fixmatch", "conv4", 3, cfg["image_size"],
                     {"num_classes": labelled.num_classes})
    learner = build_learner(spec).to(device)
    sampler = SemiSupervisedSampler(labelled, unlabelled_pool(train_ds, index), cfg["batch"],
                                    learner.mu, 0, *learner.view_augments())
    config = TrainConfig(steps=cfg["steps"], lr=0.05, optimizer="sgd", momentum=0.9,
                         weight_decay=5e-4, schedule="cosine", precision="fp32",
                         channels_last=False, progress=False, log_every=1)
    if arm == "ours":
        res = train(learner, spec, sampler, config, device=device)
        seconds, first, last = res.seconds, res.history[0], res.history[-1]
        first = {k: first[k] for k in ("loss", "sup_loss", "unsup_loss", "mask")}
        last = {k: last[k] for k in ("loss", "sup_loss", "unsup_loss", "mask")}
        backbones = {arm: learner.backbone}
    else:
        args = peer_usb.usb_config(labelled.num_classes, cfg["steps"], cfg["batch"], learner.mu,
                                   lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
        alg = peer_usb.build_usb_fixmatch(learner.backbone, learner.classifier, args, device)
        if arm == "usb":
            peer_usb.use_our_optimizer(alg, config)
        peer_usb.start(alg)
        logs, tick = [], time.perf_counter()
        for _ in range(cfg["steps"]):
            logs.append(peer_usb.usb_step(alg, sampler.sample().to(device)))
        common.sync(device)
        seconds = time.perf_counter() - tick
        first, last = ({"loss": d["train/total_loss"], "sup_loss": d["train/sup_loss"],
                        "unsup_loss": d["train/unsup_loss"], "mask": d["train/util_ratio"]}
                       for d in (logs[0], logs[-1]))
        backbones = {arm: alg.model.backbone, f"{arm}-ema": alg.ema_model.backbone}
    val = load(cfg, "val")
    return {"arm": arm, "seconds": round(seconds, 2), "s_per_step": seconds / cfg["steps"],
            "first_step": first, "last_step": last, **common.peak_memory(device),
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
    lines = ["| model | 5-way 1-shot (%) | 5-way 5-shot (%) | vs ours 1-shot (p) | vs ours "
             "5-shot (p) | s / step | first-step loss (sup, unsup, mask) | load before, after |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for name, cells in row["cells"].items():
            acc = [f"{100 * cells[str(k)]['mean']:.2f} +- {100 * cells[str(k)]['ci95']:.2f}"
                   for k in SHOTS]
            diff = [(f"{100 * p['mean_diff']:+.2f} ({common.p_text(p['t_test_p'])})"
                     if (p := result["paired"].get(f"{name}/{k}")) else "-") for k in SHOTS]
            f = row["first_step"]
            lines.append(f"| {name} | {acc[0]} | {acc[1]} | {diff[0]} | {diff[1]} | "
                         f"{row['s_per_step']:.3f} | {f['loss']:.6f} ({f['sup_loss']:.6f}, "
                         f"{f['unsup_loss']:.6f}, {f['mask']:.3f}) | {row['load_before'][0]}, "
                         f"{row['load_after'][0]} |")
    return "\n".join([head, "", *lines])


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
    p.add_argument("--render", action="store_true", help="print OUT/table.md from its JSON")
    args = p.parse_args(argv)
    path = args.out_dir / "results.json"
    if args.render:
        if not path.is_file():
            p.error(f"no results to render at {path}: run the benchmark first")
        print(markdown(json.loads(path.read_text())))
        return
    cfg = {k: getattr(args, k) or (QUICK if args.quick else SETTINGS)[k] for k in SETTINGS}
    if min(cfg.values()) < 1 or args.threads < 1:
        p.error("sizes and --threads take numbers >= 1")
    cfg.update(threads=args.threads, device=args.device, mini_root=str(args.mini_root))
    usb_arms = [a for a in args.arms if a != "ours"]
    probe = subprocess.run([args.usb_python, "-c", "import semilearn, importlib.metadata as m; "
                            "print(m.version('semilearn'))"], capture_output=True, text=True)
    if usb_arms and probe.returncode:
        p.error(f"--usb-python {args.usb_python} cannot import semilearn: give the interpreter "
                "of an environment where it is installed (see this script's help)")
    val = load(cfg, "val")
    for shot in SHOTS:  # written once here, read by the runs
        val_episodes(val, shot, cfg)
    result = {"mode": "quick" if args.quick else "full" if cfg == {**cfg, **SETTINGS}
              else "reduced", **common.environment(torch.device(args.device)),
              "semilearn": probe.stdout.strip() or None, "settings": cfg, "rows": [],
              "paired": {}}
    for arm in args.arms:
        row = run_arm(arm, cfg, args.usb_python if arm in usb_arms else sys.executable)
        result["rows"].append(row)
        print(f"{arm}: {row['s_per_step']:.3f} s/step, first step {row['first_step']}", flush=True)
    base = next((r["cells"]["ours"] for r in result["rows"] if r["arm"] == "ours"), None)
    for row in result["rows"]:
        for name, cells in row["cells"].items():
            for shot in map(str, SHOTS):
                if base and name != "ours":
                    result["paired"][f"{name}/{shot}"] = grid.paired(cells[shot], base[shot])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_json(result, path)
    table = markdown(json.loads(path.read_text()))
    (args.out_dir / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
