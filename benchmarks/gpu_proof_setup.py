"""Set-up of ``gpu_proof.py``: :func:`prepare` puts what a device call needs into the checkout's
git-ignored ``shared/`` (here, once); on the GPU machine :func:`install_wheels` puts the peers on
the children's path and :func:`warm_data` fills the Omniglot cache in the background; and
:func:`commit` says which code ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import common

CARRY_LIMIT_MB = 64  # what a device call takes along: the checkout's files and shared/


def commit() -> str:
    """The checkout's commit (``+ changes`` when the tree differs from it); on a machine without
    git, what ``--prepare`` wrote into ``shared/gpu-proof-commit.txt``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=common.CHECKOUT, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=common.CHECKOUT).stdout.strip()
        return head + (" + changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        saved = common.CHECKOUT / "shared" / "gpu-proof-commit.txt"
        return (saved.read_text().strip() + " (as prepared)") if saved.is_file() else "unknown"


def warm_data(run) -> subprocess.Popen | None:
    """Omniglot's layout and decoded splits written into the cache in the background (part 3
    and 4 read them), while part 1 runs."""
    if run.args.smoke:
        return None
    code = "import common, torch; common.omniglot_splits(torch.device('cpu'))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=run.log, stderr=subprocess.STDOUT,
                            env=run.env, cwd=Path(__file__).parent, start_new_session=True)


def install_wheels(run, wheels: Path) -> None:
    """The peers' wheels into a folder of the work dir, put on the children's path."""
    site = run.work / "site"
    files = sorted(str(w) for w in wheels.glob("*.whl"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                          "--no-compile", "--upgrade", "--target", str(site), *files],
                         capture_output=True, text=True)
    run.result["wheels"] = {"files": [Path(f).name for f in files], "rc": res.returncode,
                            "error": res.stderr.strip()[-500:] or None}
    run.env["PYTHONPATH"] = os.pathsep.join([str(site), run.env["PYTHONPATH"]])


def prepare(wheels: list[str]) -> None:
    """Copy the data (``../shared/data``: Omniglot and mini-ImageNet) into the checkout's
    ``shared/data``, download the peers' wheels into ``shared/wheels`` and record the commit in
    ``shared/gpu-proof-commit.txt``; then print what a device call would carry."""
    shared = common.CHECKOUT / "shared"
    source = common.CHECKOUT.parent / "shared" / "data"
    for name in ("omniglot", "miniimagenet"):
        dest = shared / "data" / name
        if not dest.is_dir():
            if not (source / name).is_dir():
                sys.exit(f"{source / name}: not found; put the data there (its README) first")
            shutil.copytree(source / name, dest)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "-d", str(shared / "wheels"), *wheels], check=True)
    (shared / "gpu-proof-commit.txt").write_text(commit() + "\n")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=common.CHECKOUT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    size = sum((common.CHECKOUT / f).stat().st_size for f in tracked if (common.CHECKOUT / f).is_file())
    size += sum(f.stat().st_size for f in shared.rglob("*") if f.is_file())
    print(f"shared/ prepared; the checkout's files and shared/ come to {size / 2**20:.1f} MiB "
          f"(a device call carries at most {CARRY_LIMIT_MB} MiB, carried folders included)")
