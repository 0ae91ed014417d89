"""Decoding image files into uint8 tensors, with errors that name the file and the fix."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm.auto import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm")
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
RESAMPLE = {"bilinear": Image.BILINEAR}


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


class ImageFileError(ValueError):
    """An image file that cannot be used, with the file named in the message."""


def mode_channels(mode: str) -> int:
    """Colour channels of a PIL mode (alpha not counted): 1 for grayscale modes, else 3."""
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path: str | os.PathLike, channels: int, size: int | tuple[int, int] | None,
                 convert: bool = True, resample: str = "bilinear") -> tuple[Tensor, str]:
    """Decode one image file into uint8 ``[channels, H, W]``.

    Args:
        path: the file.
        channels: 1 (grayscale) or 3 (RGB).
        size: resize to ``size x size`` (or ``(H, W)``); None keeps the file's size.
        resample: "bilinear" (antialiased, PIL) or "area" (exact area averaging).
        convert: convert other modes (grayscale, CMYK, alpha, palette) to ``channels``; if False, a
            mode of another channel count raises :class:`ImageFileError`.
    Returns:
        The image and its original PIL mode.
    Raises:
        ImageFileError: the file is not an image, is truncated, or (``convert=False``) has the
        wrong number of channels.
    """
    if channels not in MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    want = MODE_FOR_CHANNELS[channels]
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode != want:
                native = mode_channels(mode)
                if not convert and native != channels:
                    raise ImageFileError(
                        f"{path}: image has mode {mode} ({native} channel(s)) but the dataset "
                        f"expects {channels}: convert the image, or allow conversion "
                        f"(convert=True / --convert-images)")
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                    img = _flatten_alpha(img)
                img = img.convert(want)
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"{path}: cannot decode this image ({e}): replace or delete the "
                             f"file, or skip unreadable files (skip_bad=True / --skip-bad-images)"
                             ) from e
    t = torch.from_numpy(array.copy())
    t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return t.contiguous(), mode


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_images(paths: Sequence[Path], channels: int, size: int | tuple[int, int],
                  convert: bool = True, skip_bad: bool = False, workers: int | None = None,
                  desc: str = "decoding images", resample: str = "bilinear") -> tuple[Tensor, list[int]]:
    """Decode many files into one uint8 tensor ``[M, channels, H, W]`` (threads, progress bar).

    Returns:
        The images of the files that decoded, and the positions (in ``paths``) of those files.
        Unreadable files raise :class:`ImageFileError` unless ``skip_bad``, which skips them with
        one warning that names them. Converted modes are reported in one warning.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    out = torch.empty((len(paths), channels, *hw), dtype=torch.uint8)
    kept, bad, converted = [], [], {}

    def work(i: int) -> tuple[int, Tensor | None, str | None, str | None]:
        try:
            img, mode = decode_image(paths[i], channels, hw, convert, resample)
            return i, img, mode, None
        except ImageFileError as e:
            if not skip_bad:
                raise
            return i, None, None, str(e)

    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(workers) as pool:
        for i, img, mode, err in tqdm(pool.map(work, range(len(paths))), total=len(paths),
                                      desc=desc, leave=False, disable=len(paths) < 500):
            if img is None:
                bad.append(err)
                continue
            out[len(kept)] = img
            kept.append(i)
            if mode_channels(mode) != channels or mode in ("RGBA", "LA", "PA", "CMYK"):
                converted[mode] = converted.get(mode, 0) + 1
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:5]),
                      stacklevel=2)
    if converted:
        what = ", ".join(f"{n} {m}" for m, n in sorted(converted.items()))
        warnings.warn(f"converted images of other modes to {MODE_FOR_CHANNELS[channels]}: {what}",
                      stacklevel=2)
    return out[:len(kept)], kept
