"""ProtoNet (Conv-4) on Omniglot, Vinyals split: accuracy, time-to-accuracy and training throughput.

Full protocol (GPU): python benchmarks/protonet_omniglot.py --device cuda
Reduced CPU run:     python benchmarks/protonet_omniglot.py --quick

Accuracy: Snell et al. 2017's protocol: 60-way episodes with 5 queries per class and the test shot
(1 or 5), Adam 1e-3 halved every 2000 episodes, one episode per step; the model with the best 5-way
accuracy on fixed validation episodes is kept, then scored 5/20-way on 1000 fixed test episodes
(15 queries per class). Published: 98.8 / 99.7 (5-way 1/5-shot), 96.0 / 98.9 (20-way 1/5-shot).

Throughput: episodes/s of a plain loop (one episode per step, a Python loop over classes to build
it, as most code does) against the library's sampler and loop with T episodes per step, in one run.
"""

from __future__ import annotations

import argparse
import random
import tempfile

import torch
import torch.nn.functional as F
from common import environment, median_step_time, omniglot_splits, test_episodes, write_json

from episodes import EpisodeSampler, FixedEpisodes
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.cli.data import pick_device


def plain_loop(images_by_class: list[torch.Tensor], model, opt, n: int, k: int, q: int):
    """One step of a plain ProtoNet loop: one episode, built class by class."""
    def step() -> None:
        xs = []
        for c in random.sample(range(len(images_by_class)), n):
            imgs = images_by_class[c]
            xs.append(imgs[torch.randperm(len(imgs), device=imgs.device)[:k + q]])
        x = torch.stack(xs).float() / 255  # [n, k+q, C, H, W]
        emb = model(torch.cat([x[:, :k].flatten(0, 1), x[:, k:].flatten(0, 1)]))
        protos = emb[:n * k].view(n, k, -1).mean(1)
        logits = -torch.cdist(emb[n * k:], protos).pow(2)
        loss = F.cross_entropy(logits, torch.arange(n, device=x.device).repeat_interleave(q))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def library_step(ds, n: int, k: int, q: int, t: int, device):
    spec = ModelSpec("protonet", "conv4", 1, 28)
    learner = build_learner(spec).to(device)
    sampler = EpisodeSampler(ds, n, k, q, episodes_per_batch=t, seed=0)
    opt = torch.optim.Adam(learner.parameters(), 1e-3)

    def step() -> None:  # the body of fewshot.engine.train.train's loop
        ep = sampler.sample()
        loss = learner.loss(learner(ep.support_x, ep.support_y, ep.query_x, n), ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def throughput(ds, device, batches: list[int], iters: int) -> list[dict]:
    rows = []
    by_class = [ds.images[ds.targets.to(ds.device) == c] for c in range(ds.num_classes)]
    for n, k, q in ((5, 1, 15), (60, 5, 5)):
        model = build_learner(ModelSpec("protonet", "conv4", 1, 28)).backbone.to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        sec = median_step_time(plain_loop(by_class, model, opt, n, k, q), device, iters=iters)
        rows.append({"episode": f"{n}w{k}s{q}q", "loop": "plain, 1 episode/step",
                     "episodes_per_s": 1 / sec})
        for t in batches:
            sec = median_step_time(library_step(ds, n, k, q, t, device), device, iters=iters)
            rows.append({"episode": f"{n}w{k}s{q}q", "loop": f"fewshot, {t} episodes/step",
                         "episodes_per_s": t / sec})
        for r in rows[-1 - len(batches):]:
            print(f"  {r['episode']:>10}  {r['loop']:<26} {r['episodes_per_s']:8.1f} episodes/s")
    return rows


def train_and_score(splits, device, shot: int, args, budgets: list[float]) -> dict:
    """Train one model (60-way ``shot``-shot), scoring 5-way after each time budget."""
    torch.manual_seed(0)
    spec = ModelSpec("protonet", "conv4", 1, 28)
    learner = build_learner(spec)
    sampler = EpisodeSampler(splits["train"], args.train_way, shot, 5, args.episodes_per_step,
                             seed=shot)
    val = (splits["val"], FixedEpisodes.generate(splits["val"], 5, shot, 15, args.val_episodes, 1))
    tests = {n: test_episodes(splits["test"], n, shot, 15, args.test_episodes, "omniglot-test")
             for n in (5, 20)}
    curve = []
    with tempfile.TemporaryDirectory() as ckdir:
        for budget in budgets:
            cfg = TrainConfig(steps=args.steps, lr=1e-3, lr_decay_every=2000 // args.episodes_per_step,
                              val_every=args.val_every, checkpoint_dir=ckdir, checkpoint_every=10**9,
                              resume=True, time_limit=budget, progress=False)
            res = train(learner, spec, sampler, cfg, val=val, device=device)
            acc = evaluate(learner, tests[5], splits["test"], device=device)
            curve.append({"seconds": res.seconds, "episodes": res.episodes, "test_5way": acc.mean,
                          "ci95": acc.ci95})
            print(f"  {shot}-shot model after {res.seconds:6.1f} s ({res.episodes} episodes): {acc}")
        best = torch.load(f"{ckdir}/best.pt", weights_only=True)
        learner.load_state_dict(best["model"])
    final = {}
    for n, eps in tests.items():
        r = evaluate(learner, eps, splits["test"], device=device)
        final[f"{n}way"] = {"mean": r.mean, "ci95": r.ci95, "episodes": len(eps)}
        print(f"  best-val model, {r}")
    return {"shot": shot, "train_seconds": res.seconds, "train_episodes": res.episodes,
            "curve": curve, "test": final}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="reduced CPU run (fewer episodes)")
    p.add_argument("--train-way", type=int, default=60)
    p.add_argument("--episodes-per-step", type=int, default=1)
    p.add_argument("--steps", type=int, default=20000, help="max optimizer steps per model")
    p.add_argument("--budgets", type=float, nargs="+", default=[15, 30, 60, 120, 300],
                   help="seconds of training after which 5-way accuracy is measured")
    p.add_argument("--val-episodes", type=int, default=200)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--test-episodes", type=int, default=1000)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="test shots to train for")
    p.add_argument("--out", default="benchmarks/out/protonet_omniglot.json")
    if p.parse_known_args()[0].quick:  # smaller defaults; flags given explicitly still win
        p.set_defaults(train_way=20, budgets=[60, 180], val_episodes=100, val_every=100,
                       test_episodes=300, batches=[1, 8])
    args = p.parse_args()
    device = pick_device(args.device)
    env = environment(device)
    print(env)
    splits = omniglot_splits(device)
    rows = []
    if not args.skip_throughput:
        print("throughput (median of timed steps):")
        rows = throughput(splits["train"], device, args.batches, iters=10 if args.quick else 50)
    results = [] if args.skip_accuracy else [train_and_score(splits, device, s, args, args.budgets)
                                             for s in args.shots]
    write_json({"env": env, "args": vars(args), "throughput": rows, "accuracy": results}, args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
