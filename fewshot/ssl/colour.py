"""Colourisation (Zhang et al. 2016, "Colorful image colorization"): predict an image's colour
(the a, b channels of CIE Lab) from its lightness L.

Compared with the paper and the authors' code (richzhang/colorization, its caffe branch's
``NNEncLayer``, ``PriorBoostLayer``; read, not copied):

* Lab from sRGB with the standard formulas (:func:`rgb_to_lab`: the sRGB curve, the D65 matrix
  and white point of scikit-image's ``rgb2lab``, which their code uses).
* The ab plane quantised on a grid of 10 (bin centres at multiples of 10), keeping the bins in
  the sRGB gamut (:func:`ab_bins`: those whose 10 x 10 square holds the ab of a colour of a
  regular 65 x 65 x 65 grid of sRGB colours: 261 bins; their published ``pts_in_hull.npy`` has
  313, by a gamut test the paper does not give).
* Targets soft-encoded over the 5 nearest bins with a Gaussian of sigma 5 (the paper; their code
  uses 10 neighbours), the loss a cross-entropy against them, each pixel weighted by the
  rebalancing weight of its nearest bin: ``w proportional to ((1 - lambda) p~ + lambda / Q)^-1``,
  lambda 0.5, normalised so that ``E_p~[w] = 1``, with ``p~`` the empirical distribution of the
  training images' bins smoothed by a Gaussian of sigma 5 (their prior was ImageNet's; here it
  is estimated once, at the start of training, from up to 1,024 training images, and kept in the
  checkpoint). ``loss=regression``: the mean squared error of ``ab / 110`` instead, the paper's
  regression baseline.
* The network sees L alone (``L / 100``, in every input channel of the backbone); its features
  go through a transposed-convolution decoder (:class:`fewshot.ssl.decoders.ImageDecoder`) to the
  bin logits at a quarter of the image's side (the paper predicts at 56 of 224), against the
  targets of the image's ab averaged down to that size. As their ``NonGrayMaskLayer``, gray images
  (no ``|a|`` or ``|b|`` above 5 anywhere) add nothing to the loss. Deviations: their network is
  a VGG-style fully convolutional stack with dilations; their uniform mixture is over the bins
  ImageNet hit, here over every bin (after smoothing, about the same); no annealed-mean decoding
  (it only renders colour images). The backbone
  transfers taking ordinary RGB images, having been trained on gray ones; ``fewshot train
  --init`` adapts it.

Refused on one-channel datasets (nothing to predict).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import to_unit_float
from episodes.options import check

from ..models.learner import ModelSpec
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .decoders import ImageDecoder

RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169),
              (0.019334, 0.119193, 0.950227))  # sRGB, D65 (scikit-image's rgb2lab)
WHITE_D65 = (0.95047, 1.0, 1.08883)
AB_RANGE = 110.0  # |a|, |b| of sRGB colours stay below it


def rgb_to_lab(x: Tensor) -> Tensor:
    """CIE Lab of sRGB images ``[..., 3, H, W]`` in ``[0, 1]``: L in ``[0, 100]``, a and b
    about ``[-110, 110]``; the same shape."""
    linear = torch.where(x > 0.04045, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4, x / 12.92)
    m = torch.tensor(RGB_TO_XYZ, dtype=x.dtype, device=x.device)
    white = torch.tensor(WHITE_D65, dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,...jhw->...ihw", m, linear) / white[:, None, None]
    d = 6 / 29
    f = torch.where(xyz > d ** 3, xyz.clamp(min=d ** 3) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)


@functools.lru_cache(maxsize=4)
def ab_bins(grid: int = 10, levels: int = 65) -> Tensor:
    """The in-gamut ab bins: centres ``[Q, 2]`` (multiples of ``grid``, sorted by a then b) of
    the bins holding the ab of a colour of a regular ``levels``-per-channel grid of sRGB."""
    g = torch.linspace(0, 1, levels, dtype=torch.float64)
    rgb = torch.stack(torch.meshgrid(g, g, g, indexing="ij"))  # [3, n, n, n] as [3, H, W] images
    ab = rgb_to_lab(rgb.flatten(2)).flatten(1)[1:].t()  # [n^3, 2]
    return (torch.unique(torch.round(ab / grid).long(), dim=0) * grid).float()


def soft_encode(ab: Tensor, bins: Tensor, neighbours: int = 5, sigma: float = 5.0) -> Tensor:
    """Soft targets ``[N, Q]`` of ab values ``[N, 2]``: Gaussian weights (``sigma``) of the
    distance to each of the ``neighbours`` nearest bin centres ``[Q, 2]``, summing to 1; 0 for
    the other bins."""
    d2 = torch.cdist(ab.float(), bins.to(ab.device)).pow(2)
    near, idx = d2.topk(neighbours, dim=1, largest=False)
    w = torch.softmax(-near / (2 * sigma ** 2), dim=1)
    return torch.zeros_like(d2).scatter_(1, idx, w)


def smoothed_prior(counts: Tensor, bins: Tensor, sigma: float = 5.0) -> Tensor:
    """The empirical bin distribution ``counts / sum`` ``[Q]`` smoothed by a Gaussian kernel of
    ``sigma`` in the ab plane between bin centres ``[Q, 2]``, summing to 1."""
    p = counts.double() / counts.sum()
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).pow(2) / (2 * sigma ** 2))
    smooth = kernel @ p
    return (smooth / smooth.sum()).float()


def rebalance_weights(prior: Tensor, lam: float = 0.5) -> Tensor:
    """Class-rebalancing weights ``[Q]``: ``((1 - lam) prior + lam / Q)^-1``, scaled so that
    their expectation under ``prior`` ``[Q]`` is 1."""
    w = 1.0 / ((1 - lam) * prior + lam / prior.numel())
    return w / (prior * w).sum()


def rebalanced_cross_entropy(logits: Tensor, target: Tensor, weights: Tensor,
                             keep: Tensor | None = None) -> Tensor:
    """Zhang et al.'s loss, per pixel: ``-w[argmax_q Z_q] sum_q Z_q log softmax(logits)_q`` for
    logits and soft targets ``Z`` ``[N, Q]``, weights ``[Q]``; the mean over the N pixels, those
    with ``keep`` ``[N]`` False (gray images) counted as 0."""
    per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
    weighted = weights[target.argmax(1)] * per_pixel
    return (weighted if keep is None else weighted * keep).mean()


def colour_images(ab: Tensor, threshold: float = 5.0) -> Tensor:
    """Which images of ab maps ``[B, 2, H, W]`` have colour: some ``|a|`` or ``|b|`` above
    ``threshold`` (Zhang et al.'s non-gray mask). Bool ``[B]``."""
    return (ab.abs() > threshold).flatten(1).any(1)


class Colorization(SelfSupervisedLearner):
    """Predict the ab bins (or values) of every pixel from L (see the module text)."""

    num_views = 1

    def __init__(self, backbone: nn.Module, feat_dim: int, in_channels: int, image_size: int,
                 views: str = "crop", distance: str = "euclidean",
                 loss: str = "classification", rebalance: float = 0.5,
                 decoder_width: int = 64) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.in_channels, self.loss_kind, self.rebalance = in_channels, loss, rebalance
        self.out_size = max(1, image_size // 4)
        self.register_buffer("bins", ab_bins().clone(), persistent=False)
        q = len(self.bins)
        self.decoder = ImageDecoder(feat_dim, q if loss == "classification" else 2,
                                    self.out_size, decoder_width)
        self.register_buffer("weights", torch.ones(q))
        self.register_buffer("prior_images", torch.zeros((), dtype=torch.long))

    def lightness_input(self, lab: Tensor) -> Tensor:
        """``L / 100`` of Lab images ``[B, 3, H, W]`` in each of the backbone's channels."""
        return (lab[:, :1] / 100).expand(-1, self.in_channels, -1, -1)

    def target_ab(self, lab: Tensor) -> Tensor:
        """The ab of Lab images averaged to the output size, as pixels ``[B * h * w, 2]``."""
        ab = F.adaptive_avg_pool2d(lab[:, 1:], self.out_size)
        return ab.permute(0, 2, 3, 1).reshape(-1, 2)

    def begin_training(self, sampler: Any, steps: int) -> None:
        if self.loss_kind != "classification" or int(self.prior_images):
            return
        dataset = sampler.dataset
        index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:1024]
        counts = torch.zeros(len(self.bins), device=self.weights.device)
        for chunk in index.split(256):
            lab = rgb_to_lab(to_unit_float(dataset.load(chunk).to(self.weights.device)))
            nearest = torch.cdist(self.target_ab(lab), self.bins).argmin(1)
            counts += torch.bincount(nearest, minlength=len(self.bins)).float()
        self.weights.copy_(rebalance_weights(smoothed_prior(counts, self.bins), self.rebalance))
        self.prior_images.fill_(len(index))

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        lab = rgb_to_lab(views[0].float())
        z = self.features(self.lightness_input(lab))
        out = self.decoder(z).permute(0, 2, 3, 1).flatten(0, 2)  # [B * h * w, Q or 2]
        ab = self.target_ab(lab)
        if self.loss_kind == "regression":
            return F.mse_loss(out.float(), ab / AB_RANGE), None, z
        target = soft_encode(ab, self.bins)
        keep = colour_images(lab[:, 1:]).repeat_interleave(self.out_size ** 2)
        loss = rebalanced_cross_entropy(out, target, self.weights, keep)
        return loss, (out.argmax(1) == target.argmax(1)).float().mean(), z


@dataclass
class ColorizationConfig(SSLConfig):
    """``--method colorization``: ``loss`` classification (ab bins, rebalanced with
    ``rebalance`` = lambda) or regression; the decoder's width ``decoder_width``."""

    views: ViewName = "crop"
    loss: Literal["classification", "regression"] = "classification"
    rebalance: float = 0.5
    decoder_width: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.rebalance <= 1, "rebalance", "in [0, 1]", self.rebalance)
        check(self.decoder_width >= 1, "decoder_width", ">= 1", self.decoder_width)


@register("colorization", ColorizationConfig, "self-supervised",
          "Colourisation (Zhang et al. 2016): predict the quantised ab colour of each pixel from "
          "its lightness, rebalanced towards rare colours")
def build_colorization(spec: ModelSpec, c: ColorizationConfig) -> Colorization:
    if spec.in_channels != 3:
        raise ValueError(f"colorization predicts colour from lightness and needs RGB images, "
                         f"these have {spec.in_channels} channel(s): use an RGB dataset or "
                         f"another --method")
    return Colorization(*build_common(spec, c), spec.in_channels, spec.image_size, c.views,
                        c.distance, c.loss, c.rebalance, c.decoder_width)
