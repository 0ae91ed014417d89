"""Episode augmentation, batched on the episodes' device, reproducible from a seed.

Every image of a batch gets its own random parameters, drawn from an explicit ``torch.Generator``;
all geometric transforms of an image (flips, quarter turns, random crop, zoom in/out, free
rotation, translation) are composed into one affine map and applied in a single sampling pass:
source coordinates are computed for every output pixel, integer corners are remapped into the
image by the fill mode (index arithmetic, exactly ``numpy.pad``'s modes) and gathered. No Python
loop runs per image. Support and query images are configured separately
(:class:`EpisodeAugment`), and an :class:`~episodes.sampler.EpisodeSampler` applies it to every
episode batch it draws (``augment=``), so the training loop needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .episode import Episode

FILL_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def remap_index(i: Tensor, n: int, mode: str) -> Tensor:
    """Map integer indices ``i`` (any values) into ``0..n-1`` the way ``numpy.pad`` fills.

    "edge" and "constant" clamp (the caller masks constant fill), "wrap" is periodic, "symmetric"
    mirrors repeating the edge (period ``2n``), "reflect" mirrors about the edge pixel (period
    ``2n - 2``).
    """
    if mode in ("edge", "constant"):
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    if mode == "symmetric":
        m = i.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(i)
        m = i.remainder(2 * n - 2)
        return torch.where(m >= n, 2 * n - 2 - m, m)
    raise ValueError(f"fill mode must be one of {FILL_MODES}, got {mode!r}")


def pad(x: Tensor, padding: tuple[int, int, int, int], mode: str = "constant",
        value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``x`` ``[..., H, W]`` by ``(top, bottom, left, right)`` like
    ``numpy.pad(x, ..., mode)`` (any pad widths, also larger than the image)."""
    top, bottom, left, right = padding
    h, w = x.shape[-2:]
    rows = torch.arange(-top, h + bottom, device=x.device)
    cols = torch.arange(-left, w + right, device=x.device)
    out = x[..., remap_index(rows, h, mode), :][..., remap_index(cols, w, mode)]
    if mode == "constant":
        inside = ((rows >= 0) & (rows < h)).unsqueeze(1) & ((cols >= 0) & (cols < w))
        out = torch.where(inside, out, torch.as_tensor(value, dtype=x.dtype, device=x.device))
    return out


def sample_pixels(x: Tensor, src_y: Tensor, src_x: Tensor, mode: str = "reflect",
                  value: float = 0.0, interpolation: str = "bilinear") -> Tensor:
    """Resample images at source pixel coordinates, filling outside by ``mode``.

    Args:
        x: float ``[B, C, H, W]``.
        src_y, src_x: float ``[B, H2, W2]``, the source row/column (pixel centres at integers) of
            each output pixel.
        interpolation: "bilinear" or "nearest".
    Returns:
        float ``[B, C, H2, W2]``; equal to interpolating ``numpy.pad(x, mode)`` at those points.
    """
    b, c, h, w = x.shape
    if interpolation == "nearest":
        src_y, src_x = src_y.round(), src_x.round()
    elif interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    y0, x0 = src_y.floor(), src_x.floor()
    wy, wx = (src_y - y0).unsqueeze(1), (src_x - x0).unsqueeze(1)
    y0, x0 = y0.long(), x0.long()
    flat = x.flatten(2)
    out = torch.zeros(b, c, *src_y.shape[1:], dtype=x.dtype, device=x.device)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (wy if dy else 1 - wy) * (wx if dx else 1 - wx)
        yi, xi = y0 + dy, x0 + dx
        idx = remap_index(yi, h, mode) * w + remap_index(xi, w, mode)
        vals = flat.gather(2, idx.flatten(1).unsqueeze(1).expand(-1, c, -1)).view_as(out)
        if mode == "constant":
            inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)).unsqueeze(1)
            vals = torch.where(inside, vals, torch.as_tensor(value, dtype=x.dtype,
                                                             device=x.device))
        out += weight * vals
    return out


# numpy.pad mode -> (grid_sample padding mode, align_corners) giving the same values
GRID_MODES = {"constant": ("zeros", True), "edge": ("border", True),
              "reflect": ("reflection", True), "symmetric": ("reflection", False),
              "wrap": ("border", True)}


def grid_affine_sample(x: Tensor, matrix: Tensor, offset: Tensor, mode: str = "reflect",
                       value: float = 0.0, interpolation: str = "bilinear") -> Tensor:
    """:func:`affine_sample` by ``affine_grid`` + ``grid_sample`` (two fused ops; same values as
    the index-arithmetic reference up to float rounding). "constant" samples ``x - value`` with
    zero padding and adds ``value`` back; "wrap" reduces the coordinates modulo the size and
    samples the image padded by one wrapped row and column; the other modes are grid_sample's.
    """
    b, c, h, w = x.shape
    if mode not in GRID_MODES:
        raise ValueError(f"fill mode must be one of {FILL_MODES}, got {mode!r}")
    padding, align = GRID_MODES[mode]
    # centred pixel coordinates -> grid_sample's normalised ones: multiply by scale
    scale = torch.tensor([2 / (w - 1), 2 / (h - 1)] if align else [2 / w, 2 / h],
                         dtype=matrix.dtype, device=matrix.device)
    theta = torch.cat([scale[:, None] * matrix / scale[None, :], (scale * offset)[..., None]], 2)
    grid = F.affine_grid(theta.to(x.dtype), [b, c, h, w], align_corners=align)
    if mode == "constant":
        x = x - value
    if mode == "wrap":  # to pixels, modulo the size, then normalised for the padded image
        pix = (grid + 1) / 2 * torch.tensor([w - 1, h - 1], dtype=x.dtype, device=x.device)
        pix = pix.remainder(torch.tensor([w, h], dtype=x.dtype, device=x.device))
        grid = 2 * pix / torch.tensor([w, h], dtype=x.dtype, device=x.device) - 1
        x = pad(x, (0, 1, 0, 1), "wrap")
    out = F.grid_sample(x, grid, mode=interpolation, padding_mode=padding, align_corners=align)
    return out + value if mode == "constant" else out


def affine_sample(x: Tensor, matrix: Tensor, offset: Tensor, mode: str = "reflect",
                  value: float = 0.0, interpolation: str = "bilinear", exact: bool = False
                  ) -> Tensor:
    """Apply per-image affine maps: output pixel ``p`` (centred coordinates ``(x, y)``) takes the
    source pixel ``matrix @ p + offset`` (centred). x ``[B, C, H, W]``, matrix ``[B, 2, 2]``,
    offset ``[B, 2]``; returns ``[B, C, H, W]``. ``exact`` samples by explicit index arithmetic
    (:func:`sample_pixels`, the reference) instead of :func:`grid_affine_sample` (faster)."""
    b, _, h, w = x.shape
    if not exact and h > 1 and w > 1:
        return grid_affine_sample(x, matrix, offset, mode, value, interpolation)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys = torch.arange(h, device=x.device, dtype=x.dtype) - cy
    xs = torch.arange(w, device=x.device, dtype=x.dtype) - cx
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    src = torch.einsum("bij,hwj->bhwi", matrix.to(x), grid) + offset.to(x)[:, None, None, :]
    return sample_pixels(x, src[..., 1] + cy, src[..., 0] + cx, mode, value, interpolation)


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
        translate: shift uniform in ``[-translate, translate]`` of the size, each axis.
        noise_std: Gaussian noise standard deviation (pixels in [0, 1]).
        salt_pepper: fraction of pixels set to 0 or 1 (half each on average).
        brightness, contrast, saturation: colour jitter factors uniform in ``[1-v, 1+v]``.
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
    translate: float = 0.0
    noise_std: float = 0.0
    salt_pepper: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    fill: str = "reflect"
    fill_value: float = 0.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {self.fill!r}")
        if not 0 < self.crop <= 1 or min(self.zoom) <= 0 or self.zoom[0] > self.zoom[1]:
            raise ValueError("need 0 < crop <= 1 and 0 < zoom[0] <= zoom[1]")

    @property
    def geometric(self) -> bool:
        return bool(self.hflip or self.vflip or self.rot90 or self.rotate or self.translate
                    or self.zoom != (1.0, 1.0) or self.crop < 1)

    @classmethod
    def standard(cls, **changes: object) -> AugmentConfig:
        """Flip, random crop (side >= 0.75), colour jitter 0.4, reflect fill: a usual choice."""
        return replace(cls(hflip=0.5, crop=0.75, brightness=0.4, contrast=0.4, saturation=0.4),
                       **changes)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


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
    slack = (1 - crop_side) / 2  # the window stays inside the image
    crop_off = torch.stack([_uniform(n, -1, 1, g) * slack * w, _uniform(n, -1, 1, g) * slack * h],
                           1)
    shift = torch.stack([_uniform(n, -cfg.translate, cfg.translate, g) * w,
                         _uniform(n, -cfg.translate, cfg.translate, g) * h], 1)

    def rot(c: Tensor, s: Tensor) -> Tensor:  # [n, 2, 2] rotation by angle with cos c, sin s
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    # forward: flip, quarter turn, crop/zoom, rotate, translate; invert in reverse order
    pre = torch.diag_embed(flip) @ rot(cos90, -sin90)
    matrix = pre @ ((crop_side / zoom)[:, None, None] * rot(torch.cos(theta), -torch.sin(theta)))
    offset = (pre @ crop_off.unsqueeze(-1) - matrix @ shift.unsqueeze(-1)).squeeze(-1)
    return matrix, offset


def colour_and_noise(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """Colour jitter, Gaussian and salt-and-pepper noise on float ``[B, C, H, W]`` in [0, 1].

    Brightness ``b``, contrast ``c`` (about the image's mean gray ``m``) and saturation ``s``
    (about each pixel's gray) compose into one per-image linear map
    ``x -> c*b*(s*I + (1-s)*1 w^T) x + (1-c)*b*m`` (``w`` the luma weights), applied as one bmm.
    """
    n, c = x.shape[:2]
    per_image = {"device": x.device, "dtype": x.dtype}
    if cfg.brightness or cfg.contrast or cfg.saturation:
        bright = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g)
        contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g)
        sat = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g)
        w = (torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64) if c == 3
             else torch.full((c,), 1 / c, dtype=torch.float64))
        eye = torch.eye(c, dtype=torch.float64)
        mix = (sat[:, None, None] * eye + (1 - sat)[:, None, None] * w[None, None, :]
               if c == 3 else eye.expand(n, c, c))
        matrix = ((contrast * bright)[:, None, None] * mix).to(**per_image)
        mean_gray = x.mean((2, 3)) @ w.to(**per_image)  # [B]
        shift = ((1 - contrast) * bright).to(**per_image) * mean_gray
        x = (matrix @ x.flatten(2)).view_as(x) + shift[:, None, None, None]
    if cfg.noise_std or cfg.salt_pepper:  # per-pixel draws on the device, seeded from g
        dev = torch.Generator(x.device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
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
