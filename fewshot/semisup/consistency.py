"""Weak-to-strong consistency: FixMatch (Sohn et al. 2020) and UDA (Xie et al. 2020).

Both predict on a weak view (flip and shift) of each unlabelled image, keep the confident
predictions, and train the prediction on a strong view (RandAugment and Cutout, batched on the
device: :mod:`episodes.randaugment`) towards them. Compared point by point with USB
(microsoft/Semi-supervised-learning, read, not copied) and the papers:

* FixMatch, USB ``semilearn/algorithms/fixmatch/fixmatch.py``: labelled, weak and strong images
  in one forward pass (USB ``use_cat``); the weak view's probabilities without gradient; mask
  ``max p >= p_cutoff`` (0.95); target its argmax (``hard_label=True``; ``hard_label=false``:
  ``softmax(logits / T)``, T 0.5; USB's soft option passes ``T`` but, with ``softmax=False``, its
  hook returns the probabilities unsharpened, ours at T 1); masked cross-entropy on the strong
  view averaged over all ``mu B`` images; ``lambda_u`` 1; ``mu`` 7. Same as USB and the paper
  (``benchmarks/usb_fixmatch.py`` runs USB's own ``train_step`` beside it).
* UDA, USB ``semilearn/algorithms/uda/uda.py`` and google-research/uda: the target is the weak
  view's prediction sharpened with temperature 0.4 (``softmax(logits / 0.4)``, the original's
  ``uda_softmax_temp``; USB passes ``T`` but with ``softmax=False`` its hook returns the
  unsharpened probabilities), kept where the (unsharpened) ``max p >= p_cutoff`` (0.8, USB's
  default and the original's ``uda_confidence_thresh``); soft cross-entropy on the strong view
  (the KL divergence up to a constant, as USB); ``lambda_u`` 1; optional training-signal
  annealing of the labelled loss (``tsa=linear|exp|log``, default ``none`` as USB): labelled
  images whose correct-class probability exceeds the threshold are left out (the original's
  rule; USB compares the largest probability), the loss still averaged over the whole batch.
  Deviation from the paper's CIFAR setting: ``mu`` 7 (USB), not 15.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from episodes.options import check
from episodes.randaugment import WEAK

from ..functional import accuracy
from ..models.learner import ModelSpec
from ..registry import register
from .base import STRONG, SemiSupConfig, SemiSupervisedLearner, build_common, supervised
from .losses import confidence_mask, masked_consistency, tsa_threshold


class WeakStrong(SemiSupervisedLearner):
    """FixMatch (``sharpen_t`` None with ``hard=True``) or UDA (soft, ``sharpen_t`` 0.4):
    masked consistency of the strong view with the weak view's prediction."""

    unlabelled_views = (WEAK, STRONG)

    def __init__(self, backbone: nn.Module, feat_dim: int, threshold: float, hard: bool,
                 temperature: float, tsa: str = "none", **common) -> None:
        super().__init__(backbone, feat_dim, **common)
        self.threshold, self.hard, self.temperature, self.tsa = threshold, hard, temperature, tsa

    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        lab, unl = self.labelled_and_views(batch)
        weak, strong = unl[0].detach(), unl[1]
        if self.tsa == "none":
            sup, acc = supervised(lab, batch.labels)
        else:
            limit = tsa_threshold(self.tsa, self.progress(), self.num_classes)
            correct = lab.detach().softmax(-1).gather(1, batch.labels[:, None]).squeeze(1)
            keep = (correct <= limit).to(lab.dtype)
            sup = (F.cross_entropy(lab, batch.labels, reduction="none") * keep).mean()
            acc = accuracy(lab, batch.labels)
        probs = weak.softmax(-1)
        mask = confidence_mask(probs, self.threshold)
        target = probs.argmax(-1) if self.hard else (weak / self.temperature).softmax(-1)
        unsup = masked_consistency(strong, target, mask)
        return sup + self.lambda_u * unsup, acc, {
            "sup_loss": sup.detach(), "unsup_loss": unsup.detach(), "mask": mask.mean()}


@dataclass
class FixMatchConfig(SemiSupConfig):
    """FixMatch's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        threshold: confidence of a kept pseudo-label (0.95).
        hard_label: the weak view's argmax as target (true), or its distribution at ``T``.
        T: temperature of the soft target (``hard_label=false``).
    """

    threshold: float = 0.95
    hard_label: bool = True
    T: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)
        check(self.T > 0, "T", "> 0", self.T)


@register("fixmatch", FixMatchConfig, "semi-supervised",
          "Sohn et al. 2020: confident weak-view pseudo-labels as targets of strong views")
def _fixmatch(spec: ModelSpec, c: FixMatchConfig) -> WeakStrong:
    backbone, dim, common = build_common(spec, c)
    return WeakStrong(backbone, dim, c.threshold, c.hard_label, c.T, **common)


@dataclass
class UDAConfig(SemiSupConfig):
    """UDA's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        threshold: confidence of a kept prediction (0.8).
        T: sharpening temperature of the target (0.4).
        tsa: training-signal annealing of the labelled loss: none, linear, exp or log.
    """

    threshold: float = 0.8
    T: float = 0.4
    tsa: Literal["none", "linear", "exp", "log"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)
        check(self.T > 0, "T", "> 0", self.T)


@register("uda", UDAConfig, "semi-supervised",
          "Xie et al. 2020: sharpened weak-view predictions as soft targets of strong views")
def _uda(spec: ModelSpec, c: UDAConfig) -> WeakStrong:
    backbone, dim, common = build_common(spec, c)
    return WeakStrong(backbone, dim, c.threshold, False, c.T, c.tsa, **common)

