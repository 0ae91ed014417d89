"""Run folders: what a training run was (``run.json``), and who may write into the folder.

``fewshot train`` writes its full configuration to ``OUT/run.json`` before it trains. ``--resume``
compares the configuration it is given with that file and refuses one that changed (naming each
change); a folder that already holds a run is refused unless the run is resumed or overwritten;
a lock file stops two trainings from writing into one folder at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from episodes.io import atomic_write_text, finite_json

from ..registry import stored_spec
from ..version import library_version
from .checkpoint import load_checkpoint
from .logs import CSV_FILE, METRICS_FILE, PREVIEW_FILES, TENSORBOARD_DIR

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
RUN_FILES = (RUN_FILE, "last.pt", "best.pt", METRICS_FILE, CSV_FILE, TENSORBOARD_DIR)
# settings that may change when a run is resumed: they do not change what the run computes
RESUMABLE = frozenset({"steps", "time_limit", "checkpoint_every", "val_every", "quiet", "device",
                       "decoder", "max_memory", "dist_timeout", "log_every", "tensorboard",
                       "cache_dir", "resume", "overwrite", "config", "out"})
# settings added after runs were first recorded, with the value every run before them had: a
# run.json without them still resumes
ADDED = {"optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "schedule": "step",
         "init": None, "freeze": []}


class RunError(ValueError):
    """A run folder that cannot be used as asked, with the fix in the message."""


def run_record(args: Mapping[str, Any], spec: Mapping[str, Any], command: str = "train"
               ) -> dict[str, Any]:
    """The run configuration written to ``run.json``: the command (``train`` or ``pretrain``),
    every setting (``args``), the model spec with its complete options, and the versions and
    machine it ran on."""
    return {"command": command, "args": dict(args), "spec": dict(spec),
            "fewshot_version": library_version(), "torch_version": str(torch.__version__),
            "python": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """A ``run.json`` (or a folder holding one), with a one-line error when it is missing or not
    a run configuration."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_FILE
    if not path.is_file():
        raise RunError(f"run configuration {path} does not exist: give the run.json a training "
                       f"wrote into its --out folder")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not a readable run configuration ({e}): give the run.json a "
                       f"training wrote") from None
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise RunError(f"{path} is not a run configuration (no 'args'): give the run.json a "
                       f"training wrote")
    return record


def changes(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``name: old -> new`` for every setting that differs, ignoring :data:`RESUMABLE` ones."""
    out = []
    saved_args = legacy_args(saved["args"])
    for key in sorted(set(saved_args) | set(wanted["args"])):
        if key in RESUMABLE:
            continue
        old, new = saved_args.get(key, ADDED.get(key)), wanted["args"].get(key)
        if old != new:
            out.append(f"--{key.replace('_', '-')}: {old!r} -> {new!r}")
    old, new = _complete(saved.get("spec") or {}), wanted.get("spec") or {}
    for key in sorted(set(old) | set(new)):
        if key == "options":
            a, b = old.get(key) or {}, new.get(key) or {}
            out += [f"--option {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif old.get(key) != new.get(key) and key not in saved["args"]:  # not said twice
            out.append(f"model {key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def legacy_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded settings with those since renamed under their new names: ``amp`` (a flag) is
    ``precision`` "bf16" or "fp32"."""
    out = dict(args)
    if "amp" in out:
        amp = out.pop("amp")
        out.setdefault("precision", "bf16" if amp else "fp32")
    return out


def _complete(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A recorded spec with the options added since it was written (:func:`~fewshot.registry.
    stored_spec`)."""
    try:
        return stored_spec(spec).to_dict()
    except (TypeError, ValueError):  # not a spec this version can read: compared as written
        return spec


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON, written atomically (:func:`episodes.io.atomic_write_text`)."""
    atomic_write_text(json.dumps(finite_json(obj), indent=1, allow_nan=False) + "\n", path)


def run_files(out: str | os.PathLike) -> list[str]:
    """The names of the files (and the ``tensorboard`` folder) of the run in ``out``: those of
    :data:`RUN_FILES` that exist, then its preview images (:data:`PREVIEW_FILES`), sorted."""
    out = Path(out)
    return ([n for n in RUN_FILES if (out / n).exists()]
            + sorted(p.name for p in out.glob(PREVIEW_FILES)))


def run_files_text(names: list[str]) -> str:
    """``names`` (:func:`run_files`) for a message, the preview images counted, not listed."""
    previews = [n for n in names if n not in RUN_FILES]
    return ", ".join([n for n in names if n in RUN_FILES]
                     + ([f"{len(previews)} {PREVIEW_FILES}"] if previews else []))


def check_folder(out: Path, what: str = "--out") -> None:
    """Raise :class:`RunError` if ``out`` exists and is not a folder."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{what} {out} is a file, not a folder: give a folder for the run")


def check_run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> list[str]:
    """Check that a training may start in ``out`` (before any work is done).

    - ``resume``: ``out/last.pt`` must exist.
    - otherwise: a folder already holding a run is refused unless ``overwrite``.

    Returns: the names of the run files already in ``out``.
    Raises: :class:`RunError` naming the fix.
    """
    out = Path(out)
    check_folder(out)
    if resume:
        if not (out / "last.pt").is_file():
            raise RunError(f"cannot resume: {out / 'last.pt'} does not exist (no run was "
                           f"checkpointed in {out}): leave out --resume to start a new run")
        return []
    existing = run_files(out)
    if existing and not overwrite:
        raise RunError(f"{out} already holds a run ({run_files_text(existing)}): continue it with "
                       f"--resume, replace it with --overwrite, or choose another --out")
    return existing


def _saved_record(out: Path) -> dict[str, Any] | None:
    """The run configuration ``out/last.pt`` recorded (None for a checkpoint written without
    one: only its training settings are known)."""
    config = load_checkpoint(out / "last.pt").get("config") or {}
    if isinstance(config.get("run"), dict):
        return config["run"]
    known = {k: v for k, v in config.items() if k in TRAIN_SETTINGS}
    return {"args": known} if known else None


TRAIN_SETTINGS = ("lr", "optimizer", "momentum", "weight_decay", "schedule", "lr_decay_every")
REPLACED = ".replaced"  # the overwritten run's files, until the new run has its first checkpoint


def prepare_run(out: str | os.PathLike, record: dict[str, Any], resume: bool, overwrite: bool
                ) -> None:
    """Check ``out`` (:func:`check_run_folder`), then: when resuming, that ``record`` equals the
    run's configuration (``out/run.json``, or the one ``last.pt`` recorded when that file is
    missing) in every setting but :data:`RESUMABLE` ones (else the error names each change);
    otherwise move the files of the run being overwritten into ``out/.replaced`` (see
    :func:`open_run`) and write ``run.json``."""
    out = Path(out)
    existing = check_run_folder(out, resume, overwrite)
    if resume:
        saved = read_run(out / RUN_FILE) if (out / RUN_FILE).is_file() else _saved_record(out)
        wanted = record
        if saved is not None and "spec" not in saved:  # only the training settings are known
            wanted = {"args": {k: v for k, v in record["args"].items() if k in saved["args"]}}
        diff = changes(saved, wanted) if saved is not None else []
        if diff:
            raise RunError(f"cannot resume {out}: the configuration changed ({'; '.join(diff)})"
                           f": resume with the run's settings (fewshot train --config "
                           f"{out / RUN_FILE} --out {out} --resume), or train into a new --out")
        if not (out / RUN_FILE).is_file():  # lost, or a run from before run.json was written
            write_json_atomic(record, out / RUN_FILE)
        return
    out.mkdir(parents=True, exist_ok=True)
    if existing:
        backup = out / REPLACED
        shutil.rmtree(backup, ignore_errors=True)  # left by an overwrite that was killed
        backup.mkdir()
        for name in existing:
            (out / name).rename(backup / name)
    write_json_atomic(record, out / RUN_FILE)


@contextlib.contextmanager
def open_run(out: str | os.PathLike, record: dict[str, Any], resume: bool, overwrite: bool
             ) -> Iterator[None]:
    """Hold ``out``'s lock (:func:`run_lock`) and prepare it (:func:`prepare_run`) while the body
    trains. If the body fails before the new run wrote its first ``last.pt``, the folder is put
    back as it was: the new ``run.json`` and logs are removed and an overwritten run's files
    come back, so a mistaken ``--overwrite`` loses nothing and a corrected rerun is not
    refused. Once the new run has a checkpoint, the overwritten files are deleted."""
    out = Path(out)
    created = not out.exists()
    try:
        with run_lock(out):
            prepare_run(out, record, resume=resume, overwrite=overwrite)
            backup = out / REPLACED
            try:
                yield
            except BaseException:
                if not resume and not (out / "last.pt").is_file():
                    for name in run_files(out):  # the new run's (the old ones are in backup)
                        if (out / name).is_dir():  # tensorboard/
                            shutil.rmtree(out / name)
                        with contextlib.suppress(FileNotFoundError):
                            (out / name).unlink()
                    if backup.is_dir():
                        for f in backup.iterdir():
                            f.rename(out / f.name)
                raise
            finally:
                shutil.rmtree(backup, ignore_errors=True)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):  # made by a failed start
            out.rmdir()


def _lock_file(fd: int) -> bool:
    """Take an exclusive lock of the open file ``fd`` without waiting; False if another process
    (or another open of the file) holds it. The operating system releases it when the holder
    exits, however it ends."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:  # BlockingIOError, PermissionError (msvcrt)
        return False


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold an operating-system lock on ``out/.lock`` (which names this process's id) while the
    body runs.

    Taking it is atomic, and a lock whose holder died is free (the OS released it), whatever
    the file says. The file is removed on release; a process that opened it just before then
    finds it replaced and tries again.

    Raises:
        RunError: another process holds the lock.
    """
    out = Path(out)
    check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    for _ in range(20):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        if not _lock_file(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(f"{out} is in use by another training (process {holder}): wait for "
                           f"it to finish, or train into another --out")
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder released and removed it meanwhile: lock the new file
    else:
        raise RunError(f"could not lock {out}: too many processes are starting there at once")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)
