"""Files the library writes get the mode a plain ``open`` gives under the same umask (not the
temporary file's owner-only 0600): checkpoints, run records, results, episode files, caches."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from episodes import FixedEpisodes, TensorClassDataset
from episodes.io import atomic_torch_save, atomic_write_text, current_umask
from fewshot.engine.checkpoint import save_checkpoint
from fewshot.engine.runs import write_json_atomic
from fewshot.registry import build_learner, make_spec

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def episodes_file(path: Path) -> None:
    ds = TensorClassDataset(torch.zeros(12, 1, 4, 4, dtype=torch.uint8), torch.arange(3).repeat_interleave(4),
                            ["a", "b", "c"])
    FixedEpisodes.generate(ds, 2, 1, 1, 2, seed=0).save(path)


def checkpoint(path: Path) -> None:
    spec = make_spec("protonet", "conv4", 1, 16)
    save_checkpoint(path, build_learner(spec), spec)


WRITERS: dict[str, Callable[[Path], None]] = {
    "text": lambda p: atomic_write_text("x", p),
    "torch": lambda p: atomic_torch_save({"a": 1}, p),
    "run.json": lambda p: write_json_atomic({"args": {}}, p),
    "episodes": episodes_file,
    "checkpoint": checkpoint,
}


@pytest.fixture(params=[0o022, 0o027, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
def test_mode_is_a_plain_open(tmp_path, umask, writer):
    plain = tmp_path / "plain"
    with open(plain, "w") as f:
        f.write("x")
    WRITERS[writer](tmp_path / "written")
    assert mode(tmp_path / "written") == mode(plain) == 0o666 & ~umask
    assert current_umask() == umask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
