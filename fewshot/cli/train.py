"""``fewshot train``: meta-train an episodic learner on a dataset's train classes (the run recipe,
:mod:`fewshot.cli.recipe`)."""

from __future__ import annotations

import argparse

from ..registry import KINDS, get_method, method_names
from . import recipe
from .args import add_data_args, episodes_per_step, option, positive_int, way
from .groups import add_augment_args, add_backbone_args, add_optimization_args, add_run_args, add_val_args
from .labels import add_label_args
from .unlabelled import add_unlabelled_args


def method_help(kinds: tuple[str, ...]) -> str:
    """``name: summary`` of every registered method of ``kinds``."""
    return "; ".join(f"{n}: {get_method(n).summary}" for k in kinds for n in method_names(k))


def episodic_method(name: str) -> str:
    """An argparse type: a registered episodic method; a method of another kind is refused with
    the command that trains it, an unknown name with the episodic choices."""
    if name in method_names("episodic"):
        return name
    if name in method_names():
        kind = get_method(name).kind
        raise argparse.ArgumentTypeError(
            f"{name} is pre-trained on mini-batches, not episodes: use fewshot pretrain --method "
            f"{'supervised' if kind == 'supervised' else name}")
    raise argparse.ArgumentTypeError(f"unknown method {name!r}: choose one of "
                                     f"{', '.join(method_names('episodic'))}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--method", default="protonet", type=episodic_method,
                   metavar="|".join(method_names("episodic")),
                   help=f"learner ({KINDS['episodic']}): {method_help(('episodic',))}")
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


def run(args: argparse.Namespace) -> None:
    recipe.run(args)
