"""Self-supervised pre-training from unlabelled images, then few labels.

On the reduced mini-ImageNet (64 train classes of 100 images; scored on the 16 val classes, the
copy has no test classes): supervised training on 10 % of the train images labelled, against
rotation / SimCLR / Barlow Twins pre-training on all train images without labels followed by the
same supervised training on the 10 % (the seed's headline claim), and a table of every
pre-training method's backbone alone. What is trained how: ``ssl_protocols.py``. Every cell is the
prototype head on the backbone over the same 1,000 fixed episodes (5-way 1-shot and 5-shot, 15
queries), paired against ``sup10``.

Each model trains in a child process (so its peak memory is its own: RSS on a CPU, the largest
CUDA allocation on a GPU) into ``OUT/checkpoints/<model>/`` and stops before ``--budget-minutes``
run out; results accumulate in ``OUT/results.json``; the same command continues a stopped run.

    python benchmarks/self_supervised.py --quick                       # smoke test, CPU
    python benchmarks/self_supervised.py --preset cpu --budget-minutes 60   # again until done
    python benchmarks/self_supervised.py --preset full --device cuda
    python benchmarks/self_supervised.py --render [--preset cpu]        # the Markdown tables
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common
import grid
import torch
from grid_render import mean_ci
from ssl_protocols import HEADLINE, PRESETS, SHOTS, SSL, cell_name, models

from episodes import (
    AugmentConfig,
    ClassDataset,
    ImageBatchSampler,
    TensorClassDataset,
    labelled_subset,
    mini_imagenet,
)
from fewshot import TrainConfig, build_learner, make_spec
from fewshot.engine.checkpoint import load_backbone_weights
from fewshot.heads import PrototypeHead
from fewshot.heads.scoring import episode_features, evaluate_features
from fewshot.models.weights import backbone_of

OUT = Path(__file__).parent / "out"


def load_split(split: str, args: argparse.Namespace) -> TensorClassDataset:
    return mini_imagenet(args.mini_root, split, image_size=args.preset.image_size).to(args.device)


def train_one(key: str, args: argparse.Namespace) -> None:
    """Train (or continue) model ``key`` within ``--time-left`` seconds; writes its record."""
    p, ckdir = args.preset, grid.checkpoints(args.out_dir, key)
    train_ds = load_split("train", args)
    size = p.image_size
    torch.manual_seed(0)
    if key.startswith("ssl-"):
        method = key.removeprefix("ssl-")
        learner, spec = grid.pretext_learner(method, p, train_ds)
        data, batch = train_ds, p.ssl_batch
        sampler = ImageBatchSampler(data, batch, seed=0, views=learner.view_augments())
        cfg = dict(lr=1e-3, optimizer="adam", weight_decay=1e-6)
        epochs = p.ssl_epochs
    else:
        data = labelled_subset(train_ds, p.labelled_fraction)
        spec = make_spec("classifier", p.backbone, 3, size, {"num_classes": data.num_classes})
        learner = build_learner(spec)
        if key.startswith("sup10-") and not (ckdir / "last.pt").is_file():
            init = grid.checkpoints(args.out_dir, f"ssl-{key.removeprefix('sup10-')}") / "last.pt"
            load_backbone_weights(backbone_of(learner), init, p.backbone, "--init")
        batch = min(64, len(data))
        sampler = ImageBatchSampler(data, batch, seed=0, augment=AugmentConfig.standard())
        cfg = dict(lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4)
        epochs = p.finetune_epochs
    steps = p.steps or epochs * (len(data) // batch)
    record_path = ckdir / "record.json"
    rec = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    env, seconds = common.environment(args.device), {}  # seconds: train()'s, unrounded
    grid.train_or_resume(rec, key, learner, spec, sampler, TrainConfig(
        steps=steps, schedule="cosine", checkpoint_dir=str(ckdir), checkpoint_every=200,
        precision="fp32", **cfg),  # as the tables recorded so far, and resumable
        grid.Budget(time.monotonic() + args.time_left), env, device=args.device,
        after_chunk=lambda res: seconds.update(train=res.seconds))
    done_epochs = rec.get("steps", 0) * batch / len(data)
    rec["sessions"][-1].update(**env, **common.peak_memory(args.device))
    per_epoch = seconds.get("train", rec.get("seconds", 0.0)) / done_epochs if done_epochs else None
    rec.update(images=len(data), batch=batch, epochs=round(done_epochs, 2),
               seconds_per_epoch=None if per_epoch is None else round(per_epoch, 2))
    grid.save_results(rec, record_path)


def save(args: argparse.Namespace) -> None:
    """Write the results JSON atomically (a killed run keeps the previous file)."""
    grid.save_results(args.results, args.results_path)


def ensure_trained(key: str, args: argparse.Namespace) -> bool:
    """Train ``key`` in a child process until done or out of budget; True once done."""
    record = grid.checkpoints(args.out_dir, key) / "record.json"
    if not (record.is_file() and json.loads(record.read_text())["status"] == "done"):
        if args.budget.left() <= 0:
            return False
        print(f"== training {key}", flush=True)
        subprocess.run([sys.executable, __file__, "--train-model", key, "--time-left",
                        str(args.budget.left()), *args.passthrough], check=True)
    rec = json.loads(record.read_text())
    args.results["models"][key] = rec
    mem = {k: v for k, v in rec["sessions"][-1].items() if k.startswith("peak")}
    print(f"  {key}: {rec['steps']}/{rec['target_steps']} steps, {rec['epochs']} epochs, "
          f"{rec['seconds_per_epoch']} s/epoch, {mem}", flush=True)
    save(args)
    return rec["status"] == "done"


def score(key: str, test_ds: ClassDataset, args: argparse.Namespace) -> None:
    """The prototype head on ``key``'s backbone over the fixed episodes of each shot."""
    learner = None
    for shot in SHOTS:
        name = cell_name(key, shot)
        if args.results["cells"].get(name, {}).get("status") == "done":
            continue
        if learner is None:
            learner = grid.load_model(args.out_dir, key, args.device)
        episodes = grid.fixed_episodes(test_ds, 5, shot, 15, args.episodes, "mini-val")
        tick = time.perf_counter()
        feats, where = episode_features(backbone_of(learner), episodes, test_ds)
        r = evaluate_features("prototype", PrototypeHead(), feats, where, episodes, 50)
        args.results["cells"][name] = {
            **grid.scores(r), "seconds": round(time.perf_counter() - tick, 1), "status": "done",
            **args.env}
        print(f"  {name}: {100 * r.mean:.2f} +- {100 * r.ci95:.2f} %", flush=True)
    for shot in SHOTS:  # paired against sup10 on the same episodes
        base, cell = (args.results["cells"].get(cell_name(k, shot)) for k in ("sup10", key))
        if key != "sup10" and base and cell:
            args.results["paired"][cell_name(key, shot)] = grid.paired(cell, base)
    save(args)


def render(results: dict, preset: str) -> str:
    """The headline table and the per-method table, in Markdown."""
    cells, paired, models_ = results["cells"], results["paired"], results["models"]

    def acc(key: str, shot: int) -> str:
        c = cells.get(cell_name(key, shot))
        if not c:
            return "-"
        p = paired.get(cell_name(key, shot))
        diff = (f" ({100 * p['mean_diff']:+.2f}, p={common.p_text(p['t_test_p'])})" if p else "")
        return f"{mean_ci(c)}{diff}"

    lines = [f"Preset {preset}; prototype head, 5-way, 15 queries, val classes; in brackets: "
             f"minus sup10 on the same episodes, paired t-test p.", "",
             "| model | 5w1s | 5w5s |", "| --- | --- | --- |"]
    for key in ("sup10", *(f"sup10-{m}" for m in HEADLINE)):
        lines.append(f"| {key} | {acc(key, 1)} | {acc(key, 5)} |")
    lines += ["", "| pre-training (no labels) | 5w1s | 5w5s | s / epoch | peak memory |",
              "| --- | --- | --- | --- | --- |"]
    for m in SSL:
        rec = models_.get(f"ssl-{m}", {})
        mem = (rec.get("sessions") or [{}])[-1]
        gb = mem.get("peak_cuda_gb", mem.get("peak_rss_gb"))
        lines.append(f"| {m} | {acc(f'ssl-{m}', 1)} | {acc(f'ssl-{m}', 5)} | "
                     f"{rec.get('seconds_per_epoch', '-')} | {gb if gb is not None else '-'} GB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    ap.add_argument("--quick", action="store_true", help="--preset quick, 1 thread")
    ap.add_argument("--methods", nargs="+", choices=SSL, default=list(SSL))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-minutes", type=float, help="stop cleanly before this many minutes")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    ap.add_argument("--out-dir", type=Path, help="default benchmarks/out/ssl-<preset>")
    ap.add_argument("--render", action="store_true", help="print the Markdown tables and exit")
    ap.add_argument("--train-model", help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--time-left", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    grid.preset_args(args, PRESETS, OUT, "ssl")
    if args.train_model:
        return train_one(args.train_model, args)
    args.results = grid.load_results(args.results_path) or grid.empty_results()
    if args.render:
        print(render(args.results, args.preset_name))
        return
    args.passthrough = ["--preset", args.preset_name, "--device", str(args.device), "--mini-root",
                        str(args.mini_root), "--out-dir", str(args.out_dir),
                        *(["--threads", str(args.threads or 1)] if args.quick or args.threads
                          else [])]
    args.budget = grid.Budget.of_minutes(args.budget_minutes)
    args.episodes, args.env = args.preset.test_episodes, common.environment(args.device)
    test_ds = load_split("val", args)
    todo = models(tuple(args.methods))
    for key in todo:
        if not ensure_trained(key, args):
            break
        score(key, test_ds, args)
    done = sum(all(args.results["cells"].get(cell_name(k, s), {}).get("status") == "done"
                   for s in SHOTS) for k in todo)
    wall = args.budget.wall()
    grid.record_call(args.results, args.env, wall)
    save(args)
    print(f"{done} of {len(todo)} models scored in {wall:.0f} s; results in {args.results_path}"
          + ("" if done == len(todo) else ": run the same command again to continue"), flush=True)
    print(render(args.results, args.preset_name))


if __name__ == "__main__":
    main()
