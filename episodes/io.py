"""Small file helpers: writes that are never left half done."""

from __future__ import annotations

import errno
import glob
import hashlib
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

LOW_SPACE = 64 * 2**20  # bytes: a failed write with less free space than this was a full disk
STALE_SECONDS = 6 * 3600  # a temporary file this old is an orphan, whoever wrote it
TEMPORARY = re.compile(r"(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.)?[A-Za-z0-9_]+\.tmp")


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes of ``path`` left beside it.

    A temporary file ``.<name>.<pid>-<host>.<random>.tmp`` is stale when its writer (on this
    host) is no longer running, or when it is older than ``STALE_SECONDS``; files of other
    targets and of writes still running are left alone. Returns the files deleted.
    """
    path = Path(path)
    prefix, removed, now = f".{path.name}.", [], time.time()
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        m = TEMPORARY.fullmatch(tmp.name[len(prefix):])
        if m is None:  # the temporary file of another target (".<name>.bak.<...>.tmp")
            continue
        try:
            dead = m["host"] == _host_tag() and not process_running(int(m["pid"]))
            if dead or now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # removed meanwhile by another cleaner
            pass
    return removed


def current_umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A run killed mid-write leaves the previous file intact, never a truncated one; the temporary
    files such runs left are deleted by the next write of ``path``
    (:func:`remove_stale_temporaries`); a write that fails leaves nothing behind. The file gets
    the mode a plain ``open`` would give it (0666 less the umask), not the temporary file's
    owner-only 0600, so a run folder on a shared disk can be read by those it is shared with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_host_tag()}.",
                               suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`_atomic_write`). A failed write (torch
    reports a full disk as a ``RuntimeError`` of its zip writer) raises ``OSError`` naming
    ``path``, with ``ENOSPC`` when the disk has (almost) no space left; the previous file is
    kept."""
    try:
        _atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as e:
        free = shutil.disk_usage(Path(path).parent).free if Path(path).parent.is_dir() else 0
        full = free < LOW_SPACE
        raise OSError(errno.ENOSPC if full else errno.EIO, "No space left on device" if full else
                      f"write failed ({str(e).strip().splitlines()[0]})", str(path)) from e


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """``text`` (UTF-8) to ``path`` atomically (:func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file ``path`` (hex), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, infinity) replaced by None, so that the JSON
    written is strict (``NaN`` is not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def default_cache_dir() -> Path:
    """``$FEWSHOT_CACHE`` if set, else ``$XDG_CACHE_HOME/fewshot`` or ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_CACHE"):
        return Path(os.environ["FEWSHOT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fewshot"

