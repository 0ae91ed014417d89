"""Pseudo-Label (Lee 2013), with entropy minimisation (Grandvalet & Bengio 2005) as an option, and
Mean Teacher (Tarvainen & Valpola 2017).

Compared point by point with USB (microsoft/Semi-supervised-learning, read, not copied) and the
papers:

* Pseudo-Label, USB ``semilearn/algorithms/pseudolabel/pseudolabel.py``: the model's own hard
  prediction on the weak view of an unlabelled image is its target (``use_hard_label=True``),
  kept only when its probability is at least ``p_cutoff`` (USB: 0.95, ``FixedThresholdingHook``;
  Lee 2013 had none: ``threshold=0``), cross-entropy on the same view, weight ``lambda_u``
  (1) times a linear warm-up over the first ``unsup_warm_up`` (0.4) of the run (Lee 2013: 0 up
  to epoch 100, then linear to 3 at epoch 600). Same as USB. Deviation: one forward pass of
  labelled and unlabelled images together; USB freezes the BatchNorm statistics for the
  unlabelled pass (``bn_controller.freeze_bn``), so its running statistics come from labelled
  images only. ``entropy_weight`` (0: off) adds the mean entropy of the unlabelled predictions
  (Grandvalet & Bengio's entropy minimisation; not in USB's Pseudo-Label).
* Mean Teacher, USB ``semilearn/algorithms/meanteacher/meanteacher.py``: the teacher is an
  exponential moving average of the student's weights (USB ``ema_m`` 0.999, paper 0.99 then
  0.999), :func:`fewshot.modules.ema_update` after every step; consistency cost the squared
  distance of the softmaxes, divided by the classes (USB ``consistency_loss(..., 'mse')``),
  between the student's prediction on one weak view and the teacher's on another; weight
  ``lambda_u`` (USB's default config 50) times a ramp-up over the first ``unsup_warm_up`` (0.4)
  of the run: ``sigmoid`` ``exp(-5 (1 - t)^2)`` (the paper's) or ``linear`` (USB's).
  Deviations: USB's student term takes ``outs_x_ulb_w['logits']`` (the teacher's own output) where
  the paper has the student's; here it is the student's, on a second weak view (the paper's two
  noisy views; USB feeds its strong view). The teacher runs in training mode with BatchNorm
  statistics of its own batch (USB swaps in the EMA weights and freezes BatchNorm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from episodes.options import check
from episodes.randaugment import WEAK

from ..models.learner import ModelSpec
from ..modules import ema_update, frozen_copy
from ..registry import register
from .base import SemiSupConfig, SemiSupervisedLearner, build_common, supervised
from .losses import confidence_mask, entropy, linear_rampup, masked_consistency, sigmoid_rampup, softmax_mse


class PseudoLabel(SemiSupervisedLearner):
    """Pseudo-Label with a confidence threshold and optional entropy minimisation."""

    def __init__(self, backbone: nn.Module, feat_dim: int, threshold: float = 0.95,
                 unsup_warm_up: float = 0.4, entropy_weight: float = 0.0, **common) -> None:
        super().__init__(backbone, feat_dim, **common)
        self.threshold, self.unsup_warm_up = threshold, unsup_warm_up
        self.entropy_weight = entropy_weight

    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        lab, unl = self.labelled_and_views(batch)
        sup, acc = supervised(lab, batch.labels)
        u = unl[0]
        probs = u.detach().softmax(-1)
        mask = confidence_mask(probs, self.threshold)
        unsup = masked_consistency(u, probs.argmax(-1), mask)
        weight = self.lambda_u * linear_rampup(int(self.steps_done),
                                               self.unsup_warm_up * self.total_steps)
        loss = sup + weight * unsup
        ent = entropy(u)
        if self.entropy_weight:
            loss = loss + self.entropy_weight * ent
        return loss, acc, {"sup_loss": sup.detach(), "unsup_loss": unsup.detach(), "mask": mask.mean(),
                           "entropy": ent.detach()}


@dataclass
class PseudoLabelConfig(SemiSupConfig):
    """Pseudo-Label's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        threshold: smallest probability of a kept pseudo-label (USB 0.95; Lee 2013: 0).
        unsup_warm_up: fraction of the run over which the unlabelled weight rises linearly.
        entropy_weight: weight of the entropy of the unlabelled predictions (0: off).
    """

    mu: int = 1
    threshold: float = 0.95
    unsup_warm_up: float = 0.4
    entropy_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)
        check(0 <= self.unsup_warm_up <= 1, "unsup_warm_up", "in [0, 1]", self.unsup_warm_up)
        check(self.entropy_weight >= 0, "entropy_weight", ">= 0", self.entropy_weight)


@register("pseudo-label", PseudoLabelConfig, "semi-supervised",
          "Lee 2013: confident predictions on unlabelled images as targets (+ entropy "
          "minimisation)")
def _pseudo_label(spec: ModelSpec, c: PseudoLabelConfig) -> PseudoLabel:
    backbone, dim, common = build_common(spec, c)
    return PseudoLabel(backbone, dim, c.threshold, c.unsup_warm_up, c.entropy_weight, **common)


class MeanTeacher(SemiSupervisedLearner):
    """Mean Teacher: an EMA teacher's predictions as the student's consistency targets."""

    unlabelled_views = (WEAK, WEAK)

    def __init__(self, backbone: nn.Module, feat_dim: int, ema: float = 0.999,
                 unsup_warm_up: float = 0.4, rampup: str = "sigmoid", **common) -> None:
        super().__init__(backbone, feat_dim, **common)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_classifier = frozen_copy(self.classifier)
        self.ema, self.unsup_warm_up, self.rampup = ema, unsup_warm_up, rampup

    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        student = self.logits(torch.cat([batch.images, batch.views[0]]))
        lab, unl = student[:len(batch.images)], student[len(batch.images):]
        with torch.no_grad():
            target = self.teacher_classifier(self.teacher_backbone(batch.views[1]).flatten(1))
        sup, acc = supervised(lab, batch.labels)
        unsup = softmax_mse(unl, target.softmax(-1))
        ramp = (sigmoid_rampup if self.rampup == "sigmoid" else linear_rampup)(
            int(self.steps_done), self.unsup_warm_up * self.total_steps)
        loss = sup + self.lambda_u * ramp * unsup
        return loss, acc, {"sup_loss": sup.detach(), "unsup_loss": unsup.detach(),
                           "ramp": torch.tensor(ramp)}

    def end_step(self) -> None:
        super().end_step()
        ema_update(self.teacher_backbone, self.backbone, self.ema)
        ema_update(self.teacher_classifier, self.classifier, self.ema)


@dataclass
class MeanTeacherConfig(SemiSupConfig):
    """Mean Teacher's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        ema: the teacher's decay per step.
        unsup_warm_up: fraction of the run over which the consistency weight ramps up.
        rampup: its shape, ``sigmoid`` (the paper's) or ``linear`` (USB's).
    """

    mu: int = 1
    lambda_u: float = 50.0
    ema: float = 0.999
    unsup_warm_up: float = 0.4
    rampup: Literal["sigmoid", "linear"] = "sigmoid"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.ema < 1, "ema", "in [0, 1)", self.ema)
        check(0 <= self.unsup_warm_up <= 1, "unsup_warm_up", "in [0, 1]", self.unsup_warm_up)


@register("mean-teacher", MeanTeacherConfig, "semi-supervised",
          "Tarvainen & Valpola 2017: consistency with an exponential-moving-average teacher")
def _mean_teacher(spec: ModelSpec, c: MeanTeacherConfig) -> MeanTeacher:
    backbone, dim, common = build_common(spec, c)
    return MeanTeacher(backbone, dim, c.ema, c.unsup_warm_up, c.rampup, **common)
