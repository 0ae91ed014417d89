"""The decoded-image cache: the files of a split go through their :class:`ImagePipeline` once, into
a tensor file keyed by the files' content and the pipeline; later runs memory-map that file in
seconds. A cache built from other files or another pipeline is never reused: the key changes and
the cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .dataset import TensorClassDataset
from .images import Box
from .io import atomic_torch_save, default_cache_dir
from .pipeline import DECODERS, ImagePipeline, read_images


def content_key(files: Sequence[Path], root: Path, extra: str) -> str:
    """Hash of every file's relative path and bytes, plus ``extra`` (pipeline, options, ...)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(hashlib.blake2b(f.read_bytes(), digest_size=16).digest())
    return h.hexdigest()


def cached_class_dataset(files_by_class: dict[str, list[Path]], root: Path,
                         pipeline: ImagePipeline, name: str,
                         cache_dir: str | os.PathLike | None = None, convert: bool = True,
                         skip_bad: bool = False, boxes: dict[Path, Box] | None = None,
                         decoder: str = "auto") -> TensorClassDataset:
    """Read the files of each class through ``pipeline`` once into a cached tensor file, then
    memory-map it.

    Args:
        files_by_class: class name -> image files (the classes of one split, in order).
        root: folder the file names are taken relative to in the cache key.
        pipeline: how each file becomes an image (see :func:`episodes.pipeline.read_images`).
        name: prefix of the cache file name.
        cache_dir: where cache files go (default: :func:`default_cache_dir`).
        convert, skip_bad: as in :func:`episodes.images.decode_images`.
        boxes: file -> crop box ``(left, top, right, bottom)`` (needs ``pipeline.crop ==
            "boxes"``; files not in it are used whole); part of the cache key.
        decoder: "cuda" (JPEGs decoded on the GPU, see :mod:`episodes.gpu_decode`), "threads" or
            "processes" (CPU), or "auto": "cuda" when CUDA is available, else "threads". Part of
            the cache key, since GPU and CPU resizing round differently.
    Returns:
        A dataset whose images are uint8 ``[M, channels, size, size]``, memory-mapped from the
        cache file, carrying ``pipeline``.
    """
    if decoder == "auto":
        decoder = "cuda" if torch.cuda.is_available() else "threads"
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be 'auto' or one of {DECODERS}, got {decoder!r}")
    if (pipeline.crop == "boxes") != (boxes is not None):
        raise ValueError(f"crop boxes must be given exactly when the pipeline crops to boxes "
                         f"({pipeline.describe()})")
    names = list(files_by_class)
    files = [f for n in names for f in files_by_class[n]]
    file_boxes = [boxes.get(f) if boxes else None for f in files]
    targets = torch.tensor([i for i, n in enumerate(names) for _ in files_by_class[n]],
                           dtype=torch.long)
    extra = (f"{pipeline.describe()}|{convert}|{skip_bad}|{decoder}|" + "\n".join(names) + "|"
             + ";".join(str(b) for b in file_boxes if b is not None))
    key = content_key(files, root, extra)
    path = (Path(cache_dir or default_cache_dir())
            / f"{name}-{pipeline.size}px-{pipeline.channels}c-{key}.pt")
    if path.is_file():
        d = torch.load(path, mmap=True, weights_only=True)
        if d.get("key") == key:
            return TensorClassDataset(d["images"], d["targets"], d["class_names"], pipeline)
    images, kept = read_images(files, pipeline, convert=convert, skip_bad=skip_bad,
                               boxes=file_boxes, decoder=decoder,
                               desc=f"decoding {name} (once, cached in {path.parent})")
    targets = targets[torch.tensor(kept, dtype=torch.long)]
    atomic_torch_save({"key": key, "images": images, "targets": targets, "class_names": names},
                      path)
    return TensorClassDataset(images, targets, names, pipeline)
