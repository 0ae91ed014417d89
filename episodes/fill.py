"""Sampling images at arbitrary pixel coordinates with ``numpy.pad``'s fill modes, batched.

Area outside the image is filled as ``numpy.pad`` would fill it: "constant", "edge", "reflect",
"symmetric" or "wrap". :func:`sample_pixels` is the reference, by explicit index arithmetic
(integer corners remapped into the image, gathered, blended); :func:`grid_affine_sample` gives the
same values with two fused ops (``affine_grid`` + ``grid_sample``) and is what augmentation uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
