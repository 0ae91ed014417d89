"""Noisy Student (Xie et al. 2020, "Self-training with Noisy Student improves ImageNet
classification"; google-research/noisystudent, read, not copied; USB has no implementation).

The run's steps are split into ``rounds + 1`` equal phases. In the first the model learns from
the labelled images alone: it is the first teacher. At the start of every later phase the
teacher becomes a frozen copy of the model so far (weights and BatchNorm statistics), and the
model, now the student, learns from the labelled images and from the teacher's predictions on
the unlabelled ones. The teacher is not noised: it runs in evaluation mode on the clean images.
The student is: strong views (RandAugment and Cutout, :mod:`episodes.randaugment`; the paper's
RandAugment at magnitude 27, here FixMatch's random magnitudes), dropout before the classifier
(the paper's 0.5) and stochastic depth on the residual blocks of backbones built of
:class:`fewshot.models.backbones.ResidualBlock` (ResNet-12; the final block survives with
probability 0.8 and earlier ones by the linear rule, as the paper; other backbones have none).
Pseudo-labels are soft by default (the paper's better choice), ``hard_label=true`` their argmax;
images whose teacher confidence is under ``threshold`` are left out (the paper: 0.3 on ImageNet;
here 0). Loss: cross-entropy on labelled images plus ``lambda_u`` times the (soft) cross-entropy
on unlabelled ones, averaged over each batch. Deviations: the student continues from the
teacher's weights instead of starting afresh at an equal or larger size, and the paper's class
balancing of the pseudo-labelled data (duplicating or dropping images per class) is not done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from episodes.options import check

from ..models.backbones import ResidualBlock
from ..models.learner import ModelSpec
from ..modules import frozen_copy
from ..registry import register
from .base import STRONG, SemiSupConfig, SemiSupervisedLearner, build_common, supervised
from .losses import confidence_mask, masked_consistency


def add_stochastic_depth(backbone: nn.Module, last_survival: float) -> int:
    """Drop the residual branch (``body``) of every :class:`ResidualBlock` of ``backbone`` per
    image in training, block ``l`` of ``L`` surviving with probability ``1 - l / L (1 -
    last_survival)`` and scaled by its inverse when kept; returns the number of blocks."""
    blocks = [m for m in backbone.modules() if isinstance(m, ResidualBlock)]
    for i, block in enumerate(blocks, 1):
        survival = 1 - i / len(blocks) * (1 - last_survival)

        def hook(module: nn.Module, args: tuple, out: Tensor, p: float = survival) -> Tensor:
            if not module.training or p >= 1:
                return out
            keep = torch.rand(out.shape[0], *(1,) * (out.dim() - 1), device=out.device) < p
            return out * keep.to(out.dtype) / p
        block.body.register_forward_hook(hook)
    return len(blocks)


class NoisyStudent(SemiSupervisedLearner):
    """Noisy Student self-training for ``rounds`` student rounds (see the module text)."""

    labelled_view = STRONG
    unlabelled_views = (None, STRONG)  # clean for the teacher, strong for the student

    def __init__(self, backbone: nn.Module, feat_dim: int, rounds: int = 2, dropout: float = 0.5,
                 survival: float = 0.8, hard_label: bool = False, threshold: float = 0.0,
                 **common) -> None:
        super().__init__(backbone, feat_dim, **common)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_classifier = frozen_copy(self.classifier)
        self.dropout = nn.Dropout(dropout)
        self.stochastic_blocks = add_stochastic_depth(self.backbone, survival)
        self.rounds, self.hard, self.threshold = rounds, hard_label, threshold
        self.register_buffer("teacher_round", torch.zeros((), dtype=torch.long))

    def logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.backbone(x).flatten(1)))

    def phase(self) -> int:
        """The phase of the coming step: 0 (the first teacher), then student rounds 1..R."""
        if not self.total_steps:
            return int(self.teacher_round)
        return min(int(self.steps_done) * (self.rounds + 1) // self.total_steps, self.rounds)

    def semi_loss(self, batch: SemiSupervisedBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if int(self.teacher_round) == 0:  # the first teacher: labelled images only
            sup, acc = supervised(self.logits(batch.images), batch.labels)
            return sup, acc, {"sup_loss": sup.detach(), "round": self.teacher_round.float()}
        self.teacher_backbone.eval()
        with torch.no_grad():
            target = self.teacher_classifier(self.teacher_backbone(batch.views[0]).flatten(1))
        out = self.logits(torch.cat([batch.images, batch.views[1]]))
        sup, acc = supervised(out[:len(batch.images)], batch.labels)
        probs = target.softmax(-1)
        mask = confidence_mask(probs, self.threshold)
        unsup = masked_consistency(out[len(batch.images):],
                                   probs.argmax(-1) if self.hard else probs, mask)
        return sup + self.lambda_u * unsup, acc, {
            "sup_loss": sup.detach(), "unsup_loss": unsup.detach(), "mask": mask.mean(),
            "round": self.teacher_round.float()}

    def begin_training(self, sampler: object, steps: int) -> None:
        super().begin_training(sampler, steps)
        self.update_teacher()

    def end_step(self) -> None:
        super().end_step()
        self.update_teacher()

    def update_teacher(self) -> None:
        """At the start of a new round, the teacher becomes a copy of the model."""
        if self.phase() > int(self.teacher_round):
            self.teacher_backbone.load_state_dict(self.backbone.state_dict())
            self.teacher_classifier.load_state_dict(self.classifier.state_dict())
            self.teacher_round.fill_(self.phase())


@dataclass
class NoisyStudentConfig(SemiSupConfig):
    """Noisy Student's options (and :class:`~fewshot.semisup.base.SemiSupConfig`'s).

    Attributes:
        rounds: student rounds after the first teacher's (the run's steps split in rounds + 1).
        dropout: before the student's classifier.
        survival: stochastic depth: the last residual block's survival probability (1: off).
        hard_label: the teacher's argmax as target (false: its distribution).
        threshold: smallest teacher confidence of a kept unlabelled image.
    """

    mu: int = 3
    rounds: int = 2
    dropout: float = 0.5
    survival: float = 0.8
    hard_label: bool = False
    threshold: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.rounds >= 1, "rounds", ">= 1", self.rounds)
        check(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        check(0 < self.survival <= 1, "survival", "in (0, 1]", self.survival)
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)


@register("noisy-student", NoisyStudentConfig, "semi-supervised",
          "Xie et al. 2020: rounds of a clean teacher's pseudo-labels for a noised student")
def _noisy_student(spec: ModelSpec, c: NoisyStudentConfig) -> NoisyStudent:
    backbone, dim, common = build_common(spec, c)
    return NoisyStudent(backbone, dim, c.rounds, c.dropout, c.survival, c.hard_label,
                        c.threshold, **common)
