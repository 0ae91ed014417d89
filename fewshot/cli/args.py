"""Typed command-line arguments: every value is checked when it is parsed, and every error is one
line naming the argument and the fix. Light: building a parser imports no torch (``fewshot
COMMAND --help``); what the data flags name is read by :mod:`fewshot.cli.data`."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from ..values import parse_bytes
from .choices import names, summaries
from .parser import (  # noqa: F401 - the commands' one import of them
    HelpFormatter,
    Parser,
    add_output_arg,
    add_quiet_arg,
    add_split_arg,
    fail,
    os_error_text,
    say_data_note,
)

MAX_MEMORY_HELP = ("memory one forward pass may take, e.g. 2GB (default: on a GPU half its free "
                   "memory, on a CPU 1 GiB or a quarter of the free memory); forwards are split "
                   "into chunks that fit, with the same results")
MIN_IMAGE_SIZE = 16  # four 2x2 max-pools (Conv-4, ResNet-12) need at least 16 pixels
MAX_IMAGE_SIZE = 1024  # a side; a split of such images already takes GBs


def bounded(kind: Callable[[str], float], low: float, strict: bool = False,
            high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` (int or float) >= ``low`` (or > ``low`` when
    ``strict``) and, if given, <= ``high``; ``nan`` and ``inf`` are refused."""
    need = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    noun = "a whole number" if kind is int else "a finite number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun} {need}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {noun} {need}, got {text}")
        if value < low or (strict and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {need}"
    parse.bounds = (kind, low, strict, high)  # type: ignore[attr-defined]  (for the tests)
    return parse


positive_int = bounded(int, 1)
count = bounded(int, 0)
positive_float = bounded(float, 0, strict=True)
fraction = bounded(float, 0)
image_size = bounded(int, MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE)
way = bounded(int, 2)


def memory_size(text: str) -> int:
    """An argparse type: a memory size such as ``2GB``, ``512MB`` or ``1.5GiB`` (bytes)."""
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def episodes_per_step(text: str) -> int | str:
    """An argparse type: ``auto`` or a whole number >= 1."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto or a whole number >= 1, got {text!r}"
                                         ) from None


def device(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine."""
    if text in ("auto", "cpu"):
        return text
    import torch  # here, not at the top: a parser is built, and --help answered, without torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:N or "
                                         f"auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here: use --device "
                                             f"cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has "
                                             f"{torch.cuda.device_count()} GPU(s), numbered from 0")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r}: use cpu, cuda, cuda:N or auto")
    return text


def option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair of strings; the owner's config class converts and checks the value
    (:func:`episodes.options.parse_values`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _writable(flag: str, p: Path) -> None:
    """Raise ``ValueError`` unless ``p`` (or, if it does not exist yet, the nearest folder above it
    that does) may be written."""
    target = p if p.exists() else next((q for q in p.parents if q.exists()), Path("."))
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        where = "" if target == p else f": {target} is"
        raise ValueError(f"{flag} {p}{where} is not writable (read-only place or permissions): "
                         f"give a path you can write to")


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (after resolving links, or the same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return top == real or top in real.parents


def not_an_input(flag: str, path: str | os.PathLike | None,
                 inputs: dict[str, str | os.PathLike | None],
                 folders: dict[str, str | os.PathLike | None] | None = None) -> None:
    """Raise ``ValueError`` if the output ``path`` (given as ``flag``) is one of the command's
    input files ``inputs`` (flag -> path) or lies inside one of its input ``folders``: writing
    it would destroy or change what the command reads."""
    if path is None:
        return
    for other, given in inputs.items():
        if given is not None and _same(path, given):
            raise ValueError(f"{flag} {path} is the {other} file the command reads: writing it "
                             f"would destroy it: give {flag} another file")
    for other, folder in (folders or {}).items():
        if folder is not None and Path(folder).is_dir() and _inside(path, folder):
            raise ValueError(f"{flag} {path} is inside the {other} folder {folder}, which the "
                             f"command reads: write it elsewhere")


def output_file(flag: str, path: str | None) -> None:
    """Raise ``ValueError`` unless ``path`` (given as ``flag``) can be written as a file: not a
    folder, in a folder that exists or can be made (not under a file), and writable."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a folder: give a file name")
    if p.is_symlink() and not p.exists():
        raise ValueError(f"{flag} {p} is a link to nothing ({os.readlink(p)}): give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {p}: {parent} is a file, not a folder: give another path")
            break
    _writable(flag, p)


def output_folder(flag: str, path: str | None) -> None:
    """Raise ``ValueError`` if ``path`` (given as ``flag``) or one of its parents is a file, or
    if it cannot be written."""
    if path is None:
        return
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise ValueError(f"{flag} {p} is a link to nothing ({os.readlink(p)}): give a folder")
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ValueError(f"{flag} {p}: {q} is a file, not a folder: give a folder")
            break
    _writable(flag, p)


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="embedded", choices=names("dataset"),
                   help="dataset: " + summaries("dataset"))
    g.add_argument("--root", help="dataset folder (all datasets but embedded)")
    g.add_argument("--image-size", type=image_size, help="resize images to this (default: 28 for "
                   "character datasets, 84 for natural images)")
    g.add_argument("--split-dir", help="folder dataset: folder with train.txt/val.txt/test.txt")
    g.add_argument("--split-ratios", type=fraction, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="folder dataset: split classes by these fractions (seeded by --split-seed)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the ratio split")
    g.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="folder and unlabelled datasets: 1 grayscale or 3 RGB")
    g.add_argument("--no-convert", action="store_true", help="refuse images whose channels differ "
                   "from --channels instead of converting them")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or non-image files (with a warning) instead of failing")
    g.add_argument("--download", action="store_true", help="omniglot: download the official "
                   "archives into --root if missing (the other datasets refuse it)")
    g.add_argument("--crop-boxes", action="store_true",
                   help="dogs: crop each image to its bounding box from Annotation/")
    g.add_argument("--csv-dir", help="miniimagenet: folder with Ravi's train.csv/val.csv/test.csv")
    g.add_argument("--decoder", default="auto", choices=("auto", "cuda", "threads", "processes"),
                   help="how images are decoded into the cache (auto: GPU JPEG decoding when CUDA "
                   "is present, else CPU threads)")
    g.add_argument("--cache-dir", help="where decoded datasets are cached "
                   "(default: $FEWSHOT_CACHE or ~/.cache/fewshot)")
    g.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")


