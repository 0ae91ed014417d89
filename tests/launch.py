"""Starting ``torchrun`` from a test so that its ranks never outlive the test.

torchrun starts every rank in a session of its own, so killing the launcher's process group
leaves the ranks running. :func:`torchrun` therefore asks the kernel to send the launcher
SIGTERM when the process that started it dies (Linux ``PR_SET_PDEATHSIG``, whatever killed the
test), and torchrun's answer to SIGTERM is to stop its ranks; :func:`stop` stops a launcher
and its ranks from a test's ``finally``. Runs also get a ``--time-limit``, the last bound.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
TIME_LIMIT = "120"  # seconds a test's run trains at most, even orphaned


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def torchrun(args: list[str], out: Path) -> subprocess.Popen:
    """``fewshot train`` of a small ProtoNet on two CPU ranks writing to ``out`` (``args``
    added), dying with the calling process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--monitor-interval", "0.5", "-m", "fewshot.cli", "train", "--device", "cpu",
         "--method", "protonet", "--option", "hidden=8", "--episodes-per-step", "2",
         "--val-episodes", "0", "--checkpoint-every", "2", "--quiet", "--dist-timeout", "30",
         "--time-limit", TIME_LIMIT, "--out", str(out), *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_parent)


def worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun (``launcher``) started."""
    pids = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                pids[int(rank[0][5:])] = int(pid)
    return pids


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def stop(launcher: int, workers: list[int], wait: float = 30.0) -> None:
    """SIGTERM to ``launcher`` (torchrun stops its ranks), then SIGKILL to whichever of it and
    ``workers`` is still alive after ``wait`` seconds."""
    if alive(launcher):
        os.kill(launcher, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while any(alive(p) for p in [launcher, *workers]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in [launcher, *workers]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
