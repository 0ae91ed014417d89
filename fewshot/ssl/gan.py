"""GAN pre-training (DCGAN, Radford et al. 2016): a generator against a discriminator whose trunk
is the backbone; the trunk is what transfers (the checkpoint's ``backbone``), as the paper used
the discriminator's features for classification.

Two players, one training loop: the loop takes one optimizer step per batch, so the learner
alternates its loss by step (``steps_done``, a buffer: resumes keep the rhythm): on even steps
the discriminator's loss, ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` with the fake images detached; on
odd steps the generator's non-saturating loss ``BCE(D(G(z)), 1)``, computed with the
discriminator's parameters not requiring a gradient. Each step therefore gives gradients to one
player only; Adam skips parameters without a gradient entirely (no moment update, no step count),
so one Adam over both players is exactly two Adams stepping in turn, the DCGAN schedule (one
discriminator step, then one generator step). The DCGAN recipe's Adam ``beta1 = 0.5`` (option
``beta1``) comes through the learner's optimizer parameter groups
(:meth:`fewshot.models.learner.EpisodicLearner.param_groups`); its learning rate 2e-4 is the
command's ``--optimizer adam --lr 2e-4`` (the docs' example). A run of ``--steps N`` is N / 2
DCGAN iterations.

Compared with the paper and the reference implementation (pytorch/examples ``dcgan/main.py``,
read, not copied): noise ``z ~ N(0, 1)`` of 100 dimensions (``noise_dim``); generator
transposed convolutions of kernel 4 / stride 2 with BatchNorm and ReLU
(:class:`fewshot.ssl.decoders.ImageDecoder`, which also ends at sizes that are not powers of 2),
a sigmoid for images in [0, 1] (their tanh for [-1, 1]: the same up to scale); real and fake
batches through the discriminator separately (separate BatchNorm statistics), labels 1 / 0;
weights N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales (their ``weights_init``), on
the generator and the discriminator's linear output (the backbone keeps its own initialisation);
their generator step reuses the discriminator step's fake batch, here it draws new noise (the two
steps are separate batches of the loop).
Deviations: the discriminator is the backbone (Conv-4: ReLU and max-pooling; theirs strided
convolutions with LeakyReLU 0.2 and no BatchNorm on the first layer) with a linear output on its
flattened features; no spectral normalisation (it would rename the backbone's weights and break
``--init``). The discriminator's accuracy (real called real, fakes called fake) is the logged
``acc``; ``loss_d`` and ``loss_g`` the players' last losses. Samples of 32 fixed noise vectors
are written into the run folder at each validation (``preview-step*.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ..models.learner import ModelSpec
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .decoders import ImageDecoder, image_grid


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolution and linear weights N(0, 0.02), BatchNorm scales
    N(1, 0.02) and shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@contextmanager
def no_parameter_grad(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s parameters do not require a gradient (a graph built here carries no
    gradient to them, whenever its backward runs); restored on exit."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """``BCE(real, 1) + BCE(fake, 0)`` of discriminator logits ``[B]`` (each a batch mean)."""
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake: Tensor) -> Tensor:
    """The non-saturating generator loss ``BCE(fake, 1)`` of discriminator logits ``[B]``."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


class GAN(SelfSupervisedLearner):
    """DCGAN with the backbone as the discriminator's trunk (see the module text)."""

    num_views = 1

    def __init__(self, backbone: nn.Module, feat_dim: int, in_channels: int, image_size: int,
                 views: str = "none", distance: str = "euclidean", noise_dim: int = 100,
                 width: int = 64, beta1: float = 0.5) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.critic = nn.Linear(feat_dim, 1)
        self.generator = ImageDecoder(noise_dim, in_channels, image_size, width)
        dcgan_init(self.generator)
        dcgan_init(self.critic)
        self.noise_dim, self.beta1 = noise_dim, beta1
        fixed = torch.randn(32, noise_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("fixed_noise", fixed, persistent=False)
        self._losses: dict[str, float] = {}

    def discriminate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[B]`` (real) of images ``[B, C, H, W]`` and their trunk features ``[B, D]``."""
        f = self.features(x)
        return self.critic(f).squeeze(1), f

    def generate(self, z: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in ``(0, 1)`` from noise ``[B, noise_dim]``."""
        return torch.sigmoid(self.generator(z))

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad],
                 "betas": (self.beta1, 0.999)}]

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        real = views[0]
        z = torch.randn(real.shape[0], self.noise_dim, device=real.device)
        if int(self.steps_done) % 2 == 0:  # the discriminator's step
            real_logits, f = self.discriminate(real)
            fake_logits, _ = self.discriminate(self.generate(z).detach())
            loss = discriminator_loss(real_logits, fake_logits)
            acc = torch.cat([real_logits > 0, fake_logits < 0]).float().mean()
            self._losses["loss_d"] = loss.detach()
            return loss, acc, f
        with no_parameter_grad(self.backbone), no_parameter_grad(self.critic):
            fake_logits, f = self.discriminate(self.generate(z))
        loss = generator_loss(fake_logits)
        self._losses["loss_g"] = loss.detach()
        return loss, (fake_logits < 0).float().mean(), f

    def train_metrics(self) -> dict[str, float]:
        return {**super().train_metrics(), **{k: float(v) for k, v in self._losses.items()}}

    @torch.no_grad()
    def preview(self) -> Tensor:
        was_training = self.training
        self.eval()
        samples = self.generate(self.fixed_noise)
        self.train(was_training)
        return image_grid(samples, rows=4)


@dataclass
class GANConfig(SSLConfig):
    """``--method gan``: the noise's dimension ``noise_dim``, the generator's width ``width``
    (its first layer ``4 * width`` channels), Adam's ``beta1`` for both players (DCGAN: 0.5;
    with ``--optimizer adam``)."""

    views: ViewName = "none"
    noise_dim: int = 100
    width: int = 64
    beta1: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.noise_dim >= 1, "noise_dim", ">= 1", self.noise_dim)
        check(self.width >= 1, "width", ">= 1", self.width)
        check(0 <= self.beta1 < 1, "beta1", "in [0, 1)", self.beta1)


@register("gan", GANConfig, "self-supervised",
          "DCGAN (Radford et al. 2016): a generator against a discriminator whose trunk is the "
          "backbone")
def build_gan(spec: ModelSpec, c: GANConfig) -> GAN:
    return GAN(*build_common(spec, c), spec.in_channels, spec.image_size, c.views, c.distance,
               c.noise_dim, c.width, c.beta1)
