"""MixMatch (Berthelot et al. 2019).

Compared point by point with USB ``semilearn/algorithms/mixmatch/mixmatch.py`` (read, not copied)
and the paper (google-research/mixmatch):

* label guessing: the mean softmax of the model's predictions on ``K`` weak views of each
  unlabelled image (paper and USB: K = 2), without gradient, sharpened with ``T`` 0.5;
* MixUp of the labelled batch (one-hot labels) and the ``K`` unlabelled views (their guess each)
  with a random permutation of all of them, ``lam ~ Beta(alpha, alpha)``, ``lam' = max(lam, 1 -
  lam)`` (``alpha`` 0.75: the paper's CIFAR value; USB's default 0.5); one ``lam`` per step, as
  both;
* losses: soft cross-entropy on the mixed labelled part, the squared distance of the softmax to
  the mixed guesses divided by the classes on the unlabelled part (USB ``'mse'``); weight
  ``lambda_u`` 100 (USB's CIFAR-10 config) times a linear ramp-up over the first
  ``unsup_warm_up`` of the run: 1/64 (USB's code default, the paper's 16 000 of 1 048 576
  steps; USB's configs: 0.4).
* Deviations: the mixed batches go through the model in one pass (USB: the labelled part with
  BatchNorm updates, the unlabelled parts with BatchNorm frozen; the paper interleaves the
  batches so every BatchNorm batch mixes both); ``mu`` 1 (both papers: equal batch sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from episodes.options import check
from episodes.randaugment import WEAK

from ..functional import accuracy
from ..models.learner import ModelSpec
from ..registry import register
from .base import SemiSupConfig, SemiSupervisedLearner, build_common
from .losses import guess_labels, linear_rampup, mixup, soft_cross_entropy, softmax_mse


class MixMatch(SemiSupervisedLearner):
    """MixMatch: guessed labels of K weak views, MixUp of labelled and unlabelled images."""

    def __init__(self, backbone: nn.Module, feat_dim: int, k: int = 2, T: float = 0.5,
                 alpha: float = 0.75, unsup_warm_up: float = 1 / 64, **common) -> None:
        super().__init__(backbone, feat_dim, **common)
        self.unlabelled_views = (WEAK,) * k
        self.T, self.alpha, self.unsup_warm_up = T, alpha, unsup_warm_up

    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        b, (k, u) = len(batch.images), batch.views.shape[:2]
        with torch.no_grad():
            guess = guess_labels(self.logits(batch.views.flatten(0, 1)).view(k, u, -1), self.T)
        x = torch.cat([batch.images, batch.views.flatten(0, 1)])
        y = torch.cat([F.one_hot(batch.labels, self.num_classes).to(guess), guess.repeat(k, 1)])
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        mixed_x, mixed_y = mixup(x, y, lam, torch.randperm(len(x), device=x.device))
        logits = self.logits(mixed_x)
        sup = soft_cross_entropy(logits[:b], mixed_y[:b]).mean()
        unsup = softmax_mse(logits[b:], mixed_y[b:])
        ramp = linear_rampup(int(self.steps_done), self.unsup_warm_up * self.total_steps)
        acc = accuracy(logits[:b].detach(), batch.labels)  # its label weighs lam' >= 1/2
        return sup + self.lambda_u * ramp * unsup, acc, {
            "sup_loss": sup.detach(), "unsup_loss": unsup.detach(), "lambda": torch.tensor(lam)}


@dataclass
class MixMatchConfig(SemiSupConfig):
    """MixMatch's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        k: weak views per unlabelled image.
        T: sharpening temperature of the guessed labels.
        alpha: of the Beta distribution of MixUp.
        unsup_warm_up: fraction of the run over which the unlabelled weight rises linearly.
    """

    mu: int = 1
    lambda_u: float = 100.0
    k: int = 2
    T: float = 0.5
    alpha: float = 0.75
    unsup_warm_up: float = 1 / 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 1, "k", ">= 1", self.k)
        check(self.T > 0, "T", "> 0", self.T)
        check(self.alpha > 0, "alpha", "> 0", self.alpha)
        check(0 <= self.unsup_warm_up <= 1, "unsup_warm_up", "in [0, 1]", self.unsup_warm_up)


@register("mixmatch", MixMatchConfig, "semi-supervised",
          "Berthelot et al. 2019: sharpened guesses of weak views, MixUp of labelled and "
          "unlabelled")
def _mixmatch(spec: ModelSpec, c: MixMatchConfig) -> MixMatch:
    backbone, dim, common = build_common(spec, c)
    return MixMatch(backbone, dim, c.k, c.T, c.alpha, c.unsup_warm_up, **common)
