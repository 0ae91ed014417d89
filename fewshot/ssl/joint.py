"""Non-contrastive joint-embedding pre-training: BYOL, SimSiam, Barlow Twins, VICReg (two views,
no negatives; collapse avoided by a momentum target and predictor, a stop-gradient and predictor,
or decorrelation and variance terms).

Compared with the authors' code (read, not copied); projector widths are scaled down for small
backbones and CPUs (options ``proj_hidden``, ``proj_dim``; the references' widths in brackets):

* BYOL (Grill et al. 2020): projector and predictor ``Linear-BN-ReLU-Linear`` 1024 -> 256
  [4096 -> 256]; target network a momentum average of backbone and projector with decay from
  ``tau = 0.996`` up to 1 on a cosine over the run's steps; the symmetric loss
  ``byol_loss(p1, z2') + byol_loss(p2, z1')``; the BYOL views (blur 1.0 / 0.1, solarisation
  0 / 0.2). Deviation: the loop's SGD/Adam, not LARS.
* SimSiam (Chen & He 2021, facebookresearch/simsiam ``simsiam/builder.py``): projector of three
  ``Linear-BN`` layers with ReLU between and a BatchNorm without affine parameters last, all
  1024 wide [hidden layers as wide as the backbone's features, output 2048; their last linear
  layer's bias is frozen at its initial value, here there is none]; bottleneck predictor
  ``Linear-BN-ReLU-Linear`` 256 [512]; loss ``(D(p1, z2) + D(p2, z1)) / 2`` with stop-gradient on ``z``.
  Views: the SimCLR preset (theirs: MoCo v2's, jitter 0.4 instead of 0.8, crop area from 0.2).
  Deviation: the predictor's learning rate is not held fixed.
* Barlow Twins (Zbontar et al. 2021, facebookresearch/barlowtwins): projector of three layers
  2048 [8192] (``Linear-BN-ReLU`` twice, a bias-free ``Linear``), ``lambd = 0.0051`` on the
  cross-correlation of the batch-standardised embeddings; BYOL views.
* VICReg (Bardes et al. 2022, facebookresearch/vicreg): the same projector 2048 [8192],
  coefficients 25 / 25 / 1; BYOL views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from episodes.options import check

from ..models.learner import ModelSpec
from ..modules import cosine_momentum, ema_update, frozen_copy, mlp
from ..registry import register
from .base import SelfSupervisedLearner, SSLConfig, ViewName, build_common
from .losses import barlow_twins_loss, byol_loss, negative_cosine, vicreg_loss


class BYOL(SelfSupervisedLearner):
    """BYOL: online backbone -> projector -> predictor regresses the target network's
    projection of the other view (see the module text)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "byol",
                 distance: str = "euclidean", proj_hidden: int = 1024, proj_dim: int = 256,
                 tau: float = 0.996) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_hidden, proj_dim])
        self.predictor = mlp([proj_dim, proj_hidden, proj_dim])
        self.target_backbone, self.target_projector = frozen_copy(backbone), frozen_copy(
            self.projector)
        self.tau, self.total_steps = tau, 0

    def begin_training(self, sampler: Any, steps: int) -> None:
        self.total_steps = steps

    def target(self, x: Tensor) -> Tensor:
        return self.target_projector(self.target_backbone(x).flatten(1)).detach()

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, None, Tensor]:
        z1, z2 = (self.projector(self.features(v)) for v in views)
        t1, t2 = self.target(views[0]), self.target(views[1])
        return byol_loss(self.predictor(z1), t2) + byol_loss(self.predictor(z2), t1), None, z1

    def current_tau(self) -> float:
        """The target decay of the coming update (cosine from ``tau`` to 1 over the run)."""
        return cosine_momentum(self.tau, int(self.steps_done), self.total_steps)

    def end_step(self) -> None:
        tau = self.current_tau()
        super().end_step()
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)


class SimSiam(SelfSupervisedLearner):
    """SimSiam: BYOL without the momentum target, a stop-gradient instead."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str = "simclr",
                 distance: str = "euclidean", proj_dim: int = 1024, pred_hidden: int = 256
                 ) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_dim, proj_dim, proj_dim], last_bn="plain")
        self.predictor = mlp([proj_dim, pred_hidden, proj_dim])

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, None, Tensor]:
        z1, z2 = (self.projector(self.features(v)) for v in views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2, None, z1


class Decorrelation(SelfSupervisedLearner):
    """Barlow Twins or VICReg: ``loss_fn(projector(f(v1)), projector(f(v2)))``."""

    def __init__(self, backbone: nn.Module, feat_dim: int, views: str, distance: str,
                 proj_dim: int, loss_fn: Any) -> None:
        super().__init__(backbone, feat_dim, views, distance)
        self.projector = mlp([feat_dim, proj_dim, proj_dim, proj_dim], last_bias=False)
        self.loss_fn = loss_fn

    def views_loss(self, views: Tensor, index: Tensor) -> tuple[Tensor, None, Tensor]:
        z1, z2 = (self.projector(self.features(v)) for v in views)
        return self.loss_fn(z1, z2), None, z1


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        check(value >= 1, name, ">= 1", value)


@dataclass
class BYOLConfig(SSLConfig):
    """``--method byol``: projector/predictor ``proj_hidden`` -> ``proj_dim``; base target
    decay ``tau`` (raised to 1 on a cosine)."""

    views: ViewName = "byol"
    proj_hidden: int = 1024
    proj_dim: int = 256
    tau: float = 0.996

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dims(proj_hidden=self.proj_hidden, proj_dim=self.proj_dim)
        check(0 <= self.tau < 1, "tau", "in [0, 1)", self.tau)


@dataclass
class SimSiamConfig(SSLConfig):
    """``--method simsiam``: projector width ``proj_dim``, predictor bottleneck
    ``pred_hidden``."""

    proj_dim: int = 1024
    pred_hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dims(proj_dim=self.proj_dim, pred_hidden=self.pred_hidden)


@dataclass
class BarlowTwinsConfig(SSLConfig):
    """``--method barlow-twins``: projector width ``proj_dim``; off-diagonal weight ``lambd``."""

    views: ViewName = "byol"
    proj_dim: int = 2048
    lambd: float = 0.0051

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dims(proj_dim=self.proj_dim)
        check(self.lambd >= 0, "lambd", ">= 0", self.lambd)


@dataclass
class VICRegConfig(SSLConfig):
    """``--method vicreg``: projector width ``proj_dim``; invariance, variance and covariance
    coefficients."""

    views: ViewName = "byol"
    proj_dim: int = 2048
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dims(proj_dim=self.proj_dim)
        for name in ("sim_coeff", "std_coeff", "cov_coeff"):
            check(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))


@register("byol", BYOLConfig, "self-supervised",
          "BYOL (Grill et al. 2020): predict a momentum target's projection of the other view")
def build_byol(spec: ModelSpec, c: BYOLConfig) -> BYOL:
    return BYOL(*build_common(spec, c), c.views, c.distance, c.proj_hidden, c.proj_dim, c.tau)


@register("simsiam", SimSiamConfig, "self-supervised",
          "SimSiam (Chen & He 2021): predict the other view's projection, stop-gradient")
def build_simsiam(spec: ModelSpec, c: SimSiamConfig) -> SimSiam:
    return SimSiam(*build_common(spec, c), c.views, c.distance, c.proj_dim, c.pred_hidden)


@register("barlow-twins", BarlowTwinsConfig, "self-supervised",
          "Barlow Twins (Zbontar et al. 2021): cross-correlation of the views towards identity")
def build_barlow_twins(spec: ModelSpec, c: BarlowTwinsConfig) -> Decorrelation:
    return Decorrelation(*build_common(spec, c), c.views, c.distance, c.proj_dim,
                         lambda z1, z2: barlow_twins_loss(z1, z2, c.lambd))


@register("vicreg", VICRegConfig, "self-supervised",
          "VICReg (Bardes et al. 2022): invariance, variance and covariance terms")
def build_vicreg(spec: ModelSpec, c: VICRegConfig) -> Decorrelation:
    return Decorrelation(*build_common(spec, c), c.views, c.distance, c.proj_dim,
                         lambda z1, z2: vicreg_loss(z1, z2, c.sim_coeff, c.std_coeff,
                                                    c.cov_coeff))
