"""Any folder of class folders (``root/<class>/<image>``), split into train/val/test classes.

Images are decoded and resized once into a cached uint8 tensor file, keyed by the files' content,
the image size and the channels; later runs memory-map that file in seconds. A cache built from
other files is never reused: the key changes and the cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .dataset import TensorClassDataset
from .images import Box, ImageFileError, decode_images, is_image_file
from .io import atomic_torch_save, default_cache_dir

SPLITS = ("train", "val", "test")
DECODERS = ("cuda", "threads", "processes")


def scan_class_folders(root: str | os.PathLike, skip_bad: bool = False) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every non-empty class folder under ``root``.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no class folder with images.
        ImageFileError: a class folder holds a file that is not an image (unless ``skip_bad``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: check the path (--root), "
                                f"or download the dataset first")
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        others = [p for p in files if not is_image_file(p)]
        if others and not skip_bad:
            raise ImageFileError(f"{others[0]}: not an image file (in class folder {folder.name}): "
                                 f"remove it, or skip such files (skip_bad=True / "
                                 f"--skip-bad-images)")
        images = [p for p in files if is_image_file(p)]
        if images:
            classes[folder.name] = images
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
        return names
    if ratios is None:
        raise ValueError("give a split folder with train.txt/val.txt/test.txt (split_dir / "
                         "--split-dir) or split ratios (ratios / --split-ratios), or split='all'")
    return ratio_split(available, ratios, seed)[split]


def content_key(files: Sequence[Path], root: Path, extra: str) -> str:
    """Hash of every file's relative path and bytes, plus ``extra`` (size, channels, ...)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(hashlib.blake2b(f.read_bytes(), digest_size=16).digest())
    return h.hexdigest()


def cached_class_dataset(files_by_class: dict[str, list[Path]], root: Path, image_size: int,
                         channels: int, name: str, cache_dir: str | os.PathLike | None = None,
                         convert: bool = True, skip_bad: bool = False,
                         resample: str = "bilinear", boxes: dict[Path, Box] | None = None,
                         decoder: str = "auto") -> TensorClassDataset:
    """Decode the files of each class once into a cached tensor file, then memory-map it.

    Args:
        files_by_class: class name -> image files (the classes of one split, in order).
        root: folder the file names are taken relative to in the cache key.
        image_size: images are resized to ``image_size x image_size``.
        channels: 1 or 3.
        name: prefix of the cache file name.
        cache_dir: where cache files go (default: :func:`default_cache_dir`).
        convert, skip_bad, resample: as in :func:`episodes.images.decode_images`.
        boxes: file -> crop box ``(left, top, right, bottom)`` applied before resizing (files not
            in it are used whole); part of the cache key.
        decoder: "cuda" (JPEGs decoded on the GPU, see :mod:`episodes.gpu_decode`), "threads" or
            "processes" (CPU), or "auto": "cuda" when CUDA is available, else "threads". Part of
            the cache key, since GPU and CPU resizing round differently.
    Returns:
        A dataset whose images are uint8 ``[M, channels, image_size, image_size]``, memory-mapped
        from the cache file.
    """
    if decoder == "auto":
        decoder = "cuda" if torch.cuda.is_available() else "threads"
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be 'auto' or one of {DECODERS}, got {decoder!r}")
    names = list(files_by_class)
    files = [f for n in names for f in files_by_class[n]]
    file_boxes = [boxes.get(f) if boxes else None for f in files]
    targets = torch.tensor([i for i, n in enumerate(names) for _ in files_by_class[n]],
                           dtype=torch.long)
    extra = (f"{image_size}|{channels}|{convert}|{skip_bad}|{resample}|{decoder}|"
             + "\n".join(names) + "|" + ";".join(str(b) for b in file_boxes if b is not None))
    key = content_key(files, root, extra)
    path = Path(cache_dir or default_cache_dir()) / f"{name}-{image_size}px-{channels}c-{key}.pt"
    if path.is_file():
        d = torch.load(path, mmap=True, weights_only=True)
        if d.get("key") == key:
            return TensorClassDataset(d["images"], d["targets"], d["class_names"])
    desc = f"decoding {name} (once, cached in {path.parent})"
    if decoder == "cuda":
        from .gpu_decode import decode_images_cuda
        images, kept = decode_images_cuda(files, channels, image_size, convert=convert,
                                          skip_bad=skip_bad, boxes=file_boxes, resample=resample,
                                          desc=desc)
    else:
        images, kept = decode_images(files, channels, image_size, convert=convert,
                                     skip_bad=skip_bad, resample=resample, desc=desc,
                                     boxes=file_boxes, processes=decoder == "processes")
    targets = targets[torch.tensor(kept, dtype=torch.long)]
    atomic_torch_save({"key": key, "images": images, "targets": targets, "class_names": names},
                      path)
    return TensorClassDataset(images, targets, names)


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
    """
    root = Path(root)
    found = scan_class_folders(root, skip_bad=skip_bad)
    names = resolve_split(list(found), split, split_dir, ratios, seed, where=str(root))
    return cached_class_dataset({n: found[n] for n in names}, root, image_size, channels,
                                name=f"{root.name}-{split}", cache_dir=cache_dir,
                                convert=convert, skip_bad=skip_bad, decoder=decoder)
