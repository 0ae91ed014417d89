"""The settings of the episode augmentation (:class:`AugmentConfig`), checked when built; the
transforms themselves are :mod:`episodes.augment`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .fill import FILL_MODES
from .options import check


@dataclass
class AugmentConfig:
    """Random transforms of one image set (support or query); every image draws its own.

    Attributes:
        hflip, vflip: probability of a horizontal / vertical flip.
        rot90: probability of a random quarter turn (90, 180 or 270 degrees; square images).
        rotate: free rotation, uniform in ``[-rotate, rotate]`` degrees.
        zoom: scale range ``(low, high)``; below 1 zooms out (exposes fill), above 1 zooms in.
        crop: random crop of side fraction uniform in ``[crop, 1]``, anywhere inside the image,
            resized back to full size (1: no crop).
        area: random resized crop (torchvision's ``RandomResizedCrop``, SimCLR's crop), sampled
            as torchvision does: the first of 10 draws of area fraction uniform in ``area =
            (low, high)`` and aspect ratio log-uniform in ``ratio`` whose window fits the image,
            else the largest central window of an aspect ratio in ``ratio``; anywhere inside
            the image, resized back to full size (None: off; it replaces ``crop``).
        ratio: aspect-ratio range (width / height) of ``area`` crops.
        translate: shift uniform in ``[-translate, translate]`` of the size, each axis.
        noise_std: Gaussian noise standard deviation (pixels in [0, 1]).
        salt_pepper: fraction of pixels set to 0 or 1 (half each on average).
        brightness, contrast, saturation: colour jitter factors uniform in ``[1-v, 1+v]``.
        hue: hue shift uniform in ``[-hue, hue]`` turns, a rotation of the chroma plane about the
            gray axis (YIQ; torchvision shifts hue in HSV, which is not linear).
        jitter_p: probability that an image's colour jitter is applied at all (SimCLR: 0.8).
        grayscale: probability of turning an image gray (its luma in every channel).
        blur: probability of a Gaussian blur with sigma uniform in ``blur_sigma`` pixels and a
            kernel of about a tenth of the image side (SimCLR, BYOL).
        solarize: probability of solarising (pixels >= 0.5 become ``1 - x``; BYOL).
        fill: how area outside the image is filled: one of :data:`FILL_MODES`.
        fill_value: the constant of ``fill="constant"``.
        interpolation: "bilinear" or "nearest".
    """

    hflip: float = 0.0
    vflip: float = 0.0
    rot90: float = 0.0
    rotate: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    crop: float = 1.0
    area: tuple[float, float] | None = None
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: float = 0.0
    noise_std: float = 0.0
    salt_pepper: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    jitter_p: float = 1.0
    grayscale: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: float = 0.0
    fill: str = "reflect"
    fill_value: float = 0.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        check(self.fill in FILL_MODES, "fill", f"one of {', '.join(FILL_MODES)}", self.fill)
        check(self.interpolation in ("bilinear", "nearest"), "interpolation",
              "bilinear or nearest", self.interpolation)
        check(0 < self.crop <= 1, "crop", "in (0, 1]", self.crop)
        check(0 < self.zoom[0] <= self.zoom[1], "zoom", "two numbers 0 < low <= high",
              self.zoom)
        check(self.area is None or 0 < self.area[0] <= self.area[1] <= 1, "area",
              "two numbers 0 < low <= high <= 1", self.area)
        check(0 < self.ratio[0] <= self.ratio[1], "ratio", "two numbers 0 < low <= high",
              self.ratio)
        check(0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma",
              "two numbers 0 < low <= high", self.blur_sigma)
        check(0 <= self.hue <= 0.5, "hue", "in [0, 0.5]", self.hue)
        for name in ("hflip", "vflip", "rot90", "salt_pepper", "jitter_p", "grayscale", "blur",
                     "solarize"):
            check(0 <= getattr(self, name) <= 1, name, "a probability in [0, 1]",
                  getattr(self, name))
        for name in ("rotate", "translate", "noise_std", "brightness", "contrast", "saturation"):
            check(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))

    @property
    def geometric(self) -> bool:
        return bool(self.hflip or self.vflip or self.rot90 or self.rotate or self.translate
                    or self.zoom != (1.0, 1.0) or self.crop < 1 or self.area is not None)

    @classmethod
    def standard(cls, **changes: object) -> AugmentConfig:
        """Flip, random crop (side >= 0.75), colour jitter 0.4, reflect fill: a usual choice."""
        return replace(cls(hflip=0.5, crop=0.75, brightness=0.4, contrast=0.4, saturation=0.4),
                       **changes)
