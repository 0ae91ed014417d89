"""Pre-training and transfer learning against meta-learning, on the same episodes.

On the reduced mini-ImageNet (pre-training and meta-training on its 64 train classes, scored on
its 16 val classes: the copy has no test classes), 5-way 1-shot and 5-shot, Conv-4 and ResNet-12:
ProtoNet from scratch; supervised pre-training + each head (prototype, linear, cosine, logistic,
knn); + fine-tuning; + two-stage fine-tuning; Meta-Baseline. Every cell of a setting is scored on
the same fixed test episodes as ``reproduce.py`` (1000 episodes, 15 queries;
``common.test_episodes``), with a paired test against ProtoNet from scratch of the same backbone
and shot. What is trained how: ``transfer_protocols.py``.

Resumable and budgeted: each model trains into ``OUT/checkpoints/<model>/`` (``last.pt``, resumed
exactly) and stops cleanly before ``--budget-minutes`` run out; scoring goes a block of episodes
at a time, its per-episode accuracies saved after each block; everything accumulates in
``OUT/results.json`` (atomic writes). Run the same command again to continue where it stopped;
with a larger ``--finetune-episodes`` it scores the next episodes of the fine-tuning cells.

    python benchmarks/transfer.py --preset cpu --budget-minutes 60     # again until all done
    python benchmarks/transfer.py --preset cpu-small --backbones conv4 --threads 1
    python benchmarks/transfer.py --preset full --device cuda --budget-minutes 9
    python benchmarks/transfer.py --quick --backbones conv4            # smoke test, CPU
    python benchmarks/transfer.py --render [--quick] [--backbones B]   # the Markdown table

Scoring: heads on frozen features, ProtoNet and Meta-Baseline (whose classifier is the prototype
head, Euclidean or cosine) run the backbone once over the distinct test images the episodes use
(``fewshot.heads.scoring``: the accuracies of ``evaluate``, tested), not once per episode;
fine-tuning heads run on the images of every episode.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import common
import grid
import torch
from transfer_protocols import (
    BACKBONES,
    FEATURE_HEADS,
    METHODS,
    PRESETS,
    SHOTS,
    Training,
    cell_name,
    cells,
    model_key,
    training,
    with_steps,
)

from episodes import (
    AugmentConfig,
    ClassDataset,
    EpisodeAugment,
    EpisodeSampler,
    ImageBatchSampler,
    mini_imagenet,
)
from fewshot import TrainConfig, build_learner, make_spec
from fewshot.engine.checkpoint import load_backbone_weights
from fewshot.engine.evaluate import EvalResult, evaluate
from fewshot.heads import PrototypeHead, head_config
from fewshot.heads.scoring import episode_features, evaluate_features, evaluate_head
from fewshot.methods.protonet import ProtoNet
from fewshot.models.weights import backbone_of

OUT = Path(__file__).parent / "out"
RESERVE_S = 60.0  # budget kept back for saving, full runs


def load_split(split: str, args: argparse.Namespace) -> ClassDataset:
    """A class split of the reduced mini-ImageNet on ``args.device``, at the preset's size."""
    return mini_imagenet(args.mini_root, split, image_size=args.preset.image_size).to(args.device)


def save(args: argparse.Namespace) -> None:
    """Write the results JSON atomically (a killed run keeps the previous file)."""
    grid.save_results(args.results, args.results_path)


def train_model(key: str, t: Training, train_ds: ClassDataset, args: argparse.Namespace) -> bool:
    """Train (or continue) model ``key`` within the budget; True once it is finished."""
    rec = args.results["models"].setdefault(key, {})
    if rec.get("status") == "done":
        return True
    if args.budget.left() <= 0:
        return False
    backbone = key.split("-")[1]
    options = {**t.options, **({"num_classes": train_ds.num_classes} if t.batch else {})}
    spec = make_spec(t.method, backbone, *train_ds.image_shape[:2], options)
    torch.manual_seed(0)
    learner = build_learner(spec)
    ckdir = grid.checkpoints(args.out_dir, key)
    if t.init and not (ckdir / "last.pt").is_file():
        load_backbone_weights(backbone_of(learner), grid.checkpoints(args.out_dir, t.init) /
                              "last.pt", backbone, "--init")
    augment = AugmentConfig.standard() if t.augment else None
    sampler = (ImageBatchSampler(train_ds, t.batch, seed=0, augment=augment) if t.batch else
               EpisodeSampler(train_ds, t.way, t.shot, t.query, t.per_step, seed=0,
                              augment=EpisodeAugment(augment, augment) if augment else None))
    cfg = TrainConfig(steps=t.steps, lr=t.lr, optimizer=t.optimizer, momentum=t.momentum,
                      weight_decay=t.weight_decay, schedule=t.schedule,
                      lr_decay_every=t.lr_decay_every, checkpoint_dir=str(ckdir),
                      checkpoint_every=args.checkpoint_every,
                      precision="fp32")  # as the tables recorded so far, and resumable
    return grid.train_or_resume(rec, key, learner, spec, sampler, cfg, args.budget, args.env,
                                device=args.device, save=lambda: save(args),
                                after_chunk=lambda res: rec.update(training=t.describe()))


def head_of(method: str) -> str | None:
    """The head a ``pretrain+<head>`` cell fits; None for ProtoNet and Meta-Baseline."""
    return method.split("+")[1] if "+" in method else None


def episode_count(method: str, args: argparse.Namespace) -> int:
    """How many of the test episodes the cell scores: the first ``finetune_episodes`` for the
    fine-tuning heads, all for the others."""
    head = head_of(method)
    return (min(args.preset.finetune_episodes, args.episodes)
            if head and head not in FEATURE_HEADS else args.episodes)


def scored(name: str, method: str, args: argparse.Namespace) -> bool:
    """Whether the cell has its episodes (a larger ``--finetune-episodes`` continues a finished
    fine-tuning cell from where it stopped)."""
    return len(args.results["cells"].get(name, {}).get("accuracies", [])) >= episode_count(
        method, args)


def score_cell(backbone: str, shot: int, method: str, test_ds: ClassDataset,
               args: argparse.Namespace) -> bool:
    """Score the cell on its episodes a block at a time; True once all are scored."""
    name, key = cell_name(backbone, shot, method), model_key(method, backbone, shot)
    head, count = head_of(method), episode_count(method, args)
    cell = args.results["cells"].setdefault(name, {"accuracies": [], "seconds": 0.0})
    cell["test_set"] = args.episodes
    episodes = grid.fixed_episodes(test_ds, 5, shot, 15, args.episodes, "mini-val")
    learner = grid.load_model(args.out_dir, key, args.device)
    config = head_config(head, args.preset.head_options.get(head, {})) if head else None
    if head is None and isinstance(learner, ProtoNet) and (
            learner.scale is None or float(torch.as_tensor(learner.scale).detach()) > 0):
        # ProtoNet's and Meta-Baseline's own classifier is the prototype head (a positive
        # scale leaves the argmax as it is): each image's features once instead of per episode
        head, config = "prototype", PrototypeHead(learner.distance)
    while len(cell["accuracies"]) < count and args.budget.left() > 0:
        start = len(cell["accuracies"])
        block = grid.subset(episodes, start, count if head in FEATURE_HEADS else
                       min(count, start + args.block))
        tick = time.perf_counter()
        if head in FEATURE_HEADS:
            if (key, shot) not in args.features:  # each image's features once per model
                args.features[key, shot] = episode_features(backbone_of(learner), episodes,
                                                            test_ds)
                args.results["models"][key].setdefault("feature_seconds", {})[str(shot)] = round(
                    time.perf_counter() - tick, 1)
                tick = time.perf_counter()
            feats, where = args.features[key, shot]
            r = evaluate_features(head, config, feats, where[start:count], block, args.eval_batch)
        elif head:
            r = evaluate_head(backbone_of(learner), head, config, block, test_ds, args.eval_batch)
        else:
            r = evaluate(learner, block, test_ds, batch_size=args.eval_batch)
        cell["accuracies"] += r.accuracies.tolist()
        cell["seconds"] = round(cell["seconds"] + time.perf_counter() - tick, 1)
        save(args)
    acc = torch.tensor(cell["accuracies"])
    done = len(acc) >= count
    cell.update(status="done" if done else "scoring", episodes=len(acc), query=15,
                mean=float(acc.double().mean()) if len(acc) else None,
                ci95=EvalResult(acc, 5, shot, 15).ci95 if len(acc) > 1 else None,
                scored_with=None if config is None else {"head": head, **vars(config)}, model=key,
                mode=f"preset {args.preset_name}", **args.env)
    print(f"  {name}: {len(acc)}/{count} episodes"
          + (f", {100 * cell['mean']:.2f} +- {100 * cell['ci95']:.2f} %" if len(acc) > 1 else ""),
          flush=True)
    save(args)
    return done


def paired(args: argparse.Namespace, backbone: str, shot: int) -> None:
    """Each scored cell minus ProtoNet from scratch, on the episodes both have."""
    cells_ = args.results["cells"]
    base = cells_.get(cell_name(backbone, shot, "protonet"))
    if not base or base.get("status") != "done":
        return
    for method in METHODS[1:]:
        c = cells_.get(cell_name(backbone, shot, method))
        if c and c.get("status") == "done":
            args.results["paired"][cell_name(backbone, shot, method)] = grid.paired(
                c, base, common_prefix=True)


def check_test_set(args: argparse.Namespace) -> None:
    """Refuse to add to cells scored on another number of test episodes: the episodes of a set
    of 2000 are not the first 1000 and 1000 more (``FixedEpisodes.generate``)."""
    for name, cell in args.results["cells"].items():
        if cell.get("test_set", args.episodes) != args.episodes:
            raise SystemExit(f"error: {args.results_path} was scored on sets of "
                             f"{cell['test_set']} test episodes ({name}), and --test-episodes "
                             f"{args.episodes} draws other episodes: give it "
                             f"--test-episodes {cell['test_set']}, or another --out-dir")


def run(args: argparse.Namespace) -> None:
    check_test_set(args)
    todo = cells(tuple(args.backbones), tuple(args.shots), tuple(args.methods))
    data: dict[str, ClassDataset] = {}
    for backbone, shot, method in todo:
        if scored(cell_name(backbone, shot, method), method, args):
            continue
        if args.budget.left() <= 0:
            break
        if not data:
            data = {"train": load_split("train", args), "test": load_split("val", args)}
        key = model_key(method, backbone, shot)
        print(f"== {cell_name(backbone, shot, method)}", flush=True)
        t = training(key, args.preset)
        if t.init and not train_model(t.init, with_steps(training(t.init, args.preset), args.steps),
                                      data["train"], args):
            break
        if not train_model(key, with_steps(t, args.steps), data["train"], args):
            break
        if not score_cell(backbone, shot, method, data["test"], args):
            break
        paired(args, backbone, shot)
        save(args)
    done = sum(scored(cell_name(*c), c[2], args) for c in todo)
    print(f"{done} of {len(todo)} selected cells scored"
          + ("" if done == len(todo) else ": run the same command again to continue"), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=tuple(PRESETS), default="full",
                    help="steps and episodes (transfer_protocols.PRESETS)")
    ap.add_argument("--quick", action="store_true", help="--preset quick, 1 thread")
    ap.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    ap.add_argument("--shots", nargs="+", type=int, choices=SHOTS, default=list(SHOTS))
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-minutes", type=float, help="stop cleanly before this many minutes "
                    "(resume with the same command)")
    ap.add_argument("--steps", type=int, help="override every model's steps (smoke runs)")
    ap.add_argument("--test-episodes", type=int, help="override the preset's test episodes")
    ap.add_argument("--finetune-episodes", type=int, help="override the preset's episodes of the "
                    "fine-tuning cells (the first of the test episodes)")
    ap.add_argument("--block", type=int, default=20, help="episodes scored between saves "
                    "(fine-tuning heads, meta-learners)")
    ap.add_argument("--eval-batch", type=int, default=20, help="episodes per forward / head fit")
    ap.add_argument("--checkpoint-every", type=int, default=200)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet")
    ap.add_argument("--out-dir", type=Path, help="results.json and checkpoints (default "
                    "benchmarks/out/transfer-<preset>)")
    ap.add_argument("--render", action="store_true", help="print the Markdown table and exit")
    args = ap.parse_args(argv)
    args.preset_name = "quick" if args.quick else args.preset
    args.preset = PRESETS[args.preset_name]
    if args.finetune_episodes:
        args.preset = replace(args.preset, finetune_episodes=args.finetune_episodes)
    args.out_dir = args.out_dir or OUT / f"transfer-{args.preset_name}"
    args.results_path = args.out_dir / "results.json"
    results = grid.load_results(args.results_path) or grid.empty_results()
    if args.render:
        from transfer_render import markdown
        print(markdown(results, args))
        return
    if args.quick or args.threads:
        torch.set_num_threads(args.threads or 1)
    args.episodes = args.test_episodes or args.preset.test_episodes
    args.budget = grid.Budget.of_minutes(args.budget_minutes, 0.0 if args.quick else RESERVE_S)
    args.env = common.environment(torch.device(args.device))
    args.results, args.features = results, {}
    run(args)
    wall = args.budget.wall()
    grid.record_call(args.results, args.env, wall)
    save(args)
    print(f"wall {wall:.0f} s; results in {args.results_path}", flush=True)


if __name__ == "__main__":
    main()
