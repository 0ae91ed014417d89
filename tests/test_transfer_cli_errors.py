"""Bad input to the transfer-learning commands (fewshot pretrain, eval --head, train --init,
--freeze, backbones by name): non-zero exit status and one line naming the input and the fix,
as every row of tests/test_cli_errors.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fewshot.cli import main

from .conftest import data_args
from .test_cli_errors import TRAIN, Row, args_eval, shared_tree  # noqa: F401 (a fixture)

PRETRAIN = ["--batch-size", "4", "--steps", "2", "--val-episodes", "0", "--quiet"]


def pretrained(tree: Path) -> Path:
    """A run folder with a tiny supervised pre-training (once per test tree)."""
    run = tree / "pre"
    if not (run / "last.pt").is_file():
        main(["pretrain", *data_args(tree), *PRETRAIN, "--out", str(run)])
    return run


def other_weights(tree: Path) -> str:
    """A state dict of a 1-channel Conv-4 (not of a ResNet-12)."""
    from fewshot.models.backbones import make_backbone

    path = tree / "conv4.pth"
    torch.save(make_backbone("conv4", 1).state_dict(), path)
    return str(path)


ROWS: list[Row] = [
    ("unknown head", lambda t: args_eval(t, "--head", "svm"),
     r"argument --head: invalid choice: 'svm' \(choose from '?prototype'?, '?linear'?"),
    ("unknown head option", lambda t: args_eval(t, "--head", "logistic", "--head-option", "c=1"),
     r"unknown head logistic option\(s\) c: the options of head logistic are: C, normalize"),
    ("bad head option value", lambda t: args_eval(t, "--head", "knn", "--head-option", "k=0"),
     r"option k must be >= 1, got 0"),
    ("head option without head", lambda t: args_eval(t, "--head-option", "k=3"),
     r"--head-option needs --head"),
    ("eval without a model", lambda t: ["eval", *data_args(t), "--head", "knn"],
     r"give --checkpoint \(a fewshot checkpoint\), or --head with --backbone NAME --weights"),
    ("weights of another architecture", lambda t: ["eval", *data_args(t), "--head", "knn",
                                                   "--backbone", "resnet12", "--weights",
                                                   other_weights(t)],
     r"--weights .*conv4.pth does not fit backbone resnet12: missing blocks.0.body.0.weight"),
    ("init file missing", lambda t: ["train", *data_args(t), *TRAIN, "--init", str(t / "no.pt")],
     r"--init .*no.pt does not exist: check the path"),
    ("freeze an unknown layer", lambda t: ["train", *data_args(t), *TRAIN, "--freeze", "layer9",
                                           "--out", str(t / "frozen")],
     r"--freeze 'layer9' matches no layer of the backbone: its layers are blocks.0, blocks.1"),
    ("unknown backbone", lambda t: ["train", *data_args(t), *TRAIN, "--backbone", "resnet13",
                                    "--out", str(t / "r13")],
     r"unknown backbone 'resnet13': choose conv4, resnet12, a torchvision"),
    ("momentum 1.5", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--momentum", "1.5"],
     r"--momentum must be in \[0, 1\), got 1.5"),
    ("pretrain num_classes", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--option",
                                        "num_classes=7", "--out", str(t / "p7")],
     r"option num_classes of classifier is set from the training split's classes: leave it out"),
    ("pretrain classifier", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--option",
                                       "classifier=svm"],
     r"option classifier must be one of linear, cosine; got 'svm'"),
    ("pretrain batch too large", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--batch-size",
                                            "999", "--out", str(t / "p999")],
     r"batch size 999 must be between 1 and the 24 images of the split: lower the batch size"),
    ("pretrain method", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "simclrx"],
     r"argument --method: invalid choice: 'simclrx' \(choose from '?supervised'?, '?rotation"),
    ("ssl option", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "simclr",
                              "--option", "temperature=0"], r"temperature must be > 0, got 0"),
    ("ssl views", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "byol",
                             "--option", "views=strong"], r"views must be one of"),
    ("ssl augment", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "simclr",
                               "--augment", "standard"], r"option views=simclr\|mocov2\|byol"),
    ("ssl num_images", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method",
                                  "deepcluster", "--option", "num_images=5"],
     r"option num_images of deepcluster is set from the training split's images: leave it out"),
    ("ssl clusters", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "uic",
                                "--out", str(t / "uic")],
     r"clusters must be at most the 24 training images, got 128"),
    ("ssl queue", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "moco",
                             "--option", "queue_size=10", "--out", str(t / "moco")],
     r"queue_size 10 must be a multiple of the batch size 4"),
    ("ssl bn splits", lambda t: ["pretrain", *data_args(t), *PRETRAIN, "--method", "moco",
                                 "--option", "queue_size=16", "--out", str(t / "moco")],
     r"bn_splits 8 must divide the batch size 4: change option bn_splits or --batch-size"),
    ("ssl with train", lambda t: ["train", *data_args(t), "--method", "simclr"],
     r"simclr is pre-trained on mini-batches, not episodes: use fewshot pretrain --method simclr"),
    ("replay a pretrain run with train", lambda t: ["train", "--config",
                                                    str(pretrained(t) / "run.json")],
     r"is the record of a fewshot pretrain run: replay it with fewshot pretrain --config"),
]


@pytest.mark.parametrize("name, argv, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(shared_tree: Path, capsys, name: str,  # noqa: F811
                               argv: Callable, message: str):
    args = argv(shared_tree)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
    assert info.value.code not in (0, None), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert not list(shared_tree.rglob("*.tmp")), "a temporary file was left behind"
