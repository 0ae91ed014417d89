"""Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

With ``distance=cosine`` and ``learn_scale=true`` this is Chen et al. 2021's Meta-Baseline
(few-shot-meta-baseline ``models/meta_baseline.py``, read, not copied): cosine similarity to the
class means times a learned temperature starting at 10, meta-trained from a pre-trained backbone
(``fewshot train --init best.pt``, :mod:`fewshot.methods.classifier`). Same, except their
temperature also multiplies squared Euclidean distances (``scale``; here 1 unless given), and
BatchNorm: their encoder takes the images of a step's episodes (4 in their configs) as one
batch, so its statistics are those of the whole step; here each episode is normalised on its
own by default (:mod:`fewshot.models.episode_norm`: the papers' one-episode steps, and a step of T
episodes trains as T single ones). Option ``step_norm=true`` normalises as they do (the step's
T episodes then cannot be split into forwards of fewer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from episodes.options import check

from ..functional import cosine_logits, euclidean_logits, protonet_logits, prototypes
from ..models.backbones import spec_backbone
from ..models.learner import BackboneLearner, ModelSpec
from ..modules import add_rotation
from ..registry import register

# the pure functions live in fewshot.functional; named here too, where ProtoNet's readers look
__all__ = ["ProtoNet", "ProtoNetConfig", "build_protonet", "cosine_logits", "euclidean_logits",
           "protonet_logits", "prototypes"]


class ProtoNet(BackboneLearner):
    """A backbone plus :func:`protonet_logits`, batched over the T episodes of a step."""

    def __init__(self, backbone: nn.Module, distance: str = "euclidean",
                 scale: float | None = None, learn_scale: bool = False,
                 step_norm: bool = False) -> None:
        super().__init__()
        self.per_episode_norm, self.step_statistics = not step_norm, step_norm
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.backbone, self.distance = backbone, distance
        if learn_scale:
            start = scale if scale is not None else (10.0 if distance == "cosine" else 1.0)
            self.scale: float | Tensor | None = nn.Parameter(torch.tensor(float(start)))
        else:
            self.scale = scale

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        return protonet_logits(support.flatten(2), support_y, query.flatten(2), n_way,
                               self.distance, self.scale)


@dataclass
class ProtoNetConfig:
    """Options of ``--method protonet``: ``distance`` between queries and prototypes; ``scale``
    of the logits (none: 1 for Euclidean, 10 for cosine); ``learn_scale``: learn it, starting
    there (Meta-Baseline: ``distance=cosine learn_scale=true``); ``hidden`` (Conv-4 width;
    None: 64); ``rotation_weight``: rotation prediction as an auxiliary loss of this weight
    (Gidaris et al. 2019 use 1; 0: off; :meth:`BackboneLearner.add_rotation_loss`);
    ``step_norm``: BatchNorm statistics over all the step's episodes together, as the authors'
    Meta-Baseline code (default: per episode, see the module text)."""

    distance: Literal["euclidean", "cosine"] = "euclidean"
    hidden: int | None = None
    scale: float | None = None
    learn_scale: bool = False
    rotation_weight: float = 0.0
    step_norm: bool = False

    def __post_init__(self) -> None:
        check(self.hidden is None or self.hidden >= 1, "hidden", ">= 1 (conv4 width)", self.hidden)
        check(self.rotation_weight >= 0, "rotation_weight", ">= 0", self.rotation_weight)
        check(self.scale is None or self.scale > 0, "scale", "> 0 (logits times 0 are all 0)",
              self.scale)


@register("protonet", ProtoNetConfig, "episodic",
          "Prototypical Networks (Snell et al. 2017): distances to class means; with "
          "distance=cosine learn_scale=true and --init, Meta-Baseline (Chen et al. 2021)")
def build_protonet(spec: ModelSpec, config: ProtoNetConfig) -> ProtoNet:

    learner = ProtoNet(spec_backbone(spec, config.hidden),
                       distance=config.distance, scale=config.scale,
                       learn_scale=config.learn_scale, step_norm=config.step_norm)
    return add_rotation(learner, spec, config.rotation_weight)

