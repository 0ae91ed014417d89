"""Strong views for consistency training: RandAugment with Cutout, batched on the images' device.

FixMatch's strong view (Sohn et al. 2020; USB ``semilearn/datasets/augmentation/randaugment.py``)
is the weak flip-and-shift, then ``n`` operations drawn uniformly from fourteen, each at a
magnitude drawn uniformly in its range, then a Cutout square of side up to half the image. USB
applies this with PIL per image; here every image draws its own operations and magnitudes from an
explicit CPU generator, and each operation runs once per round on the images that drew it (a
Python loop over the fourteen operations, none per image). Ranges as USB's ``augment_list``:
AutoContrast; Brightness, Color, Contrast, Sharpness with enhance factors in [0.05, 0.95];
Equalize; Identity; Posterize to 4..8 bits; Rotate by [-30, 30] degrees; ShearX/Y by [-0.3, 0.3];
Solarize above a threshold in [0, 256); TranslateX/Y by [-0.3, 0.3] of the side; the geometric
operations fill with gray (USB: ``fillcolor=(128, 128, 128)``), Cutout with gray 0.5.
Deviations: Equalize maps each channel through its cumulative histogram (PIL leaves out the
last bin's count); Sharpness blurs the border pixels too (PIL keeps them); USB's Cutout is gray
(125, 123, 114) and its square is moved inside the image where it would cross the top or left
border. USB's datasets apply 3 operations (``RandAugment(3, 5)``), kekmodel/FixMatch-pytorch 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import YIQ, AugmentConfig, augment_images
from .fill import affine_sample
from .options import check

GRAY = 0.5
WEAK = AugmentConfig(hflip=0.5, translate=0.125)  # FixMatch's flip-and-shift, reflect fill


def _luma(x: Tensor) -> Tensor:
    """``[B, C, H, W] -> [B, 1, H, W]`` (ITU-R 601 luma for RGB, the mean otherwise)."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return torch.einsum("bchw,c->bhw", x, YIQ[0].to(x))[:, None]


def _blend(x: Tensor, other: Tensor, v: Tensor) -> Tensor:
    """PIL's ``ImageEnhance``: ``other + v (x - other)`` per image (``v`` ``[B]``)."""
    return (other + v[:, None, None, None] * (x - other)).clamp(0, 1)


def _affine(x: Tensor, m: Tensor) -> Tensor:
    """Sample ``x`` through per-image maps ``[B, 2, 3]`` (output -> source, centred pixels)."""
    return affine_sample(x, m[:, :, :2], m[:, :, 2], "constant", GRAY)


def _geometric(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    def op(x: Tensor, v: Tensor) -> Tensor:
        b, _, h, w = x.shape
        m = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        m[:, 0, 0] = m[:, 1, 1] = 1
        if kind == "rotate":
            a = torch.deg2rad(v)
            m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a.cos(), a.sin(), -a.sin(), a.cos()
        elif kind == "shear_x":
            m[:, 0, 1] = v
        elif kind == "shear_y":
            m[:, 1, 0] = v
        elif kind == "translate_x":
            m[:, 0, 2] = v * w
        else:
            m[:, 1, 2] = v * h
        return _affine(x, m)
    return op


def _autocontrast(x: Tensor, v: Tensor) -> Tensor:
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-6), x)


def _equalize(x: Tensor, v: Tensor) -> Tensor:
    b, c, h, w = x.shape
    q = (x * 255).round().long().clamp(0, 255).flatten(2)  # [B, C, HW]
    hist = torch.zeros(b, c, 256, device=x.device).scatter_add_(2, q, torch.ones_like(q, dtype=torch.float))
    cdf = hist.cumsum(2)
    low = torch.gather(cdf, 2, q.amin(2, keepdim=True))  # the count up to the darkest level
    lut = ((cdf - low) / (h * w - low).clamp(min=1)).clamp(0, 1)
    return torch.gather(lut, 2, q).view_as(x).to(x.dtype)


def _posterize(x: Tensor, v: Tensor) -> Tensor:
    step = (2.0 ** (8 - v.round())).to(x)[:, None, None, None]
    return torch.floor((x * 255).round() / step) * step / 255


def _sharpness(x: Tensor, v: Tensor) -> Tensor:
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    c = x.shape[1]
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
    return _blend(x, smooth, v)


OPS: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], float, float]] = {
    "autocontrast": (_autocontrast, 0, 1),
    "brightness": (lambda x, v: _blend(x, torch.zeros_like(x), v), 0.05, 0.95),
    "color": (lambda x, v: _blend(x, _luma(x).expand_as(x), v), 0.05, 0.95),
    "contrast": (lambda x, v: _blend(x, _luma(x).mean((2, 3), keepdim=True).expand_as(x), v),
                 0.05, 0.95),
    "equalize": (_equalize, 0, 1),
    "identity": (lambda x, v: x, 0, 1),
    "posterize": (_posterize, 4, 8),
    "rotate": (_geometric("rotate"), -30, 30),
    "sharpness": (_sharpness, 0.05, 0.95),
    "shear_x": (_geometric("shear_x"), -0.3, 0.3),
    "shear_y": (_geometric("shear_y"), -0.3, 0.3),
    "solarize": (lambda x, v: torch.where(x * 255 >= v[:, None, None, None], 1 - x, x), 0, 256),
    "translate_x": (_geometric("translate_x"), -0.3, 0.3),
    "translate_y": (_geometric("translate_y"), -0.3, 0.3),
}  # name -> (operation on [B, C, H, W] in [0, 1] with magnitudes [B], low, high)


@dataclass
class StrongAugment:
    """FixMatch's strong view (see the module text).

    Attributes:
        ops: RandAugment operations per image (kekmodel/FixMatch-pytorch: 2; USB's datasets: 3).
        cutout: largest Cutout side, a fraction of the image side (0.5; 0: none).
        weak: the transforms applied first (flip and a shift of up to 1/8 of the side).
    """

    ops: int = 2
    cutout: float = 0.5
    weak: AugmentConfig = field(default_factory=lambda: WEAK)

    def __post_init__(self) -> None:
        check(self.ops >= 0, "ops", ">= 0", self.ops)
        check(0 <= self.cutout <= 1, "cutout", "in [0, 1]", self.cutout)


def rand_augment(x: Tensor, ops: int, g: torch.Generator) -> Tensor:
    """``ops`` rounds of RandAugment on float ``[B, C, H, W]`` in [0, 1]: in each, every image
    applies one operation of :data:`OPS` drawn uniformly, at a magnitude uniform in its range."""
    names = list(OPS)
    for _ in range(ops):
        pick = torch.randint(len(names), (len(x),), generator=g)
        level = torch.rand(len(x), generator=g)
        out = x.clone()
        for k, name in enumerate(names):
            rows = torch.nonzero(pick == k).squeeze(1)
            if len(rows):
                op, low, high = OPS[name]
                rows_d = rows.to(x.device)
                out[rows_d] = op(x[rows_d], (low + (high - low) * level[rows]).to(x))
        x = out.clamp(0, 1)
    return x


def cutout(x: Tensor, size: float, g: torch.Generator) -> Tensor:
    """Gray squares of side uniform in ``[0, size]`` of the image side, centred anywhere (parts
    may fall outside), one per image of ``[B, C, H, W]``."""
    b, _, h, w = x.shape
    side = torch.rand(b, generator=g) * size * w
    cy, cx = torch.rand(b, generator=g) * h, torch.rand(b, generator=g) * w
    ys = torch.arange(h, dtype=torch.float)[None, :, None]
    xs = torch.arange(w, dtype=torch.float)[None, None, :]
    half = (side / 2)[:, None, None]
    inside = ((ys - cy[:, None, None]).abs() < half) & ((xs - cx[:, None, None]).abs() < half)
    return torch.where(inside[:, None].to(x.device), GRAY, x)


def strong_augment(x: Tensor, cfg: StrongAugment, g: torch.Generator) -> Tensor:
    """The strong view of float images ``[B, C, H, W]`` in [0, 1] (same shape out)."""
    x = rand_augment(augment_images(x, cfg.weak, g), cfg.ops, g)
    return cutout(x, cfg.cutout, g) if cfg.cutout else x


View = AugmentConfig | StrongAugment | None


def augment_view(x: Tensor, cfg: View, g: torch.Generator) -> Tensor:
    """``x`` ``[B, C, H, W]`` under a view's transforms (None: unchanged)."""
    if cfg is None:
        return x
    if isinstance(cfg, StrongAugment):
        return strong_augment(x, cfg, g)
    return augment_images(x, cfg, g)
