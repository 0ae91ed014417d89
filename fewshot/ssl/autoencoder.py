"""Autoencoder pre-training: the backbone as encoder, a decoder back to the image, mean squared
reconstruction error; plain, denoising (masking or Gaussian noise) or masked patches.

Compared with the papers and their reference code (read, not copied):

* Denoising autoencoders (Vincent et al. 2008, "Extracting and composing robust features with
  denoising autoencoders"): the input corrupted, the clean image reconstructed. Their masking
  noise sets a random fraction ``nu`` of the input components to 0 (``noise=masking``,
  ``masking`` = nu, 0.25 by default: the paper tries 0.1-0.5); additive isotropic Gaussian noise
  (``noise=gaussian``, standard deviation ``sigma``) is the other corruption of their follow-up
  (Vincent et al. 2010). Deviations: their encoder and decoder are one sigmoid layer each and the
  loss a cross-entropy for inputs in [0, 1]; here the encoder is the backbone, the decoder a
  DCGAN-style transposed-convolution stack (:class:`fewshot.ssl.decoders.ImageDecoder`, from the
  flattened features, since the backbone's output is a vector), its output through a sigmoid and
  the loss the mean squared error, as the task asks.
* Masked autoencoders (He et al. 2022, facebookresearch/mae ``models_mae.py``): patches of the
  image masked at random (75 % by default, ``mask_ratio``), the loss the mean squared error on the
  masked patches only (their ``mask`` weighting of ``forward_loss``). Deviations: their encoder is
  a ViT that drops the masked patches and a light ViT decoder fills them with mask tokens; a
  convolutional backbone cannot drop patches, so masked pixels are set to 0 in the input (as
  SimMIM, Xie et al. 2022, does for convolutional and Swin encoders); no per-patch target
  normalisation (their ``norm_pix_loss`` option); patch side ``patch_size`` (4 pixels by default,
  as the images here are small; theirs 16 of 224).

Views: ``none`` (the papers reconstruct the images themselves); the reconstructions of eight
training images, evenly spaced through the split, are written into the run folder at each
validation (``preview-step*.png``: rows original, corrupted input, reconstruction).
"""

from __future__ import annotations

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
from .decoders import ImageDecoder, image_grid
from .pretext import patch_mask

Noise = Literal["none", "masking", "gaussian", "patches"]


def corrupt(x: Tensor, noise: str, masking: float = 0.25, sigma: float = 0.1,
            mask_ratio: float = 0.75, patch_size: int = 4,
            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """The autoencoder's input from images ``x`` ``[B, C, H, W]`` in ``[0, 1]``: unchanged
    (``none``), each pixel and channel set to 0 with probability ``masking`` (``masking``),
    plus Gaussian noise of standard deviation ``sigma`` (``gaussian``), or square patches zeroed
    in every channel (``patches``, :func:`fewshot.ssl.pretext.patch_mask`). Returns the input and
    the mask of the pixels the loss is on (``[B, 1, H, W]`` bool, for ``patches``; else None:
    every pixel)."""
    if noise == "none":
        return x, None
    if noise == "masking":
        keep = torch.rand(x.shape, generator=generator).to(x.device) >= masking
        return x * keep, None
    if noise == "gaussian":
        return x + sigma * torch.randn(x.shape, generator=generator).to(x.device), None
    if noise == "patches":
        mask = patch_mask(x.shape[0], x.shape[-1], patch_size, mask_ratio, x.device, generator)
        return x.masked_fill(mask, 0.0), mask
    raise ValueError(f"noise must be none, masking, gaussian or patches, got {noise!r}")


def reconstruction_loss(output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error of ``output`` against ``target`` ``[B, C, H, W]``, over every element,
    or with ``mask`` ``[B, 1, H, W]`` over the masked pixels' elements only (MAE)."""
    if mask is None:
        return F.mse_loss(output, target)
    se = (output - target).pow(2) * mask
    return se.sum() / (mask.sum() * output.shape[1]).clamp(min=1)


class Autoencoder(SelfSupervisedLearner):
    """The backbone encodes, :class:`~fewshot.ssl.decoders.ImageDecoder` decodes (sigmoid)."""

    num_views = 1

    def __init__(self, backbone: nn.Module, feat_dim: int, in_channels: int, image_size: int,
                 views: str = "none", distance: str = "euclidean", noise: str = "none",
                 masking: float = 0.25, sigma: float = 0.1, mask_ratio: float = 0.75,
                 patch_size: int = 4, decoder_width: int = 64) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.decoder = ImageDecoder(feat_dim, in_channels, image_size, decoder_width)
        self.noise, self.masking, self.sigma = noise, masking, sigma
        self.mask_ratio, self.patch_size = mask_ratio, patch_size
        self.register_buffer("shown", torch.zeros(0), persistent=False)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` -> reconstructions, the same shape, in ``(0, 1)``."""
        return torch.sigmoid(self.decoder(self.features(x)))

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, None, Tensor]:
        x = views[0]
        inputs, mask = corrupt(x, self.noise, self.masking, self.sigma, self.mask_ratio,
                               self.patch_size)
        z = self.features(inputs)
        out = torch.sigmoid(self.decoder(z))
        return reconstruction_loss(out, x, mask), None, z

    def begin_training(self, sampler: Any, steps: int) -> None:
        dataset = sampler.dataset
        index = torch.linspace(0, len(dataset) - 1, min(8, len(dataset))).round().long()
        self.shown = to_unit_float(dataset.load(index)).to(self.shown.device)

    @torch.no_grad()
    def preview(self) -> Tensor | None:
        if not len(self.shown):
            return None
        was_training = self.training
        self.eval()
        inputs, _ = corrupt(self.shown, self.noise, self.masking, self.sigma, self.mask_ratio,
                            self.patch_size, torch.Generator().manual_seed(0))
        out = self.reconstruct(inputs)
        self.train(was_training)
        return image_grid(torch.cat([self.shown, inputs.clamp(0, 1), out]), rows=3)


@dataclass
class AutoencoderConfig(SSLConfig):
    """``--method autoencoder``: ``noise`` none|masking|gaussian|patches (plain, denoising with
    masking noise of fraction ``masking`` or Gaussian noise ``sigma``, masked patches of side
    ``patch_size`` with ``mask_ratio`` of them masked); the decoder's width ``decoder_width``."""

    views: ViewName = "none"
    noise: Noise = "none"
    masking: float = 0.25
    sigma: float = 0.1
    mask_ratio: float = 0.75
    patch_size: int = 4
    decoder_width: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.masking < 1, "masking", "in [0, 1)", self.masking)
        check(self.sigma >= 0, "sigma", ">= 0", self.sigma)
        check(0 < self.mask_ratio < 1, "mask_ratio", "in (0, 1)", self.mask_ratio)
        check(self.patch_size >= 1, "patch_size", ">= 1", self.patch_size)
        check(self.decoder_width >= 1, "decoder_width", ">= 1", self.decoder_width)


@register("autoencoder", AutoencoderConfig, "self-supervised",
          "Autoencoder: reconstruct the image from the backbone's features; denoising (Vincent "
          "et al. 2008) or masked patches (MAE-style) as options")
def build_autoencoder(spec: ModelSpec, c: AutoencoderConfig) -> Autoencoder:
    return Autoencoder(*build_common(spec, c), spec.in_channels, spec.image_size, c.views,
                       c.distance, c.noise, c.masking, c.sigma, c.mask_ratio, c.patch_size,
                       c.decoder_width)
