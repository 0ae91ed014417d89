"""The ``fewshot`` command: demo, train, pretrain, eval, predict.

Every command calls the library; there is one training loop and one evaluation. Every user error
ends the command with one line on stderr naming the input and the fix, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from episodes import ImageFileError
from episodes.progress import set_progress

from .. import distributed
from ..precision import CHOICES
from ..runs import RunError, legacy_args, read_run
from . import commands, transfer
from . import ssl as ssl_cli
from .args import (
    MAX_MEMORY_HELP,
    Parser,
    add_data_args,
    device,
    episodes_per_step,
    fail,
    memory_size,
    option,
    os_error_text,
    pick_device,
    positive_float,
    positive_int,
    way,
)
from .groups import add_augment_args, add_backbone_args, add_optimization_args, add_run_args, add_val_args

DISTRIBUTED = ("train", "pretrain", "eval")  # commands that run under torchrun
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, KeyError,
               ImageFileError, RunError)


def add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--method", default="protonet", help="learner: protonet, matching, relation or "
                   "maml")
    add_backbone_args(g)
    g.add_argument("--option", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable (e.g. distance=cosine; MAML: inner_steps=5, "
                   "first_order=true, eval_inner_steps=N (default: the paper's test-time steps, "
                   "max(3, 2 x inner_steps)); Meta-Baseline: distance=cosine, learn_scale=true "
                   "with --init; the README lists each method's options)")
    g = p.add_argument_group("episodes")
    g.add_argument("--way", type=way, default=5, help="classes per training episode")
    g.add_argument("--shot", type=positive_int, default=1, help="support images per class")
    g.add_argument("--query", type=positive_int, default=15, help="query images per class")
    g.add_argument("--episodes-per-step", type=episodes_per_step, default="auto",
                   help="episodes batched into each optimizer step; auto: 1 on a CPU, on a GPU "
                   "as many as keep it busy and fit --max-memory (steps that do not fit are "
                   "split into chunks with the same result)")
    add_augment_args(g, sets=True)
    add_val_args(p, "--way", "--shot")
    add_optimization_args(p, steps=2000, lr=1e-3, optimizer="adam")
    add_run_args(p, "runs/train")


def build_parser() -> Parser:
    parser = Parser(prog="fewshot", description="Few-shot learning: meta-train a learner on a "
                    "dataset's train classes, score it on fixed episodes of held-out classes, "
                    "and label new images from a few labelled ones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)

    p = sub.add_parser("demo", help="train ProtoNet on the embedded dataset and score it on "
                       "held-out classes (a few minutes on a laptop CPU)")
    p.add_argument("--seconds", type=positive_float, default=100, help="training time")
    p.add_argument("--episodes", type=positive_int, default=600, help="test episodes")
    p.add_argument("--out", default="runs/demo", help="run folder (an earlier demo's run there is "
                   "replaced; another run is refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--precision", choices=CHOICES, default="auto",
                   help="fp32, bf16 or auto (bf16 on a CPU with bfloat16 units, else fp32)")
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=commands.cmd_demo)

    p = sub.add_parser("train", help="meta-train a learner on a dataset's train classes")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=commands.cmd_train)
    parser.subcommands["train"] = p

    p = sub.add_parser("pretrain", help="pre-train a backbone with a classifier over all train "
                       "classes on ordinary mini-batches, or self-supervised on their images "
                       "alone (then: fewshot eval --head, or fewshot train --init)")
    add_data_args(p)
    transfer.add_pretrain_args(p)
    p.set_defaults(func=transfer.cmd_pretrain)
    parser.subcommands["pretrain"] = p

    p = sub.add_parser("eval", help="score a checkpoint on fixed episodes (mean, 95%% interval)")
    add_data_args(p)
    p.add_argument("--checkpoint", help="a checkpoint (best.pt or last.pt)")
    transfer.add_head_args(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="class split to score on")
    p.add_argument("--way", type=positive_int, default=5, help="classes per episode")
    p.add_argument("--shot", type=positive_int, default=1, help="support images per class")
    p.add_argument("--query", type=positive_int, default=15, help="query images per class")
    p.add_argument("--episodes", type=positive_int, default=600, help="fixed episodes")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed episodes")
    p.add_argument("--episodes-file", help="load the fixed episodes from this file, or save them "
                   "there if it does not exist, so every model is scored on the same episodes")
    p.add_argument("--batch-size", type=positive_int, help="episodes per pass (default: as many "
                   "as fit --max-memory)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--json", help="write per-episode accuracies, mean and interval here")
    p.set_defaults(func=commands.cmd_eval)

    p = sub.add_parser("plot-embeddings", help="a 2-D projection (PCA or t-SNE) of a "
                       "checkpoint's backbone features of a split's images, coloured by class")
    add_data_args(p)
    ssl_cli.add_plot_args(p)
    p.set_defaults(func=ssl_cli.cmd_plot_embeddings)

    p = sub.add_parser("predict", help="label query images from a few labelled support images")
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint")
    p.add_argument("--support", required=True, help="folder of class folders of support images")
    p.add_argument("--query", required=True, help="folder of images to label")
    p.add_argument("--output", help="write the predictions to this file (default: print them)")
    p.add_argument("--pipeline", metavar="SETTINGS", help="how to read the image files, for a "
                   "checkpoint that does not record it (e.g. channels=1,size=28,resample=area,"
                   "invert=true); checkpoints written by fewshot train record it")
    p.add_argument("--format", choices=commands.FORMATS, default="tsv", help="output format")
    p.add_argument("--batch-size", type=positive_int, help="query images per pass (default: as "
                   "many as fit --max-memory)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--no-convert", action="store_true",
                   help="refuse images whose channels differ from the model's")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or non-image files (with a warning) instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=commands.cmd_predict)
    return parser


NOT_REPLAYED = ("out", "overwrite", "resume", "config")  # where and how to write: said anew


def replay_defaults(parser: Parser, argv: list[str]) -> None:
    """For ``train --config RUN_JSON``: make the recorded settings the train command's defaults,
    so the run is replayed and arguments given on the command line override them.

    Where the replay writes is never taken from the file: ``--out`` must be given on the command
    line, and ``--overwrite``/``--resume`` apply only when given there. Every recorded value is
    checked as the flag's own value would be."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config")
    probe.add_argument("--out")
    known, _ = probe.parse_known_args(argv[1:])
    if not argv or argv[0] not in ("train", "pretrain") or not known.config:
        return
    record = read_run(known.config)
    if record.get("command", "train") != argv[0]:
        raise RunError(f"{known.config} is the record of a fewshot {record['command']} run: "
                       f"replay it with fewshot {record['command']} --config")
    if known.out is None:
        raise RunError(f"--config {known.config} replays a run's settings but not its folder: "
                       f"give --out (a new folder, or the run's own with --resume to continue it)")
    recorded = legacy_args(record["args"])
    spec = record.get("spec") or {}
    recorded["option"] = [(k, str(v)) for k, v in (spec.get("options") or {}).items()]
    recorded["augment_option"] = [(k, ",".join(map(str, v)) if isinstance(v, list | tuple)
                                   else str(v)) for k, v in recorded.get("augment_option", {}).items()]
    for flag in ("method", "backbone"):
        if flag in spec and argv[0] == "train":
            recorded[flag] = spec[flag]
    command = parser.subcommands[argv[0]]
    actions = {a.dest: a for a in command._actions}  # noqa: SLF001 - argparse has no public list
    replayed = {k: v for k, v in recorded.items() if k in actions and k not in NOT_REPLAYED}
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    for key, value in replayed.items():
        if not given & set(actions[key].option_strings):  # a flag given overrides the record
            check_recorded(known.config, actions[key], value)
    command.set_defaults(**replayed)


def check_recorded(path: str, action: argparse.Action, value: object) -> None:
    """Raise :class:`RunError` unless ``value``, recorded for ``action`` in ``path``, passes the
    checks the flag's own value gets (its type and choices)."""
    flag = action.option_strings[0] if action.option_strings else action.dest
    values = value if isinstance(value, list) and action.nargs not in (None, "?") else [value]
    for v in values:
        if v is None or isinstance(v, bool) or isinstance(v, list | tuple):
            continue
        try:
            if action.type is not None and callable(action.type):
                action.type(str(v))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise RunError(f"--config {path}: its {flag} {v!r} is refused ({e}): correct it in "
                           f"the file or give {flag} on the command line") from None
        if action.choices is not None and v not in action.choices:
            raise RunError(f"--config {path}: its {flag} {v!r} is not one of "
                           f"{', '.join(map(str, action.choices))}: correct it in the file or "
                           f"give {flag} on the command line")


def one_line_warning(message: Warning | str, category: type[Warning], *args: object,
                     **kwargs: object) -> str:
    """Warnings as ``warning: message`` lines (not Python's file, line and source)."""
    return f"warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = one_line_warning
    parser = build_parser()
    args = None
    try:
        replay_defaults(parser, argv)
        args = parser.parse_args(argv)
        set_progress(not getattr(args, "quiet", False) and distributed.launched().main)
        if args.command in DISTRIBUTED and distributed.launched().active:
            distributed.init(pick_device(args.device),
                             getattr(args, "dist_timeout", distributed.DEFAULT_TIMEOUT))
        args.func(args)
        distributed.shutdown()  # after a failure the process exits without waiting for peers
    except OSError as e:  # a full disk, a read-only place, a missing file: named, with the fix
        fail(os_error_text(e))
    except USER_ERRORS as e:
        fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except RuntimeError as e:
        if not distributed.lost_peers(e):
            raise
        fail(distributed.failure(e, getattr(args, "out", None)))
