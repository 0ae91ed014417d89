"""Decoding JPEG files on the GPU (``torchvision.io.decode_jpeg(device="cuda")``), in batches.

Only baseline RGB or grayscale JPEGs go to the GPU; every other file (PNG, CMYK JPEG, a file the
GPU decoder rejects) is decoded on the CPU by :func:`episodes.images.decode_image`, so errors and
mode conversions are reported exactly as on the CPU path. Results differ from the CPU path by
resampling rounding only (antialiased bilinear resize in both).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .images import Box, DecodeReport, ImageFileError, _decode_or_report
from .progress import bar as progress_bar

GPU_MODES = ("RGB", "L")


def gpu_decodable(path: Path) -> tuple[bool, str | None]:
    """Whether ``path`` is a JPEG the GPU decoder takes (RGB or grayscale, within PIL's
    decompression-bomb limit), and its PIL mode.

    Reads the header only; an unreadable header or an image over the limit returns False (the
    CPU path then raises the error that names the file).
    """
    try:
        with warnings.catch_warnings():  # called from one thread only
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                limit = Image.MAX_IMAGE_PIXELS
                small = limit is None or img.size[0] * img.size[1] <= limit  # else CPU refuses
                return img.format == "JPEG" and img.mode in GPU_MODES and small, img.mode
    except Exception:  # noqa: BLE001  (any failure: let the CPU path report it)
        return False, None


def resize_uint8(img: Tensor, hw: tuple[int, int], box: Box | None) -> Tensor:
    """Crop ``img`` (uint8 ``[C, H, W]``) to ``box`` and resize it (antialiased bilinear)."""
    if box is not None:
        left, top, right, bottom = box
        img = img[:, top:bottom, left:right]
    if tuple(img.shape[1:]) == hw:
        return img
    x = F.interpolate(img.unsqueeze(0).float(), size=hw, mode="bilinear", antialias=True,
                      align_corners=False)
    return x.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def decode_images_cuda(paths: Sequence[Path], channels: int, size: int | tuple[int, int],
                       convert: bool = True, skip_bad: bool = False,
                       boxes: Sequence[Box | None] | None = None, resample: str = "bilinear",
                       batch_size: int = 256, device: torch.device | str = "cuda",
                       desc: str = "decoding images on the GPU") -> tuple[Tensor, list[int]]:
    """Like :func:`episodes.images.decode_images`, decoding JPEGs on ``device`` in batches.

    Returns:
        uint8 ``[M, channels, H, W]`` on the CPU (the images that decoded) and their positions in
        ``paths``.
    """
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image io for TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

    hw = (size, size) if isinstance(size, int) else tuple(size)
    boxes = list(boxes) if boxes is not None else [None] * len(paths)
    read_mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    out = torch.empty((len(paths), channels, *hw), dtype=torch.uint8)
    ok = torch.zeros(len(paths), dtype=torch.bool)
    modes: list[str | None] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)

    def on_cpu(i: int) -> None:
        img, modes[i], errors[i] = _decode_or_report(paths[i], boxes[i], channels=channels, hw=hw,
                                                     convert=convert, resample=resample,
                                                     skip_bad=skip_bad)
        if img is not None:
            out[i], ok[i] = img, True

    gpu = []
    for i, p in enumerate(paths):
        decodable, modes[i] = gpu_decodable(p)
        if decodable and (convert or modes[i] == ("RGB" if channels == 3 else "L")):
            gpu.append(i)
    with progress_bar(total=len(paths), desc=desc, leave=False, min_total=500,
                      unit="image") as bar, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's image io
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused on the CPU
        for s in range(0, len(gpu), batch_size):
            data = {i: read_file(str(paths[i])) for i in gpu[s:s + batch_size]}
            # a file not ending in the JPEG end marker may be truncated: the CPU path checks it
            chunk = [i for i, d in data.items() if d[-2:].tolist() == [0xFF, 0xD9]]
            for i in sorted(set(data) - set(chunk)):
                on_cpu(i)
            try:
                decoded = (decode_jpeg([data[i] for i in chunk], mode=read_mode, device=device)
                           if chunk else [])
            except RuntimeError:  # one bad file fails the batch: decode it on the CPU
                for i in chunk:
                    on_cpu(i)
            else:
                if chunk:
                    imgs = [resize_uint8(img, hw, boxes[i])
                            for i, img in zip(chunk, decoded, strict=True)]
                    out[chunk] = torch.stack(imgs).cpu()
                    ok[chunk] = True
            bar.update(len(data))
        for i in sorted(set(range(len(paths))) - set(gpu)):
            on_cpu(i)
            bar.update(1)
    report = DecodeReport(channels)
    for i in range(len(paths)):
        report.add(i, modes[i], errors[i])
    report.warn()
    kept = torch.nonzero(ok).squeeze(1)
    if len(kept) != len(report.kept):
        raise ImageFileError("internal error: decoded and reported images disagree")
    return out[kept], report.kept
