"""Does the library give the published numbers, and how fast? One harness, every cell.

A cell is a (method, setting): ProtoNet, Matching Networks (FCE), Relation Networks, MAML (second
and first order) on Omniglot 5w1s / 5w5s / 20w1s / 20w5s (Vinyals split, test classes) and 5-way
1/5-shot on the reduced mini-ImageNet (trained on its 64 train classes, scored on its 16 val
classes: the copy has no test classes). Each cell's protocol (paper and authors' code) is data in
``reproduce_protocols.py``. Every method of a setting is scored on one fixed episode file (1000
episodes, 15 queries; ``common.test_episodes``), with paired tests between methods.

Resumable and budgeted: each model trains into ``OUT/checkpoints/<model>/`` (``last.pt``, resumed
exactly) and stops cleanly before ``--budget-minutes`` run out; results accumulate in
``OUT/results.json`` (atomic writes). Run the same command again to continue where it stopped.

    python benchmarks/reproduce.py --device cuda --budget-minutes 9      # again until all done
    python benchmarks/reproduce.py --device cuda --cells 'protonet/*' --budget-minutes 9
    python benchmarks/reproduce.py --quick          # smoke test: every cell a few steps, CPU
    python benchmarks/reproduce.py --render [--quick] [--splice BENCHMARKS.md]  # the table

Between device calls the results folder travels as one tar file (``--pack``); BENCHMARKS.md
("Reproduction table") gives the commands.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import time
from pathlib import Path

import common
import grid
import torch
from grid import CHUNK_S, next_target
from reproduce_protocols import SETTINGS, Protocol, protocols
from reproduce_render import render, run_mode

from episodes import (
    ClassDataset,
    EpisodeSampler,
    FixedEpisodes,
    ImagePipeline,
    TensorClassDataset,
    mini_imagenet,
    omniglot,
)
from fewshot import TrainConfig, build_learner, make_spec, train
from fewshot.engine.evaluate import EvalResult, evaluate
from fewshot.engine.train import TrainResult

OUT = Path(__file__).parent / "out"
# --quick: every cell through the same code path, with less work per cell: 2 optimizer steps in two
# train() calls (the second resumes from the checkpoint of the first), 1 episode per step with at
# most 5 training queries per class, validation after each step on 2 episodes, 4 test episodes.
QUICK = {"steps": 2, "meta_batch": 1, "train_query": 5, "val_every": 1, "val_episodes": 2,
         "test_episodes": 4, "checkpoint_every": 1000}
FULL = {"val_episodes": 200, "test_episodes": 1000, "checkpoint_every": 1000}
EVAL_RESERVE_S = 60.0  # budget kept back for scoring and saving, full runs
PACK_FILE_MB = 15  # --pack: a file that comes back from a device call is at most 16 MiB


SYNTHETIC = {"omniglot": (1, 28, {"train": 60, "val": 20, "test": 20}),
             "mini": (3, 84, {"train": 30, "val": 5})}  # --synthetic: channels, size, classes


def load_split(dataset: str, split: str, args: argparse.Namespace) -> ClassDataset:
    """One class split of ``dataset`` ("omniglot" or "mini") on ``args.device``; with
    ``--synthetic`` random images of its shape (20 per class: every cell's shots and queries)."""
    if args.synthetic:
        channels, size, classes = SYNTHETIC[dataset]
        g = torch.Generator().manual_seed(len(split) + 10 * channels)
        n = classes[split]
        images = torch.randint(0, 256, (n * 20, channels, size, size), generator=g,
                               dtype=torch.uint8)
        names = [f"{dataset}-{split}-{i}" for i in range(n)]
        return TensorClassDataset(images, torch.arange(n).repeat_interleave(20), names,
                                  ImagePipeline(channels, size)).to(args.device)
    if dataset == "omniglot":
        root = args.omniglot_root or common.omniglot_root()
        return omniglot(root, split).to(args.device)
    return mini_imagenet(args.mini_root, split).to(args.device)


def splits_of(dataset: str) -> dict[str, str]:
    """role -> class split: mini-ImageNet's val classes are its test set (the copy has no test)."""
    return ({"train": "train", "val": "val", "test": "test"} if dataset == "omniglot"
            else {"train": "train", "val": None, "test": "val"})


def settings_for(p: Protocol, args: argparse.Namespace) -> dict:
    """The protocol's training settings, reduced with --quick (and --steps). ``chunk``: steps per
    train() call (each call after the first resumes from ``last.pt``; --quick: two calls)."""
    s = {"steps": p.steps, "meta_batch": p.meta_batch, "query": p.train_query,
         "val_every": p.val_every, "patience": p.patience}
    if args.quick:
        s.update(steps=QUICK["steps"], meta_batch=min(p.meta_batch, QUICK["meta_batch"]),
                 query=min(p.train_query, QUICK["train_query"]),
                 val_every=QUICK["val_every"] if p.val_every else 0, patience=0)
    if args.steps is not None:
        s["steps"] = args.steps
    s["chunk"] = -(-s["steps"] // 2) if args.quick else None  # quick: two calls; else adaptive
    return s


def train_model(p: Protocol, data: dict, rec: dict, args: argparse.Namespace) -> bool:
    """Train (or continue) the model of ``p`` within the budget; True once it is finished."""
    ckdir = grid.checkpoints(args.out_dir, p.model_key)
    if rec.get("steps") and not (ckdir / "last.pt").is_file():
        print(f"  {p.model_key}: its checkpoint is missing (not carried back?): training restarts "
              f"from step 0", flush=True)
        rec.clear()
    if rec.get("status") == "done" and not grid.reopened(rec, args.curve):
        return True
    s, pipe = settings_for(p, args), data["train"].pipeline  # Omniglot 1 x 28, mini 3 x 84
    spec = make_spec(p.learner, "conv4", pipe.channels, pipe.size, p.options)
    torch.manual_seed(0)
    learner = build_learner(spec)
    sampler = EpisodeSampler(data["train"], p.train_way, p.train_shot, s["query"],
                             episodes_per_batch=s["meta_batch"], seed=0, device=args.device)
    val = None
    if s["val_every"] and data.get("val") is not None:
        val = (data["val"], FixedEpisodes.generate(data["val"], p.val_way or SETTINGS[p.setting].way,
                                                   p.train_shot, 15, args.p["val_episodes"], seed=1))
    rec["episodes"] = f"{p.train_way}w{p.train_shot}s{s['query']}q x {s['meta_batch']}"
    chunk_s = min(CHUNK_S, 60 * args.curve.every) if args.curve.every else CHUNK_S

    def plan(done: int, left: float, per_step: float | None) -> int:
        return next_target(s, done, rec.get("best_step", 0), left, per_step, chunk_s)

    def after_chunk(res: TrainResult) -> None:
        """Best validation step, how the model stopped, its time-to-accuracy curve."""
        vals = [(h["val_acc"], -h["step"]) for h in res.history if "val_acc" in h]
        best_step = -max(vals)[1] if vals else res.steps
        rec.update(best_val=res.best_val, best_step=best_step, select=p.select if val else "last")
        if res.steps >= s["steps"]:
            rec["stopped"] = f"{res.steps} steps"
        elif s["patience"] and res.steps - best_step >= s["patience"]:
            rec.update(status="done", stopped=f"early stop at {res.steps} (best val at {best_step})")
        cells = [c for c in protocols().values() if c.model_key == p.model_key]
        grid.time_to_accuracy(rec, p.model_key, args.curve, {c.setting: c.published for c in cells},
                              lambda n: {c.setting: score(c, data, rec, args, n).mean for c in cells})

    cfg = TrainConfig(steps=s["steps"], lr=p.lr, lr_decay_every=p.lr_halve_every,
                      val_every=s["val_every"] if val else 0, checkpoint_dir=str(ckdir),
                      checkpoint_every=args.p["checkpoint_every"], precision=args.precision)
    return grid.train_or_resume(rec, p.model_key, learner, spec, sampler, cfg, args.budget,
                                args.env, device=args.device, val=val, plan=plan,
                                after_chunk=after_chunk, save=lambda: save(args),
                                chunk_seconds=60 * args.curve.every if args.curve.every else None,
                                train_fn=train)


def score(p: Protocol, data: dict, model: dict, args: argparse.Namespace,
          count: int | None = None) -> EvalResult:
    """Score the model on the setting's shared fixed test episodes (the first ``count`` of
    them, if given)."""
    st = SETTINGS[p.setting]
    name = ("synthetic-" if args.synthetic else "") + (
        "omniglot-test" if st.dataset == "omniglot" else "mini-val")
    episodes = grid.fixed_episodes(data["test"], st.way, st.shot, st.query,
                                   args.p["test_episodes"], name, count)
    learner = grid.load_model(args.out_dir, p.model_key, args.device, model["select"] == "best")
    return evaluate(learner, episodes, data["test"], batch_size=args.eval_batch,
                    device=args.device)


def save(args: argparse.Namespace) -> None:
    """Write the results JSON atomically (a killed run keeps the previous file)."""
    grid.save_results(args.results, args.results_path)


def run(args: argparse.Namespace) -> None:
    """Train and score the selected cells, setting by setting, until done or out of budget."""
    cells = [p for n, p in protocols().items()
             if any(fnmatch.fnmatch(n, pat) for pat in args.cells.split(","))]
    if not cells:
        raise SystemExit(f"--cells {args.cells!r} selects no cell of {list(protocols())}")
    results = args.results
    loaded: dict[str, dict] = {}
    for p in cells:
        cell, model = results["cells"].get(p.name, {}), results["models"].get(p.model_key, {})
        if cell.get("status") == "done":
            stale = cell.get("train_steps") != model.get("steps")  # another cell trained it on
            if not (stale or grid.capped_below(model, args.curve)):
                continue
            del results["cells"][p.name]  # trained on under a larger cap, then scored again
        if args.budget.left() <= 0:
            break
        ds = SETTINGS[p.setting].dataset
        if ds not in loaded:  # each dataset's splits are read once and shared by its cells
            t = time.monotonic()
            loaded = {ds: {role: load_split(ds, split, args) if split else None
                           for role, split in splits_of(ds).items()}}
            print(f"== {ds}: splits read in {time.monotonic() - t:.0f} s", flush=True)
        print(f"== {p.name}", flush=True)
        model = results["models"].setdefault(p.model_key, {})
        t = time.monotonic()
        if not train_model(p, loaded[ds], model, args):
            print(f"  {p.name}: training continues in the next call", flush=True)
            break
        t_train, t = time.monotonic() - t, time.monotonic()
        r = score(p, loaded[ds], model, args)
        results["cells"][p.name] = {
            "status": "done", "setting": p.setting, "model": p.model_key, "mode": results["mode"],
            **grid.scores(r), "query": r.q_query, "train_steps": model["steps"],
            "train_seconds": model["seconds"], "score_seconds": round(time.monotonic() - t, 1),
            "stopped": model.get("stopped"), **common.peak_memory(args.device), **args.env}
        print(f"  {p.name}: {t_train:.0f} s training call(s) with validation and checkpoints, "
              f"{time.monotonic() - t:.0f} s scoring", flush=True)
        results["paired"][p.setting] = grid.pairs_within(
            {n: c for n, c in results["cells"].items() if c["setting"] == p.setting})
        if args.prune and all(c.name in results["cells"] for c in protocols().values()
                              if c.model_key == p.model_key):
            shutil.rmtree(grid.checkpoints(args.out_dir, p.model_key), ignore_errors=True)
            model["pruned"] = True
        print(f"  {p.name}: {r} (published {p.published})", flush=True)
        save(args)
    done = sum(results["cells"].get(p.name, {}).get("status") == "done" for p in cells)
    print(f"{done} of {len(cells)} selected cells scored"
          + ("" if done == len(cells) else ": run the same command again to continue"), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", default="*", help="comma-separated names or patterns, e.g. "
                    "'protonet/*,*/mini-5w1s' (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the real run)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="stop cleanly before this many minutes (resume with the same command)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: every cell {QUICK['steps']} steps, meta-batch <= "
                         f"{QUICK['meta_batch']}, {QUICK['test_episodes']} test episodes, 1 thread")
    ap.add_argument("--steps", type=int, default=None, help="override every cell's steps")
    ap.add_argument("--test-episodes", type=int, default=None)
    ap.add_argument("--eval-batch", type=int, default=None,
                    help="test episodes per pass (default: as many as fit, fewshot.engine.memory)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                    help="training precision (default fp32, as the papers; a model resumes in "
                         "the precision it started with)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="results.json and checkpoints (default benchmarks/out/reproduce[-quick])")
    ap.add_argument("--omniglot-root", type=Path, default=None,
                    help="Omniglot PNG layout (default: $OMNIGLOT_ROOT, else written once from "
                         "shared/data/omniglot, see benchmarks/common.py)")
    ap.add_argument("--mini-root", type=Path, default=common.SHARED / "miniimagenet",
                    help=f"mini-ImageNet folder (default {common.SHARED / 'miniimagenet'})")
    ap.add_argument("--prune", action="store_true",
                    help="delete a model's checkpoints once all its cells are scored (keeps the "
                         "folder carried between GPU calls small)")
    ap.add_argument("--pack", type=Path, default=None, metavar="TAR",
                    help="after the run, write the results folder to TAR (files over "
                         f"{PACK_FILE_MB} MiB left out) to carry it to the next call")
    ap.add_argument("--curve-minutes", type=float, default=None, metavar="M",
                    help="time to accuracy: score each model on its cells' first --curve-episodes "
                         "test episodes after every M minutes of training (recorded as its curve)")
    ap.add_argument("--curve-episodes", type=int, default=200)
    ap.add_argument("--cap-minutes", type=float, default=None, metavar="C",
                    help="a model is finished after C minutes of training (a later call with a "
                         "larger C continues it)")
    ap.add_argument("--until-published", action="store_true",
                    help="with --curve-minutes: a model is finished once a curve point reaches the "
                         "published accuracy of every cell it serves")
    ap.add_argument("--reserve-seconds", type=float, default=None,
                    help=f"budget kept back for scoring and saving (default {EVAL_RESERVE_S:g}; "
                         "0 with --quick)")
    ap.add_argument("--synthetic", action="store_true",
                    help="random images of each dataset's shape instead of the data: a smoke "
                         "test of the code path that needs no dataset")
    ap.add_argument("--render", action="store_true", help="print the Markdown table and exit")
    ap.add_argument("--splice", type=Path, default=None, metavar="MD",
                    help="with --render: write the table (and the README's summary grid) into MD "
                    "between its markers instead")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir or OUT / ("reproduce-quick" if args.quick else "reproduce")
    args.results_path = args.out_dir / "results.json"
    results = grid.load_results(args.results_path)
    if args.render:
        render(results, args)
        return
    mode = run_mode(args)
    args.results = grid.check_mode(results or grid.empty_results(mode), mode, args.results_path)
    args.curve = grid.Curve(args.curve_minutes, args.curve_episodes, args.cap_minutes,
                            args.until_published)
    if args.quick or args.threads:
        torch.set_num_threads(args.threads or 1)
    args.p = dict(QUICK if args.quick else FULL)
    if args.test_episodes:
        args.p["test_episodes"] = args.test_episodes
    args.budget = grid.Budget.of_minutes(
        args.budget_minutes, args.reserve_seconds if args.reserve_seconds is not None
        else 0.0 if args.quick else EVAL_RESERVE_S)
    args.env = common.environment(torch.device(args.device))
    run(args)
    wall = args.budget.wall()
    grid.record_call(args.results, args.env, wall, **common.peak_memory(args.device))
    save(args)
    print(f"wall {wall:.0f} s; results in {args.results_path}", flush=True)
    if args.pack:
        common.pack_folder(args.out_dir, args.pack, PACK_FILE_MB)


if __name__ == "__main__":
    main()
