"""The label-efficiency curve: few-shot accuracy against labelled images per train class.

On the reduced mini-ImageNet (64 train classes of 100 images, scored on the 16 val classes: the
copy has no test classes), one model per (line, labels per class): supervised training on the
labels only, self-supervised pre-training on every train image (the held-out ones aside) then
fine-tuning on the labels (``ft-rotation``, ``ft-moco``), and each semi-supervised method on the
labels and the unlabelled rest. What is trained how: ``label_efficiency_protocols.py``. Every
point is the prototype head on the model's backbone over the same fixed 5-way 1-shot and 5-shot
episodes, and every model with a classifier over the train classes is scored by it on images of
those classes held out before anything was chosen (``label_efficiency_heldout.py``), each
paired against ``sup`` at the same level, with its seconds of training.

Each model trains, then scores itself, in a child process (``--jobs`` at a time) into
``OUT/checkpoints/<model>/`` and stops before ``--budget-minutes`` run out; results accumulate in
``OUT/results.json``; the same command continues a stopped run. ``--render`` writes
``OUT/table.md`` and ``OUT/figure.png`` (``label_efficiency_render.py``).

    python benchmarks/label_efficiency.py --quick                           # smoke test, CPU
    python benchmarks/label_efficiency.py --preset cpu --jobs 2 --budget-minutes 30  # again until done
    python benchmarks/label_efficiency.py --preset gpu --device cuda
    python benchmarks/label_efficiency.py --render --preset cpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import common
import grid
import torch
from label_efficiency_heldout import check_holdout, heldout_cell, heldout_paired
from label_efficiency_protocols import (
    BASELINE,
    HOLDOUT_SEED,
    LINES,
    PRESETS,
    PRETRAIN_LR,
    SHOTS,
    SSL_LINES,
    cell_name,
    check_levels,
    heldout_name,
    line_kind,
    model_key,
    models,
    parse_key,
)
from label_efficiency_render import render_figure, render_pretrained, render_table

from episodes import (
    AugmentConfig,
    FixedEpisodes,
    ImageBatchSampler,
    SemiSupervisedSampler,
    TensorClassDataset,
    hold_out,
    labelled_index,
    mini_imagenet,
    subset_items,
    unlabelled_pool,
)
from fewshot import TrainConfig, build_learner, make_spec
from fewshot.engine.checkpoint import load_backbone_weights
from fewshot.heads import PrototypeHead
from fewshot.heads.scoring import episode_features, evaluate_features
from fewshot.models.weights import backbone_of

OUT = Path(__file__).parent / "out"
MODE = "label-efficiency"


def load_split(split: str, args: argparse.Namespace) -> TensorClassDataset:
    return mini_imagenet(args.mini_root, split, image_size=args.preset.image_size).to(args.device)


def train_parts(args: argparse.Namespace) -> tuple[TensorClassDataset, TensorClassDataset]:
    """The train split without its held-out images, and those (the preset's ``holdout`` per
    class, :data:`HOLDOUT_SEED`): the same for every line and level."""
    return hold_out(load_split("train", args), args.preset.holdout, HOLDOUT_SEED)


def setup(key: str, train_ds: TensorClassDataset, args: argparse.Namespace) -> tuple:
    """Model ``key``'s learner, spec, sampler, steps and optimiser settings."""
    p, size = args.preset, args.preset.image_size
    if key.startswith("ssl-"):
        method = key.removeprefix("ssl-")
        learner, spec = grid.pretext_learner(method, p, train_ds)
        if hasattr(learner, "check_batch_size"):  # e.g. MoCo's queue and split BatchNorm
            learner.check_batch_size(p.ssl_batch)
        sampler = ImageBatchSampler(train_ds, p.ssl_batch, seed=0, views=learner.view_augments())
        return (learner, spec, sampler, p.ssl_steps,
                dict(lr=PRETRAIN_LR.get(method, 1e-3), optimizer="adam", weight_decay=1e-6))
    line, level = parse_key(key)
    index = labelled_index(train_ds, per_class=level, seed=0)
    labelled = subset_items(train_ds, index)
    batch, kind = min(p.batch, len(labelled)), line_kind(line)
    sgd = dict(lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4)
    if kind == "semi-supervised":
        options = {"num_classes": labelled.num_classes, **p.semi_options.get(line, {})}
        spec = make_spec(line, p.backbone, 3, size, options)
        learner = build_learner(spec)
        sampler = SemiSupervisedSampler(labelled, unlabelled_pool(train_ds, index), batch,
                                        learner.mu, 0, *learner.view_augments())
        return learner, spec, sampler, p.steps, sgd
    spec = make_spec("classifier", p.backbone, 3, size, {"num_classes": labelled.num_classes})
    learner = build_learner(spec)
    if kind == "fine-tuned" and not (grid.checkpoints(args.out_dir, key) / "last.pt").is_file():
        init = grid.checkpoints(args.out_dir, f"ssl-{line.removeprefix('ft-')}") / "last.pt"
        if not init.is_file():
            raise SystemExit(f"{key}: no pre-trained checkpoint {init} (its scores came from "
                             "another machine): remove its record from results.json to retrain it")
        load_backbone_weights(backbone_of(learner), init, p.backbone, "--init")
    sampler = ImageBatchSampler(labelled, batch, seed=0, augment=AugmentConfig.standard())
    return learner, spec, sampler, p.steps, sgd


def train_one(key: str, args: argparse.Namespace) -> None:
    """Train (or continue) model ``key`` within ``--time-left`` seconds, then score it once
    done; writes its record (with its cells) to its checkpoint folder."""
    ckdir = grid.checkpoints(args.out_dir, key)
    train_ds, held = train_parts(args)
    torch.manual_seed(0)
    learner, spec, sampler, steps, cfg = setup(key, train_ds, args)
    record_path = ckdir / "record.json"
    rec = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    env = common.environment(args.device)
    grid.train_or_resume(rec, key, learner, spec, sampler, TrainConfig(
        steps=steps, schedule="cosine", checkpoint_dir=str(ckdir), checkpoint_every=100,
        precision="fp32", **cfg), grid.Budget(time.monotonic() + args.time_left), env,
        device=args.device)
    rec["sessions"][-1].update(**env, **common.peak_memory(args.device))
    rec.update(batch=sampler.batch_size,  # labelled images a step (ssl-: images, unlabelled)
               labelled_images=0 if key.startswith("ssl-") else len(sampler.dataset),
               train_images=len(train_ds), holdout=args.preset.holdout, heldout_images=len(held))
    if rec["status"] == "done":
        rec["cells"] = score(learner, load_split("val", args), args)
        if not key.startswith("ssl-") and len(held):  # the ssl- models have no classifier
            rec["heldout"] = heldout_cell(learner, held, sampler.dataset.class_names)
    grid.save_results(rec, record_path)


def val_episodes(test_ds: TensorClassDataset, shot: int,
                 args: argparse.Namespace) -> FixedEpisodes:
    return grid.fixed_episodes(test_ds, 5, shot, 15, args.preset.test_episodes, "mini-val")


def score(learner: torch.nn.Module, test_ds: TensorClassDataset,
          args: argparse.Namespace) -> dict[int, dict]:
    """The prototype head on the learner's backbone over the fixed episodes of each shot."""
    learner.eval()
    out = {}
    for shot in SHOTS:
        episodes, tick = val_episodes(test_ds, shot, args), time.perf_counter()
        feats, where = episode_features(backbone_of(learner), episodes, test_ds)
        r = evaluate_features("prototype", PrototypeHead(), feats, where, episodes, 50)
        out[shot] = {**grid.scores(r), "seconds": round(time.perf_counter() - tick, 1)}
    return out


def ensure_trained(key: str, args: argparse.Namespace, after: Future | None) -> bool:
    """Train ``key`` in a child process (once ``after``, the model it starts from, is done)
    until done or out of budget; True once done."""
    if after is not None and not after.result():
        return False
    record = grid.checkpoints(args.out_dir, key) / "record.json"
    if not record.is_file() and args.results["models"].get(key, {}).get("status") == "done":
        return True  # scored in the committed results; its checkpoint is not on this machine
    if not (record.is_file() and json.loads(record.read_text())["status"] == "done"):
        if args.budget.left() <= 0:
            return False
        print(f"== training {key}", flush=True)
        subprocess.run([sys.executable, __file__, "--train-model", key, "--time-left",
                        str(args.budget.left()), *args.passthrough], check=True)
    return json.loads(record.read_text())["status"] == "done"


def collect(key: str, args: argparse.Namespace) -> None:
    """Model ``key``'s record and cells into the results, paired against the baseline of its
    level; saved."""
    record = grid.checkpoints(args.out_dir, key) / "record.json"
    if not record.is_file():
        return
    rec = json.loads(record.read_text())
    cells, held = rec.pop("cells", {}), rec.pop("heldout", None)
    args.results["models"][key] = rec
    for shot, cell in cells.items():
        args.results["cells"][cell_name(key, int(shot))] = {**cell, "status": "done", **args.env}
        print(f"  {cell_name(key, int(shot))}: {100 * cell['mean']:.2f} +- "
              f"{100 * cell['ci95']:.2f} %, {rec['seconds']} s of training", flush=True)
    if held:
        args.results["cells"][heldout_name(key)] = {**held, "status": "done", **args.env}
        print(f"  {heldout_name(key)}: {100 * held['mean']:.2f} +- {100 * held['ci95']:.2f} % "
              f"of {held['images']} images", flush=True)
    if not key.startswith("ssl-"):
        line, level = parse_key(key)
        base_key = model_key(BASELINE, level)
        tests = [(cell_name(key, s), cell_name(base_key, s), grid.paired) for s in SHOTS]
        for name, base_name, test in [*tests, (heldout_name(key), heldout_name(base_key),
                                               heldout_paired)]:
            base, cell = (args.results["cells"].get(n) for n in (base_name, name))
            if line != BASELINE and base and cell:
                args.results["paired"][name] = test(cell, base)
    grid.save_results(args.results, args.results_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    ap.add_argument("--quick", action="store_true", help="--preset quick, 1 thread")
    ap.add_argument("--lines", nargs="+", choices=LINES, help="default: the preset's")
    ap.add_argument("--levels", nargs="+", type=int, help="labels per class; default: the preset's")
    ap.add_argument("--pretrained", nargs="+", choices=SSL_LINES, default=[],
                    help="also pre-train these methods and score their backbones alone")
    ap.add_argument("--table-level", type=int, default=10,
                    help="labels per class of the `sup` model the --pretrained table pairs with")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="models trained at a time (child processes)")
    ap.add_argument("--budget-minutes", type=float, help="stop cleanly before this many minutes")
    ap.add_argument("--threads", type=int, help="threads per child (default 1 with --quick)")
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    ap.add_argument("--out-dir", type=Path, help="default benchmarks/out/labeff-<preset>")
    ap.add_argument("--render", action="store_true", help="write OUT/table.md, OUT/figure.png")
    ap.add_argument("--train-model", help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--time-left", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jobs < 1 or any(level < 1 for level in args.levels or ()):
        ap.error("--jobs and --levels take numbers >= 1")
    grid.preset_args(args, PRESETS, OUT, "labeff")
    if args.train_model:
        return train_one(args.train_model, args)
    args.results = grid.check_mode(grid.load_results(args.results_path) or grid.empty_results(),
                                   MODE, args.results_path)
    lines = tuple(args.lines or args.preset.lines)
    levels = tuple(sorted(args.levels or args.preset.levels))
    if args.render:
        return render(args, lines, levels)
    args.passthrough = ["--preset", args.preset_name, "--device", str(args.device), "--mini-root",
                        str(args.mini_root), "--out-dir", str(args.out_dir),
                        *(["--threads", str(args.threads or 1)] if args.quick or args.threads
                          else [])]
    args.budget = grid.Budget.of_minutes(args.budget_minutes)
    args.env = common.environment(args.device)
    check_holdout(args.results, args.preset.holdout, args.out_dir)
    try:
        smallest = int(train_parts(args)[0].class_sizes().min())
    except ValueError as e:  # a class with no more images than the preset holds out
        raise SystemExit(f"--mini-root {args.mini_root}: {e}") from None
    check_levels(levels, lines, smallest, args.preset.holdout)
    test_ds = load_split("val", args)
    for shot in SHOTS:  # written once here, read by the children
        val_episodes(test_ds, shot, args)
    grid.save_results(args.results, args.results_path)  # the holdout, before any model trains
    todo = models(lines, levels, tuple(args.pretrained))
    futures: dict[str, Future] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for key in todo:
            line = None if key.startswith("ssl-") else parse_key(key)[0]
            after = (futures[f"ssl-{line.removeprefix('ft-')}"]
                     if line and line_kind(line) == "fine-tuned" else None)
            futures[key] = pool.submit(ensure_trained, key, args, after)
        done = 0
        for key in todo:
            done += futures[key].result()
            collect(key, args)
    wall = args.budget.wall()
    grid.record_call(args.results, args.env, wall, preset=args.preset_name, jobs=args.jobs)
    grid.save_results(args.results, args.results_path)
    print(f"{done} of {len(todo)} models done in {wall:.0f} s; results in {args.results_path}"
          + ("" if done == len(todo) else ": run the same command again to continue"), flush=True)
    render(args, lines, levels)


def render(args: argparse.Namespace, lines: tuple[str, ...], levels: tuple[int, ...]) -> None:
    """Write (and print) the Markdown table and the figure of the results."""
    table = render_table(args.results, args.preset_name, lines, levels)
    if args.pretrained:
        table += "\n\n" + render_pretrained(args.results, args.table_level)
    (args.out_dir / "table.md").write_text(table + "\n")
    render_figure(args.results, args.preset_name, lines, levels, args.out_dir / "figure.png")
    print(table)
    print(f"wrote {args.out_dir / 'table.md'} and {args.out_dir / 'figure.png'}")


if __name__ == "__main__":
    main()
