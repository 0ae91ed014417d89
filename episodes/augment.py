"""Episode augmentation, batched on the episodes' device, reproducible from a seed.

Every image of a batch gets its own random parameters, drawn from an explicit ``torch.Generator``;
all geometric transforms of an image (flips, quarter turns, random crop, zoom in/out, free
rotation, translation) are composed into one affine map and applied in a single sampling pass
that fills area outside the image by ``numpy.pad``'s modes (:mod:`episodes.fill`); colour jitter is
one per-image linear map (with hue as a rotation about the gray axis); grayscale, Gaussian blur
and solarisation are drawn per image too. No Python loop runs per image. Support and query
images are configured separately
(:class:`EpisodeAugment`), and an :class:`~episodes.sampler.EpisodeSampler` applies it to every
episode batch it draws (``augment=``), so the training loop needs nothing else. The settings
are :class:`~episodes.augment_config.AugmentConfig`, also importable from here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment_config import AugmentConfig
from .episode import Episode
from .fill import affine_sample

SEED_RANGE = 1 << 62  # the range of the seeds drawn for device generators


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params


def resized_crop_sides(n: int, area: tuple[float, float], ratio: tuple[float, float],
                       aspect: float, g: torch.Generator) -> Tensor:
    """Window sides ``[n, 2]`` (x, y; fractions of the image's) of random resized crops drawn as
    torchvision's ``RandomResizedCrop`` draws them: the first of :data:`CROP_TRIES` draws (area
    fraction uniform in ``area``, aspect ratio log-uniform in ``ratio``, for an image of width /
    height ``aspect``) that fits the image, else the whole image narrowed to the nearest ratio
    in ``ratio``. Every image draws all tries, so the generator advances the same each time."""
    a = _uniform(n * CROP_TRIES, *area, g).view(n, CROP_TRIES)
    r = torch.exp(_uniform(n * CROP_TRIES, math.log(ratio[0]), math.log(ratio[1]), g)
                  ).view(n, CROP_TRIES)
    tries = torch.stack([(a * r / aspect).sqrt(), (a * aspect / r).sqrt()], -1)  # [n, tries, 2]
    fits = (tries <= 1).all(-1)
    first = torch.where(fits.any(1), fits.double().argmax(1), 0)
    side = tries[torch.arange(n), first]
    fallback = torch.tensor([min(1.0, ratio[1] / aspect), min(1.0, aspect / ratio[0])],
                            dtype=torch.float64)
    return torch.where(fits.any(1, keepdim=True), side, fallback)


def random_affine(n: int, cfg: AugmentConfig, size: tuple[int, int], g: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """Per-image inverse affine maps (output -> source, centred pixels) of the geometric
    transforms of ``cfg``: float64 matrix ``[n, 2, 2]`` and offset ``[n, 2]`` (x, y)."""
    h, w = size
    flip = torch.ones(n, 2, dtype=torch.float64)
    flip[:, 0] -= 2 * (torch.rand(n, generator=g) < cfg.hflip).double()
    flip[:, 1] -= 2 * (torch.rand(n, generator=g) < cfg.vflip).double()
    k = torch.randint(1, 4, (n,), generator=g) * (torch.rand(n, generator=g) < cfg.rot90)
    cos90 = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[k]
    sin90 = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[k]
    theta = torch.deg2rad(_uniform(n, -cfg.rotate, cfg.rotate, g))
    crop_side = _uniform(n, cfg.crop, 1.0, g)  # the crop is a window of this side fraction
    zoom = _uniform(n, *cfg.zoom, g)
    side = crop_side[:, None].expand(n, 2)  # (x, y) side fractions of the window
    if cfg.area is not None:
        side = resized_crop_sides(n, cfg.area, cfg.ratio, w / h, g)
    slack = (1 - side) / 2  # the window stays inside the image
    crop_off = torch.stack([_uniform(n, -1, 1, g) * slack[:, 0] * w,
                            _uniform(n, -1, 1, g) * slack[:, 1] * h], 1)
    shift = torch.stack([_uniform(n, -cfg.translate, cfg.translate, g) * w,
                         _uniform(n, -cfg.translate, cfg.translate, g) * h], 1)

    def rot(c: Tensor, s: Tensor) -> Tensor:  # [n, 2, 2] rotation by angle with cos c, sin s
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    # forward: flip, quarter turn, crop/zoom, rotate, translate; invert in reverse order
    pre = torch.diag_embed(flip) @ rot(cos90, -sin90)
    matrix = pre @ (torch.diag_embed(side / zoom[:, None]) @ rot(torch.cos(theta), -torch.sin(theta)))
    offset = (pre @ crop_off.unsqueeze(-1) - matrix @ shift.unsqueeze(-1)).squeeze(-1)
    return matrix, offset


YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                   dtype=torch.float64)  # RGB -> YIQ; hue turns the (I, Q) chroma plane


def colour_matrix(n: int, c: int, cfg: AugmentConfig, g: torch.Generator
                  ) -> tuple[Tensor, Tensor, Tensor] | None:
    """Per-image colour jitter and grayscale as one linear map: float64 matrices ``[n, c, c]``,
    the factor ``[n]`` of the mean gray added to every channel, and the luma weights ``[c]``;
    None when ``cfg`` asks for no colour change. See :func:`colour_and_noise`."""
    jitter = bool(cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue)
    if not jitter and not cfg.grayscale:
        return None
    w = YIQ[0] if c == 3 else torch.full((c,), 1 / c, dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    matrix, shift = eye.expand(n, c, c), torch.zeros(n, dtype=torch.float64)
    if jitter:
        bright = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g)
        contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g)
        sat = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g)
        angle = 2 * math.pi * _uniform(n, -cfg.hue, cfg.hue, g) if cfg.hue else torch.zeros(n)
        if cfg.jitter_p < 1:  # images left alone get the identity
            off = torch.rand(n, generator=g) >= cfg.jitter_p
            bright, contrast, sat = (torch.where(off, 1.0, v) for v in (bright, contrast, sat))
            angle = torch.where(off, 0.0, angle.double())
        mix = (sat[:, None, None] * eye + (1 - sat)[:, None, None] * w[None, None, :]
               if c == 3 else eye.expand(n, c, c))
        if c == 3 and cfg.hue:
            turn = torch.zeros(n, 3, 3, dtype=torch.float64)
            turn[:, 0, 0] = 1
            turn[:, 1, 1], turn[:, 1, 2] = angle.cos(), -angle.sin()
            turn[:, 2, 1], turn[:, 2, 2] = angle.sin(), angle.cos()
            mix = mix @ torch.linalg.inv(YIQ) @ turn @ YIQ
        matrix = (contrast * bright)[:, None, None] * mix
        shift = (1 - contrast) * bright
    if cfg.grayscale:  # luma into every channel; it keeps a gray shift as it is
        gray = (torch.rand(n, generator=g) < cfg.grayscale)[:, None, None]
        matrix = torch.where(gray, torch.ones(c, 1, dtype=torch.float64) * w @ matrix, matrix)
    return matrix, shift, w


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image of ``[B, C, H, W]`` with its own Gaussian of ``sigma`` ``[B]`` pixels
    (0: unchanged), kernel side about a tenth of the image (odd, at least 3), reflect padding;
    one separable grouped convolution for the whole batch."""
    b, c, h, w = x.shape
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    s = sigma.to(x.device, x.dtype).clamp(min=1e-6)[:, None]
    kernel = torch.exp(-t.pow(2) / (2 * s.pow(2)))
    kernel = torch.where((sigma.to(x.device) > 0)[:, None], kernel, (t == 0).to(x.dtype))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, k]
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return F.conv2d(y, kernel[:, None, None, :], groups=b * c).view(b, c, h, w)


def colour_and_noise(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Colour jitter, grayscale, blur, solarisation, Gaussian and salt-and-pepper noise on float
    ``[B, C, H, W]`` in [0, 1].

    Brightness ``b``, contrast ``c`` (about the image's mean gray ``m``), saturation ``s`` (about
    each pixel's gray) and hue (a turn ``R`` of YIQ's chroma plane) compose into one per-image
    linear map ``x -> c*b*(s*I + (1-s)*1 w^T) R x + (1-c)*b*m`` (``w`` the luma weights), with
    grayscale ``1 w^T`` in front, applied as one bmm.
    """
    n, c = x.shape[:2]
    per_image = {"device": x.device, "dtype": x.dtype}
    colour = colour_matrix(n, c, cfg, g)
    if colour is not None:
        matrix, shift, w = colour
        mean_gray = x.mean((2, 3)) @ w.to(**per_image)  # [B]
        x = ((matrix.to(**per_image) @ x.flatten(2)).view_as(x)
             + (shift.to(**per_image) * mean_gray)[:, None, None, None])
    if cfg.blur:
        sigma = _uniform(n, *cfg.blur_sigma, g)
        x = gaussian_blur(x, torch.where(torch.rand(n, generator=g) < cfg.blur, sigma, 0.0))
    if cfg.solarize:
        flip = (torch.rand(n, generator=g) < cfg.solarize).to(x.device)[:, None, None, None]
        x = x.clamp(0, 1)
        x = torch.where(flip & (x >= 0.5), 1 - x, x)
    if cfg.noise_std or cfg.salt_pepper:  # per-pixel draws on the device, seeded from g
        seed = int(torch.randint(SEED_RANGE, (1,), generator=g))
        dev = torch.Generator(x.device).manual_seed(seed)
        if cfg.noise_std:
            x = x + cfg.noise_std * torch.randn(x.shape, generator=dev, **per_image)
        if cfg.salt_pepper:
            u = torch.rand((n, 1, *x.shape[2:]), generator=dev, **per_image)
            x = torch.where(u < cfg.salt_pepper / 2, 0.0, x)
            x = torch.where(u > 1 - cfg.salt_pepper / 2, 1.0, x)
    return x.clamp(0, 1)


def augment_images(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Augment float images ``[..., C, H, W]`` in [0, 1] (any leading dims, e.g. ``[T, S]``),
    each with its own random parameters from ``generator`` (a CPU generator). Same shape out."""
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])
    if cfg.geometric:
        matrix, offset = random_affine(flat.shape[0], cfg, tuple(shape[-2:]), generator)
        flat = affine_sample(flat, matrix.to(flat.device), offset.to(flat.device), cfg.fill,
                             cfg.fill_value, cfg.interpolation)
    flat = colour_and_noise(flat, cfg, generator)
    return flat.reshape(shape)


class EpisodeAugment:
    """Augments the support and/or query images of episode batches; labels are unchanged.

    Args:
        support, query: the transforms of each set (None: left as is).
        seed: seed of the CPU generator every random parameter is drawn from.
    """

    def __init__(self, support: AugmentConfig | None = None, query: AugmentConfig | None = None,
                 seed: int = 0) -> None:
        self.support, self.query = support, query
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, episode: Episode) -> Episode:
        """Episode batch ``[T, ...]`` in, the same with augmented images out."""
        sx, qx = episode.support_x, episode.query_x
        if self.support is not None:
            sx = augment_images(sx, self.support, self.generator)
        if self.query is not None:
            qx = augment_images(qx, self.query, self.generator)
        return replace(episode, support_x=sx, query_x=qx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
