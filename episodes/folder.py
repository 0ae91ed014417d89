"""Any folder of class folders (``root/<class>/<image>``), split into train/val/test classes.

Images are decoded and resized once into a cached uint8 tensor file (see :mod:`episodes.cache`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from .cache import cached_class_dataset
from .dataset import TensorClassDataset
from .images import ImageFileError, is_image_file, warn_list
from .pipeline import ImagePipeline

SPLITS = ("train", "val", "test")
__all__ = ["SPLITS", "cached_class_dataset", "image_folder", "ratio_split", "read_split_file",
           "resolve_split", "scan_class_folders", "unlabelled_folder"]


def scan_class_folders(root: str | os.PathLike, skip_bad: bool = False) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every non-empty class folder under ``root``.

    Class folders without image files are left out with one warning naming them; non-image
    files are skipped with one warning naming them when ``skip_bad``.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no class folder with images.
        ImageFileError: a class folder holds a file that is not an image (unless ``skip_bad``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: check the path (--root), "
                                f"or download the dataset first")
    classes: dict[str, list[Path]] = {}
    empty: list[str] = []
    skipped: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        others = [p for p in files if not is_image_file(p)]
        if others and not skip_bad:
            raise ImageFileError(f"{others[0]}: not an image file (in class folder {folder.name}): "
                                 f"remove it, or skip such files (skip_bad=True / "
                                 f"--skip-bad-images)")
        skipped += map(str, others)
        images = [p for p in files if is_image_file(p)]
        if images:
            classes[folder.name] = images
        else:
            empty.append(folder.name)
    warn_list(f"skipped non-image file(s) in {root}", skipped)
    warn_list(f"left out class folder(s) of {root} with no image files (add images or remove "
              f"the folders)", empty)
    if not classes:
        raise FileNotFoundError(f"no class folders with images in {root}: expected "
                                f"{root}/<class name>/<image files>")
    return classes


def read_split_file(path: str | os.PathLike) -> list[str]:
    """Class names of a split file: one a line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist: write one class name a line")
    names = [ln.strip() for ln in path.read_text().splitlines()]
    return [n for n in names if n and not n.startswith("#")]


def ratio_split(class_names: Sequence[str], ratios: Sequence[float], seed: int = 0
                ) -> dict[str, list[str]]:
    """Split sorted ``class_names`` into train/val/test by ``ratios`` after a seeded shuffle."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test), "
                         f"got {ratios}")
    names = sorted(class_names)
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    total = sum(ratios)
    n_train = round(len(names) * ratios[0] / total)
    n_val = round(len(names) * ratios[1] / total)
    shuffled = [names[i] for i in perm]
    return {"train": sorted(shuffled[:n_train]),
            "val": sorted(shuffled[n_train:n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val:])}


def check_disjoint(split_dir: str | os.PathLike, split: str, names: Sequence[str]) -> None:
    """Raise ``ValueError`` if ``names`` (the classes of ``split``) repeats a class or shares one
    with another split file of ``split_dir``: a score on held-out classes would not be held
    out."""
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise ValueError(f"split file {Path(split_dir) / f'{split}.txt'} names {twice[:3]} more "
                         f"than once: list each class once")
    for other in SPLITS:
        path = Path(split_dir) / f"{other}.txt"
        if other == split or not path.is_file():
            continue
        shared = sorted(set(names) & set(read_split_file(path)))
        if shared:
            raise ValueError(f"split files {split}.txt and {other}.txt of {split_dir} share "
                             f"{len(shared)} class(es), e.g. {shared[:3]}: a class belongs to one "
                             f"split only (train, val or test): fix the split files")


def resolve_split(available: Sequence[str], split: str, split_dir: str | os.PathLike | None,
                  ratios: Sequence[float] | None, seed: int = 0,
                  where: str = "the dataset folder") -> list[str]:
    """The class names of ``split``: from ``split_dir/<split>.txt``, by ``ratios``, or all classes
    (``split="all"``). A split file naming a class not in ``available`` raises ``ValueError``."""
    if split == "all":
        return sorted(available)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'all', got {split!r}")
    if split_dir is not None:
        names = read_split_file(Path(split_dir) / f"{split}.txt")
        known = set(available)
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"split file {Path(split_dir) / f'{split}.txt'} names {len(missing)} "
                             f"class(es) with no folder in {where}, e.g. {missing[:3]}: fix the "
                             f"split file, or add the missing class folders")
        check_disjoint(split_dir, split, names)
        return names
    if ratios is None:
        raise ValueError("give a split folder with train.txt/val.txt/test.txt (split_dir / "
                         "--split-dir) or split ratios (ratios / --split-ratios), or split='all'")
    return ratio_split(available, ratios, seed)[split]


def image_folder(root: str | os.PathLike, split: str = "train",
                 split_dir: str | os.PathLike | None = None,
                 ratios: Sequence[float] | None = None, seed: int = 0, image_size: int = 84,
                 channels: int = 3, cache_dir: str | os.PathLike | None = None,
                 convert: bool = True, skip_bad: bool = False, decoder: str = "auto"
                 ) -> TensorClassDataset:
    """One split of a folder of class folders, as an in-memory (memory-mapped) dataset.

    Args:
        root: the folder holding one folder per class.
        split: "train", "val", "test", or "all".
        split_dir: folder with ``train.txt``, ``val.txt``, ``test.txt`` (one class name a line).
        ratios: instead of split files, (train, val, test) fractions of the sorted classes after a
            shuffle seeded by ``seed``.
        image_size, channels: images become uint8 ``[channels, image_size, image_size]``.
        convert: convert images of other modes (grayscale, CMYK, alpha) and warn once; if False
            they raise an error naming the file.
        skip_bad: skip unreadable and non-image files with a warning instead of raising.
        decoder: "auto", "cuda", "threads" or "processes" (see :func:`cached_class_dataset`).
    Returns:
        A dataset carrying its pipeline: ``channels``, ``image_size``, bilinear resize, no
        inversion, no crop.
    """
    root = Path(root)
    found = scan_class_folders(root, skip_bad=skip_bad)
    names = resolve_split(list(found), split, split_dir, ratios, seed, where=str(root))
    return cached_class_dataset({n: found[n] for n in names}, root,
                                ImagePipeline(channels, image_size, "bilinear"),
                                name=f"{root.name}-{split}", cache_dir=cache_dir,
                                convert=convert, skip_bad=skip_bad, decoder=decoder)


def unlabelled_folder(root: str | os.PathLike, split: str = "train", image_size: int = 84,
                      channels: int = 3, cache_dir: str | os.PathLike | None = None,
                      convert: bool = True, skip_bad: bool = False, decoder: str = "auto"
                      ) -> TensorClassDataset:
    """Every image file anywhere under ``root`` (sorted paths, hidden files and folders left
    out), as the training split of one class named ``unlabelled``: data for self-supervised
    pre-training, which reads no labels. There are no val or test classes."""
    root = Path(root)
    if split not in ("train", "all"):
        raise ValueError(f"an unlabelled folder has training images only, no {split} classes: "
                         f"use --val-episodes 0 (or a folder of class folders, --dataset folder)")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: check the path (--root)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))
    others = [p for p in files if not is_image_file(p)]
    if others and not skip_bad:
        raise ImageFileError(f"{others[0]}: not an image file: remove it, or skip such files "
                             f"(--skip-bad-images)")
    warn_list(f"skipped non-image file(s) in {root}", list(map(str, others)))
    images = [p for p in files if is_image_file(p)]
    if not images:
        raise FileNotFoundError(f"no image files under {root}")
    return cached_class_dataset({"unlabelled": images}, root,
                                ImagePipeline(channels, image_size, "bilinear"),
                                name=f"{root.name}-unlabelled", cache_dir=cache_dir,
                                convert=convert, skip_bad=skip_bad, decoder=decoder)
