"""Decoding image files into uint8 tensors, with errors that name the file and the fix."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .progress import bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
RESAMPLE = {"bilinear": Image.BILINEAR}
Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, right/bottom exclusive


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix averaging exact areas: output pixel ``i`` covers input interval
    ``[i * n_in / n_out, (i + 1) * n_in / n_out)``, each input pixel weighted by its overlap."""
    edges = np.arange(n_out + 1) * n_in / n_out
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return overlap / overlap.sum(1, keepdims=True)


def area_resize(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Exact area-average resize of uint8 ``[H, W]`` or ``[H, W, C]`` to ``hw``, rounded."""
    a = array.astype(np.float64)
    wh, ww = area_weights(a.shape[0], hw[0]), area_weights(a.shape[1], hw[1])
    if a.ndim == 2:
        out = wh @ a @ ww.T
    else:
        out = np.stack([wh @ a[..., c] @ ww.T for c in range(a.shape[2])], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mode_channels(mode: str) -> int:
    """Channels of a PIL mode, alpha counted: 1 grayscale, 2 LA, 4 RGBA/CMYK, else 3."""
    return {"1": 1, "L": 1, "I;16": 1, "I": 1, "F": 1, "LA": 2, "RGBA": 4, "CMYK": 4}.get(mode, 3)


class ImageFileError(ValueError):
    """An image file that cannot be used, with the file named in the message."""


SKIP_HINT = "or skip such files (skip_bad=True / --skip-bad-images)"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def check_pixels(path: str | os.PathLike, size: tuple[int, int]) -> None:
    """Refuse an image over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``),
    which PIL itself only warns about below twice the limit."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise ImageFileError(
            f"{path}: {size[0]}x{size[1]} image ({size[0] * size[1]} pixels) is over PIL's "
            f"decompression-bomb limit of {limit} pixels, so it was not decoded: shrink it, raise "
            f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file, {SKIP_HINT}")


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit grayscale image (modes ``I;16*``, or ``I`` holding 16-bit values) scaled to 8-bit
    ``L`` (``round(v * 255 / 65535)``, values outside 0..65535 clipped), where PIL's own
    conversion would clip every value above 255 to white."""
    a = np.asarray(img).astype(np.float64) * (255 / 65535)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, with the errors of
    :func:`decode_image` (a bad file or a decompression bomb raises :class:`ImageFileError`)."""
    try:
        with Image.open(path) as img:
            check_pixels(path, img.size)
            return img.size
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _unreadable(path, e) from e


def warn_list(summary: str, items: Sequence[str], stacklevel: int = 3) -> None:
    """One warning ``"<summary> (<count>): <first five items>; ..."``, nothing if ``items`` is
    empty."""
    if items:
        more = f"; and {len(items) - 5} more" if len(items) > 5 else ""
        warnings.warn(f"{summary} ({len(items)}): " + "; ".join(items[:5]) + more,
                      stacklevel=stacklevel + 1)


def _unreadable(path: str | os.PathLike, e: BaseException) -> ImageFileError:
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageFileError(f"{path}: not decoded, it may be a decompression bomb ({e}): shrink "
                              f"it, raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file, "
                              f"{SKIP_HINT}")
    return ImageFileError(f"{path}: cannot decode this image ({e}): replace or delete the file, "
                          f"{SKIP_HINT}")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path: str | os.PathLike, channels: int, size: int | tuple[int, int] | None,
                 convert: bool = True, resample: str = "bilinear", box: Box | None = None
                 ) -> tuple[Tensor, str]:
    """Decode one image file into uint8 ``[channels, H, W]``.

    Args:
        path: the file.
        channels: 1 (grayscale) or 3 (RGB).
        size: resize to ``size x size`` (or ``(H, W)``); None keeps the file's size.
        resample: "bilinear" (antialiased, PIL) or "area" (exact area averaging).
        box: crop to ``(left, top, right, bottom)`` before resizing (None: the whole image).
        convert: convert other modes (grayscale, CMYK, alpha, palette) to ``channels``; if False, a
            mode of another channel count raises :class:`ImageFileError`.
    Returns:
        The image and its original PIL mode. 16-bit grayscale is scaled to 8 bits (:func:`to_8bit`).
    Raises:
        ImageFileError: the file is not an image, is truncated, is over PIL's decompression-bomb
        limit, or (``convert=False``) has the wrong number of channels.
    """
    if channels not in MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    want = MODE_FOR_CHANNELS[channels]
    try:
        with Image.open(path) as img:
            check_pixels(path, img.size)
            img.load()
            mode = img.mode
            if mode in SIXTEEN_BIT_MODES:
                img = to_8bit(img)
            if img.mode != want:
                native = mode_channels(mode)
                if not convert and native != channels:
                    raise ImageFileError(
                        f"{path}: image has mode {mode} ({native} channel(s)) but the dataset "
                        f"expects {channels}: convert the image, or allow conversion "
                        f"(convert=True; on the command line, leave out --no-convert)")
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                    img = _flatten_alpha(img)
                img = img.convert(want)
            if box is not None:
                img = img.crop(box)
            array = np.asarray(img, dtype=np.uint8)
            hw = array.shape[:2] if size is None else (
                (size, size) if isinstance(size, int) else tuple(size))
            if tuple(array.shape[:2]) != tuple(hw):
                if resample == "area":
                    array = area_resize(array, hw)
                else:
                    array = np.asarray(img.resize((hw[1], hw[0]), RESAMPLE[resample]), np.uint8)
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _unreadable(path, e) from e
    t = torch.from_numpy(array.copy())
    t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return t.contiguous(), mode


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _decode_or_report(path: Path, box: Box | None, *, channels: int, hw: tuple[int, int],
                      convert: bool, resample: str, skip_bad: bool
                      ) -> tuple[Tensor | None, str | None, str | None]:
    """(image, mode, None), or (None, None, error message) for a bad file when ``skip_bad``."""
    try:
        img, mode = decode_image(path, channels, hw, convert, resample, box)
        return img, mode, None
    except ImageFileError as e:
        if not skip_bad:
            raise
        return None, None, str(e)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes started from a fresh server process ("forkserver", Python 3.14's default
    on Linux; "spawn" where there is none, as on Windows), not forked from this one: forking a
    process whose torch has started threads may deadlock the child (Python 3.12 warns of it)."""
    method = ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
              else "spawn")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def decode_images(paths: Sequence[Path], channels: int, size: int | tuple[int, int],
                  convert: bool = True, skip_bad: bool = False, workers: int | None = None,
                  desc: str = "decoding images", resample: str = "bilinear",
                  boxes: Sequence[Box | None] | None = None, processes: bool = False
                  ) -> tuple[Tensor, list[int]]:
    """Decode many files on the CPU into one uint8 tensor ``[M, channels, H, W]`` (progress bar).

    Args:
        boxes: a crop box (or None) for each path, applied before resizing.
        workers: threads (or processes) decoding in parallel; default ``cpu_count + 2`` up to 8.
        processes: decode in worker processes instead of threads.
    Returns:
        The images of the files that decoded, and the positions (in ``paths``) of those files.
        Unreadable files raise :class:`ImageFileError` unless ``skip_bad``, which skips them with
        one warning that names them. Converted modes are reported in one warning.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    out = torch.empty((len(paths), channels, *hw), dtype=torch.uint8)
    boxes = list(boxes) if boxes is not None else [None] * len(paths)
    work = partial(_decode_or_report, channels=channels, hw=hw, convert=convert,
                   resample=resample, skip_bad=skip_bad)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    pool: Executor = process_pool(workers) if processes else ThreadPoolExecutor(workers)
    results = DecodeReport(channels)
    with pool, warnings.catch_warnings():  # over the limit is refused (check_pixels): PIL's
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # warning is noise
        stream = pool.map(work, paths, boxes, chunksize=32 if processes else 1)
        for i, (img, mode, err) in enumerate(bar(stream, total=len(paths), desc=desc,
                                                 leave=False, min_total=500, unit="image")):
            if results.add(i, mode, err):
                out[len(results.kept) - 1] = img
    results.warn()
    return out[:len(results.kept)], results.kept


class DecodeReport:
    """Collects which files decoded, which were skipped and which modes were converted, and
    reports the skipped files and the converted modes once each."""

    def __init__(self, channels: int) -> None:
        self.channels, self.want = channels, MODE_FOR_CHANNELS[channels]
        self.kept: list[int] = []
        self.bad: list[str] = []
        self.converted: dict[str, int] = {}

    def add(self, i: int, mode: str | None, err: str | None) -> bool:
        """Record file ``i``; True when it decoded (``err`` is None)."""
        if err is not None:
            self.bad.append(err)
            return False
        self.kept.append(i)
        if mode is not None and mode_channels(mode) != self.channels:  # not "1" -> "L"
            self.converted[str(mode)] = self.converted.get(str(mode), 0) + 1
        return True

    def warn(self) -> None:
        warn_list("skipped unreadable image(s)", self.bad, stacklevel=4)
        if self.converted:
            what = ", ".join(f"{n} {m}" for m, n in sorted(self.converted.items()))
            warnings.warn(f"converted images of other modes to {self.want}: {what}", stacklevel=3)
