"""The decoded-image cache: the files of a split go through their :class:`ImagePipeline` once, into
a tensor file keyed by the files' content and the pipeline; later runs memory-map that file in
seconds. A cache built from other files or another pipeline is never reused: the key changes and
the cache is rebuilt.

A cache file also stores a CRC-32 of its images and targets, checked on every load (one pass over
the file: about a second per GB on one core, a page-cache read training does anyway); a file that
is truncated, unreadable or fails its checksum is deleted and rebuilt, with a warning naming it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .dataset import TensorClassDataset
from .images import SKIP_HINT, Box, ImageFileError, warn_list
from .io import atomic_torch_save, default_cache_dir
from .pipeline import DECODERS, ImagePipeline, read_images


def checksum(images: Tensor, targets: Tensor) -> int:
    """CRC-32 of the bytes of uint8 ``images`` ``[M, ...]`` and long ``targets`` ``[M]``."""
    crc = zlib.crc32(images.contiguous().numpy())
    return zlib.crc32(targets.contiguous().numpy(), crc)


def save_cache(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (with ``images`` and ``targets``) and its checksum atomically."""
    atomic_torch_save({**payload, "checksum": checksum(payload["images"], payload["targets"])},
                      path)


def load_cache(path: Path, key: str | None = None) -> dict[str, Any] | None:
    """The contents of cache file ``path``, memory-mapped, or None when there is none to use.

    A file that cannot be read (truncated by a full disk, say), that has no checksum (an older
    version), whose images fail their checksum or whose ``key`` is not ``key`` is deleted with a
    warning naming it, and None is returned so that the caller rebuilds it.
    """
    if not path.is_file():
        return None
    try:
        d = torch.load(path, mmap=True, weights_only=True)
        if not isinstance(d, dict) or "checksum" not in d:
            why = "in an older format, without a checksum"
        elif key is not None and d.get("key") != key:
            why = "built from other files than its name says"
        elif checksum(d["images"], d["targets"]) != d["checksum"]:
            why = "corrupted: its images do not match their checksum"
        else:
            return d
    except Exception as e:  # noqa: BLE001 - any failure to read it means: rebuild it
        why = f"unreadable ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"
    warnings.warn(f"cache file {path} is {why}: rebuilding it", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def file_digests(files: Sequence[Path], skip_bad: bool = False) -> dict[Path, bytes]:
    """A hash of each file's bytes; a file that cannot be read raises :class:`ImageFileError`,
    or with ``skip_bad`` is left out (one warning names them)."""
    digests, bad = {}, []
    for f in files:
        try:
            digests[f] = hashlib.blake2b(f.read_bytes(), digest_size=16).digest()
        except OSError as e:
            if not skip_bad:
                raise ImageFileError(f"{f}: cannot read this file ({e.strerror or e}): fix its "
                                     f"permissions or replace it, {SKIP_HINT}") from e
            bad.append(f"{f} ({e.strerror or e})")
    warn_list("skipped unreadable file(s)", bad, stacklevel=4)
    return digests


def content_key(digests: dict[Path, bytes], root: Path, extra: str) -> str:
    """Hash of every file's relative path and bytes (``digests``, in order), plus ``extra``
    (pipeline, options, ...)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for f, digest in digests.items():
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(digest)
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
        convert, skip_bad: as in :func:`episodes.images.decode_images`; with ``skip_bad`` files
            that cannot even be read are left out too (one warning names them).
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
    digests = file_digests([f for n in names for f in files_by_class[n]], skip_bad)
    files_by_class = {n: [f for f in files_by_class[n] if f in digests] for n in names}
    files = list(digests)
    file_boxes = [boxes.get(f) if boxes else None for f in files]
    targets = torch.tensor([i for i, n in enumerate(names) for _ in files_by_class[n]],
                           dtype=torch.long)
    extra = (f"{pipeline.describe()}|{convert}|{skip_bad}|{decoder}|" + "\n".join(names) + "|"
             + ";".join(str(b) for b in file_boxes if b is not None))
    key = content_key(digests, root, extra)
    path = (Path(cache_dir or default_cache_dir())
            / f"{name}-{pipeline.size}px-{pipeline.channels}c-{key}.pt")
    d = load_cache(path, key)
    if d is not None:
        return TensorClassDataset(d["images"], d["targets"], d["class_names"], pipeline)
    images, kept = read_images(files, pipeline, convert=convert, skip_bad=skip_bad,
                               boxes=file_boxes, decoder=decoder,
                               desc=f"decoding {name} (once, cached in {path.parent})")
    targets = targets[torch.tensor(kept, dtype=torch.long)]
    save_cache(path, {"key": key, "images": images, "targets": targets, "class_names": names})
    return TensorClassDataset(images, targets, names, pipeline)
