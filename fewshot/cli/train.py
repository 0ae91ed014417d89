"""``fewshot train``'s arguments: meta-train an episodic learner on a dataset's train classes (run
by the run recipe, :func:`fewshot.cli.recipe.run`). Light: no torch (:mod:`fewshot.cli.choices`)."""

from __future__ import annotations

import argparse

from .args import add_data_args, episodes_per_step, option, positive_int, way
from .catalogue import KINDS
from .choices import entries, names, summaries
from .groups import (
    add_augment_args,
    add_backbone_args,
    add_label_args,
    add_optimization_args,
    add_run_args,
    add_unlabelled_args,
    add_val_args,
)


def episodic_method(name: str) -> str:
    """An argparse type: a registered episodic method; a method of another kind is refused with
    the command that trains it, an unknown name with the episodic choices."""
    if name in names("method", "episodic"):
        return name
    if name in names("method"):
        kind = entries("method")[name][0]
        raise argparse.ArgumentTypeError(
            f"{name} is pre-trained on mini-batches, not episodes: use fewshot pretrain --method "
            f"{'supervised' if kind == 'supervised' else name}")
    raise argparse.ArgumentTypeError(f"unknown method {name!r}: choose one of "
                                     f"{', '.join(names('method', 'episodic'))}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--method", default="protonet", type=episodic_method,
                   metavar="|".join(names("method", "episodic")),
                   help=f"learner ({KINDS['episodic']}): {summaries('method', ('episodic',))}")
    add_backbone_args(g)
    g.add_argument("--option", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. distance=cosine; MAML: inner_steps=5, "
                   "first_order=true, eval_inner_steps=N (default: the paper's test-time steps, "
                   "max(3, 2 x inner_steps)); Meta-Baseline: distance=cosine, learn_scale=true "
                   "with --init; the docs list each method's options)")
    g = p.add_argument_group("episodes")
    g.add_argument("--way", type=way, default=5, help="classes per training episode")
    g.add_argument("--shot", type=positive_int, default=1, help="support images per class")
    g.add_argument("--query", type=positive_int, default=15, help="query images per class")
    g.add_argument("--episodes-per-step", type=episodes_per_step, default="auto",
                   help="episodes batched into each optimizer step; auto: 1 on a CPU, on a GPU "
                   "as many as keep it busy and fit --max-memory (steps that do not fit are "
                   "split into chunks with the same result)")
    add_augment_args(g, sets=True)
    add_label_args(p, semi=False)
    add_unlabelled_args(p, refine=False)
    add_val_args(p, "--way", "--shot")
    add_optimization_args(p, steps=2000, lr=1e-3, optimizer="adam")
    add_run_args(p, "runs/train")
