"""The recorded image pipeline: how image files become the uint8 images a dataset holds.

Every loader that reads files builds an :class:`ImagePipeline` and decodes its cache with
:func:`read_images`; the dataset carries the pipeline (``TensorClassDataset.pipeline``), training
saves it in the checkpoint, and prediction reads raw files with the same :func:`read_images`, so a
file labelled by a trained model looks exactly like the images the model was trained on.

Steps, in order: decode (mode converted to ``channels``; 16-bit scaled to 8), crop (to an
annotated box, where the loader has boxes), resize to ``size x size`` (``resample``), invert
(``255 - x``). Every path turns the uint8 images into floats in ``[0, 1]`` by dividing by 255
(:func:`to_unit_float`); a mean/std normalisation, where a model needs one, is the model's
(``fewshot.models.input_norm``: recorded in its spec, applied by its backbone), so augmentation works
on ``[0, 1]`` images whatever the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from .gpu_decode import decode_images_cuda
from .images import Box, decode_images
from .options import parse_config

RESAMPLES = ("area", "bilinear")
CROPS = ("none", "boxes")
DECODERS = ("cuda", "threads", "processes")


@dataclass(frozen=True)
class ImagePipeline:
    """How a file becomes a uint8 ``[channels, size, size]`` image.

    Attributes:
        channels: 1 (grayscale) or 3 (RGB).
        size: the images are resized to ``size x size``.
        resample: "area" (exact area averaging) or "bilinear" (antialiased, PIL; the GPU decoder
            rounds differently by at most a few levels).
        invert: ``255 - x`` after resizing (Omniglot: dark ink on white paper becomes ink 255).
        crop: "none" (whole files) or "boxes" (cropped to annotated bounding boxes before
            resizing; raw files carry no box, so they must be cropped to the object by hand).
    """

    channels: int
    size: int
    resample: str = "bilinear"
    invert: bool = False
    crop: str = "none"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"image pipeline: channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"image pipeline: size must be a positive integer, got {self.size!r}")
        if self.resample not in RESAMPLES:
            raise ValueError(f"image pipeline: resample must be one of {RESAMPLES}, got "
                             f"{self.resample!r}")
        if not isinstance(self.invert, bool):
            raise ValueError(f"image pipeline: invert must be true or false, got {self.invert!r}")
        if self.crop not in CROPS:
            raise ValueError(f"image pipeline: crop must be one of {CROPS}, got {self.crop!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, bool), as stored in checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "image pipeline") -> ImagePipeline:
        """The pipeline of :meth:`to_dict`; unknown or missing fields raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ValueError(f"{source}: an image pipeline must be a dict of {sorted(names)}, "
                             f"got {type(data).__name__}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown image pipeline field(s) {unknown}: the fields are "
                             f"{sorted(names)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{source}: incomplete image pipeline {data} ({e})") from e

    @classmethod
    def parse(cls, text: str) -> ImagePipeline:
        """From ``"channels=1,size=28,resample=area,invert=true,crop=none"`` (the format of
        :meth:`describe`; resample, invert and crop may be left out)."""
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"image pipeline {text!r}: expected key=value pairs separated by "
                                 f"commas, e.g. channels=1,size=28,resample=area,invert=true")
            values[key.strip()] = value.strip()
        try:
            return parse_config(cls, values, "the image pipeline")
        except ValueError as e:
            raise ValueError(f"image pipeline {text!r}: {e}") from None

    def describe(self) -> str:
        """``channels=1,size=28,resample=area,invert=true,crop=none`` (read back by :meth:`parse`)."""
        return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                        for k, v in self.to_dict().items())

    def differences(self, other: ImagePipeline) -> dict[str, tuple[Any, Any]]:
        """Field -> ``(self's value, other's value)`` for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images (any shape) as float32 in ``[0, 1]``: the data side's only normalisation."""
    return images.float().div_(255)


def read_images(paths: Sequence[Path], pipeline: ImagePipeline, *, convert: bool = True,
                skip_bad: bool = False, boxes: Sequence[Box | None] | None = None,
                decoder: str = "threads", desc: str = "decoding images"
                ) -> tuple[Tensor, list[int]]:
    """Apply ``pipeline`` to image files: decode, crop, resize, invert.

    Args:
        paths: the files.
        pipeline: what to do to each file.
        convert, skip_bad: as in :func:`episodes.images.decode_images`.
        boxes: a crop box (or None) per file; only with ``pipeline.crop == "boxes"``.
        decoder: "threads" or "processes" (CPU), or "cuda" (JPEGs decoded on the GPU, see
            :mod:`episodes.gpu_decode`).
    Returns:
        uint8 ``[M, channels, size, size]`` (on the CPU) of the M files that decoded, and their
        positions in ``paths``.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if boxes is not None and pipeline.crop != "boxes" and any(b is not None for b in boxes):
        raise ValueError("crop boxes were given but the image pipeline has crop='none'")
    kw: dict[str, Any] = dict(convert=convert, skip_bad=skip_bad, boxes=boxes,
                              resample=pipeline.resample, desc=desc)
    if decoder == "cuda":
        images, kept = decode_images_cuda(paths, pipeline.channels, pipeline.size, **kw)
    else:
        images, kept = decode_images(paths, pipeline.channels, pipeline.size,
                                     processes=decoder == "processes", **kw)
    if pipeline.invert:
        images = images.bitwise_not_()  # 255 - x for uint8
    return images, kept


def read_image(path: str | os.PathLike, pipeline: ImagePipeline, convert: bool = True
               ) -> Tensor:
    """One file through ``pipeline``: uint8 ``[channels, size, size]``."""
    return read_images([Path(path)], pipeline, convert=convert)[0][0]
