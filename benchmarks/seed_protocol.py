"""Seed 000's own transfer protocol, once per pre-trained backbone: "classifier training" (three
fully connected layers on the frozen fourth conv block's features, early stopping) then
"full-network fine-tuning" (everything at a ten times lower rate, early stopping).

What is trained how, and against RotNet's code point by point: ``seed_protocol_protocols.py``.
A run scores the backbone after each stage: (a) the seed's measure, the classifier's accuracy on
held-out images of the 64 train classes with its 95% interval; (b) the prototype head on the
backbone over ``label_efficiency.py``'s 1,000 fixed 5-way 1-shot and 5-shot episodes of the 16
val classes, paired against ``ft-<method>@<level>`` and ``ssl-<method>`` of ``--against``
(label_efficiency's results) once their episode files are checked to be these. Results
accumulate in ``OUT/results.json`` (a model per checkpoint and level), the table in
``OUT/table.md``.

Against the library's ``two-stage`` head (``fewshot/heads/finetune.py``): that one runs per
episode, on the episode's support set (5 or 25 images of 5 new classes), a *linear* head over
the episode's classes, full-batch steps of fixed numbers (100 then 50, no early stopping, no
augmentation, BatchNorm in eval mode throughout), and scores the episode's queries with the tuned
head; here the network is trained once, on the labelled images of the 64 train classes, with a
3-layer head, mini-batches, augmentation and early stopping on held-out images, and scored on new
classes by the prototype head on the backbone (the head over the train classes is dropped).

Against ``label_efficiency.py``'s ``ft-<method>`` line: that one fine-tunes the whole backbone
and a *linear* classifier together from the start (no frozen-backbone stage), with SGD 0.05 and
a cosine schedule over 300 steps (30 epochs of the 640 labelled images) and no early stopping or
held-out images; here a 3-layer head first trained alone at 0.1, then everything at 0.01, each
stage as long as the validation images say. Both are scored by the same prototype head on the
same episodes, so the paired differences say which protocol leaves the better backbone.

    python benchmarks/seed_protocol.py --checkpoint OUT/checkpoints/ssl-rotation/last.pt
    python benchmarks/seed_protocol.py --quick --checkpoint CKPT        # smoke test
    python benchmarks/seed_protocol.py --render                         # the Markdown table
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import common
import grid
import label_efficiency as labeff
import torch
from label_efficiency_heldout import correct
from label_efficiency_protocols import HOLDOUT_SEED, PRESETS, SHOTS, cell_name
from seed_protocol_protocols import (
    PROTOCOLS,
    Protocol,
    Stage,
    check_level,
    fc3_head,
    held_out,
)
from seed_protocol_render import render_table

from episodes import (
    AugmentConfig,
    FixedEpisodes,
    ImageBatchSampler,
    TensorClassDataset,
    hold_out,
    subset_items,
)
from fewshot import TrainConfig, build_learner, make_spec
from fewshot.engine.checkpoint import load_backbone_weights
from fewshot.engine.results import confidence_interval
from fewshot.engine.train_config import make_optimizer
from fewshot.methods.classifier import SupervisedClassifier

MODE = "seed-protocol"
AGAINST = common.CHECKOUT / "benchmarks" / "results" / "label-efficiency" / "results.json"


def early_stopping(module: torch.nn.Module, train_epoch: Callable[[int], None],
                   validate: Callable[[], float], max_epochs: int, patience: int) -> dict:
    """Validate, then train epochs 1, 2, ... validating after each, until ``patience`` epochs
    passed without a better accuracy (or ``max_epochs``); ``module`` ends with the weights of its
    best epoch (0: as it started). Returns ``best_epoch``, ``epochs`` trained, ``best_val`` and
    ``val_curve`` (epoch 0 first)."""
    best, best_epoch = validate(), 0
    curve, state = [best], copy.deepcopy(module.state_dict())
    for epoch in range(1, max_epochs + 1):
        train_epoch(epoch)
        curve.append(acc := validate())
        if acc > best:
            best, best_epoch, state = acc, epoch, copy.deepcopy(module.state_dict())
        elif epoch - best_epoch >= patience:
            break
    module.load_state_dict(state)
    return {"best_epoch": best_epoch, "epochs": len(curve) - 1, "best_val": best,
            "val_curve": curve}


def run_stage(learner: SupervisedClassifier, stage: Stage, protocol: Protocol,
              sampler: ImageBatchSampler, val: TensorClassDataset) -> dict:
    """Train ``learner`` (the backbone frozen unless ``stage.tune_backbone``) with early
    stopping on ``val`` (:func:`early_stopping`); its record with ``seconds``."""
    tick, backbone = time.perf_counter(), learner.backbone
    backbone.requires_grad_(stage.tune_backbone)
    optimizer, _ = make_optimizer([p for p in learner.parameters() if p.requires_grad],
                                  TrainConfig(lr=stage.lr, optimizer="sgd",
                                              momentum=protocol.momentum,
                                              weight_decay=protocol.weight_decay))
    steps = math.ceil(len(sampler.dataset) / sampler.batch_size)

    def train_epoch(epoch: int) -> None:
        learner.train()
        backbone.train(stage.tune_backbone)
        for _ in range(steps):
            loss = learner.loss(*learner.batch_logits(sampler.sample()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    try:
        rec = early_stopping(learner, train_epoch, lambda: float(correct(learner, val).mean()),
                             stage.max_epochs, stage.patience)
    finally:
        backbone.requires_grad_(True)
    return {**rec, "steps_per_epoch": steps, "seconds": round(time.perf_counter() - tick, 1)}


def build(checkpoint: Path, classes: int, args: argparse.Namespace
          ) -> tuple[SupervisedClassifier, str]:
    """The checkpoint's backbone under a fresh 3-FC head; and the checkpoint's method."""
    p = args.preset
    spec = make_spec("classifier", p.backbone, 3, p.image_size, {"num_classes": classes})
    torch.manual_seed(0)
    learner = build_learner(spec)
    try:
        meta = load_backbone_weights(learner.backbone, checkpoint, p.backbone, "--checkpoint")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    dim = learner.classifier.in_features
    learner.classifier = fc3_head(dim, classes, args.protocol.hidden)
    return learner.to(args.device), (meta or {}).get("spec", {}).get("method", checkpoint.stem)


def same_episodes(checkout: Path | None, count: int) -> dict[int, bool | None]:
    """For each shot, whether the fixed val episodes (``count`` of them) kept in ``checkout``
    (where the results paired against were scored) equal this checkout's (None: one of the two
    files is not there)."""
    out: dict[int, bool | None] = {}
    for shot in SHOTS:
        if checkout is None:
            out[shot] = None
            continue
        theirs, ours = (common.episodes_file("mini-val", 5, shot, 15, count, c)
                        for c in (checkout, common.CHECKOUT))
        if not (theirs.is_file() and ours.is_file()):
            out[shot] = None
            continue
        a, b = FixedEpisodes.load(theirs), FixedEpisodes.load(ours)
        out[shot] = (a.fingerprint == b.fingerprint and torch.equal(a.classes, b.classes)
                     and torch.equal(a.items, b.items))
    return out


def run(args: argparse.Namespace) -> None:
    """Both stages for ``--checkpoint``, scored after each; into the results and the table."""
    against = grid.load_results(args.against) or grid.empty_results()
    # label_efficiency's train split: without the images its run held out (none in folders
    # that record no holdout), so that the labelled images are those of ft-<method>@<level>
    holdout = against.get("holdout", {"per_class": 0, "seed": HOLDOUT_SEED})
    train_ds = hold_out(labeff.load_split("train", args), holdout["per_class"],
                        holdout["seed"])[0]
    check_level(args.level, args.protocol, int(train_ds.class_sizes().min()))
    parts = {k: subset_items(train_ds, v) for k, v in
             held_out(train_ds, args.level, args.protocol).items()}
    learner, method = build(args.checkpoint, train_ds.num_classes, args)
    key = f"seed-{method}@{args.level}"
    sampler = ImageBatchSampler(parts["labelled"], min(args.protocol.batch, len(parts["labelled"])),
                                seed=0, augment=AugmentConfig.standard())
    val_ds, env = labeff.load_split("val", args), common.environment(args.device)
    for shot in SHOTS:  # this checkout's episode files, before they are compared
        labeff.val_episodes(val_ds, shot, args)
    parents = args.against.resolve().parents  # its checkout: .../benchmarks/results/NAME/
    checkout = args.against_checkout or (parents[3] if len(parents) > 3 else None)
    same = same_episodes(checkout, args.preset.test_episodes)
    rec = {"checkpoint": str(args.checkpoint), "method": method, "level": args.level,
           "holdout": holdout,
           "protocol": asdict(args.protocol), "preset": args.preset_name,
           "images": {k: len(v) for k, v in parts.items()}, "against": str(args.against),
           "episodes_same_as_against": same, "stages": {}, **env}
    for shot in (s for s in SHOTS if not same[s]):
        print(f"  not paired at {shot} shot: the episode file of {checkout} "
              + ("differs from this checkout's" if same[shot] is False else "is not there")
              + " (--against-checkout names the checkout its results were scored in)", flush=True)
    for stage in args.protocol.stages:
        srec = run_stage(learner, stage, args.protocol, sampler, parts["val"])
        hits = correct(learner, parts["test"])
        srec["test"] = {"mean": float(hits.mean()), "ci95": confidence_interval(hits),
                        "images": len(hits)}
        tick = time.perf_counter()
        for shot, cell in labeff.score(learner, val_ds, args).items():
            name = cell_name(f"{key}/{stage.name}", shot)
            args.results["cells"][name] = {**cell, **env}
            for other in (f"ft-{method}@{args.level}", f"ssl-{method}"):
                base = against["cells"].get(cell_name(other, shot))
                if base and same[shot] and base["episodes"] == cell["episodes"]:
                    args.results["paired"][f"{name} - {other}"] = grid.paired(cell, base)
        srec["score_seconds"] = round(time.perf_counter() - tick, 1)
        rec["stages"][stage.name] = srec
        print(f"  {key} {stage.name}: best epoch {srec['best_epoch']} of {srec['epochs']}, "
              f"test {100 * srec['test']['mean']:.2f} +- {100 * srec['test']['ci95']:.2f} %, "
              f"{srec['seconds']} s", flush=True)
    first, second = (s.name for s in args.protocol.stages)
    for shot in SHOTS:
        a, b = (args.results["cells"][cell_name(f"{key}/{n}", shot)] for n in (second, first))
        args.results["paired"][f"{cell_name(f'{key}/{second}', shot)} - {first}"] = \
            grid.paired(a, b)
    rec["peak_memory"] = common.peak_memory(args.device)
    args.results["models"][key] = rec
    grid.save_results(args.results, args.results_path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="a pre-trained model's last.pt")
    ap.add_argument("--level", type=int, default=10, help="labelled images per train class")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu",
                    help="label_efficiency.py's preset (image size, backbone, episodes)")
    ap.add_argument("--quick", action="store_true", help="--preset quick, 1 thread")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default 1 with --quick)")
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    ap.add_argument("--against", type=Path, default=AGAINST,
                    help="label_efficiency.py's results.json to pair against")
    ap.add_argument("--against-checkout", type=Path,
                    help="the checkout whose benchmarks/episodes the --against results were "
                         "scored on (default: the one holding --against)")
    ap.add_argument("--out-dir", type=Path, help="default benchmarks/out/seed-protocol-<preset>")
    ap.add_argument("--render", action="store_true", help="write OUT/table.md only")
    args = ap.parse_args(argv)
    grid.preset_args(args, PRESETS, labeff.OUT, "seed-protocol")
    args.protocol = PROTOCOLS[args.preset_name]
    args.results = grid.check_mode(grid.load_results(args.results_path) or
                                   grid.empty_results(), MODE, args.results_path)
    if not args.render:
        if args.checkpoint is None or not args.checkpoint.is_file():
            raise SystemExit(f"--checkpoint {args.checkpoint}: no such file: give the last.pt of "
                             "a pre-trained model (label_efficiency.py's ssl-<method>)")
        if not args.against.is_file():
            raise SystemExit(f"--against {args.against}: no such file: give label_efficiency.py's "
                             "results.json (its ft- and ssl- cells are paired against)")
        wall = grid.Budget.of_minutes(None)
        run(args)
        grid.record_call(args.results, common.environment(args.device), wall.wall(),
                         preset=args.preset_name, level=args.level)
        grid.save_results(args.results, args.results_path)
    table = render_table(args.results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "table.md").write_text(table + "\n")
    print(table)
    print(f"wrote {args.results_path} and {args.out_dir / 'table.md'}")


if __name__ == "__main__":
    main()
