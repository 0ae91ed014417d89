"""A checkpoint is data, never code: a file whose unpickling would run something is refused by every
command that reads checkpoints, and nothing in it runs."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a crafted file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": "fewshot-checkpoint-v1", "spec": {"method": "protonet"},
                "model": {}, "payload": Payload(marker)}, path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewshot.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_no_unsafe_torch_load_in_the_package():
    files = [p for d in ("fewshot", "episodes", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    offenders = [f"{p}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == []


def test_load_checkpoint_refuses_and_runs_nothing(tmp_path: Path):
    from fewshot.engine.checkpoint import load_checkpoint

    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match="not loaded") as info:
        load_checkpoint(path)
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("command", ["eval", "predict", "resume"])
def test_every_command_refuses_a_crafted_checkpoint(tmp_path: Path, command: str):
    marker = tmp_path / "ran"
    if command == "resume":
        run = tmp_path / "run"
        run.mkdir()
        crafted_checkpoint(run / "last.pt", marker)
        args = ["train", "--steps", "1", "--out", str(run), "--resume", "--quiet",
                "--val-episodes", "0", "--device", "cpu"]
    else:
        path = crafted_checkpoint(tmp_path / "evil.pt", marker)
        if command == "eval":
            args = ["eval", "--checkpoint", str(path), "--episodes", "2", "--device", "cpu"]
        else:
            for d in ("support/a", "support/b", "query"):
                (tmp_path / d).mkdir(parents=True)
            args = ["predict", "--checkpoint", str(path), "--support", str(tmp_path / "support"),
                    "--query", str(tmp_path / "query"), "--device", "cpu"]
    proc = run_cli(*args)
    assert proc.returncode != 0
    assert not marker.exists()
    assert "Traceback" not in proc.stderr
    assert "not loaded" in proc.stderr and "weights_only=False" not in proc.stderr
    if command == "resume":
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt"]
