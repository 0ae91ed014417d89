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

Option ``refine`` (Ren et al. 2018, :mod:`fewshot.refine`): episodes that carry unlabelled images
(``fewshot train --unlabelled M``) refine the class means with them before the queries are
scored, by soft k-means (``soft-kmeans``), with a distractor cluster (``distractor``) or with
learned masks (``masked``), ``refine_steps`` times; meta-training learns through the refinement.
Episodes without unlabelled images are scored from the class means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from episodes.options import check

from ..functional import cosine_logits, euclidean_logits, protonet_logits, prototypes
from ..models.backbones import spec_backbone
from ..models.learner import BackboneLearner, ModelSpec, embed_episode
from ..modules import add_rotation
from ..refine import REFINES, PrototypeRefiner, Refine
from ..registry import register

# the pure functions live in fewshot.functional; named here too, where ProtoNet's readers look
__all__ = ["ProtoNet", "ProtoNetConfig", "build_protonet", "cosine_logits", "euclidean_logits",
           "protonet_logits", "prototypes"]


class ProtoNet(BackboneLearner):
    """A backbone plus :func:`protonet_logits`, batched over the T episodes of a step."""

    def __init__(self, backbone: nn.Module, distance: str = "euclidean",
                 scale: float | None = None, learn_scale: bool = False,
                 step_norm: bool = False, refiner: PrototypeRefiner | None = None) -> None:
        super().__init__()
        self.refiner = refiner
        if refiner is not None and (distance != "euclidean" or scale is not None or learn_scale):
            raise ValueError("prototype refinement uses Euclidean distances without a scale: "
                             "give distance=euclidean and no scale")
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

    def batch_logits(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Training logits; with a refiner and unlabelled images in the episodes, from the
        prototypes refined with them (one backbone pass over support, query and unlabelled
        images, per-episode BatchNorm over all three)."""
        if self.refiner is None or getattr(batch, "unlabelled_x", None) is None:
            return super().batch_logits(batch)
        m = batch.query_x.shape[1]
        with self.episode_norm(len(batch)):
            s, qu = embed_episode(self.backbone, batch.support_x,
                                  torch.cat([batch.query_x, batch.unlabelled_x], 1))
        logits = self.refiner(s.flatten(2), batch.support_y, qu[:, :m].flatten(2),
                              qu[:, m:].flatten(2), batch.n_way)
        return logits, batch.query_y


@dataclass
class ProtoNetConfig:
    """Options of ``--method protonet``: ``distance`` between queries and prototypes; ``scale``
    of the logits (none: 1 for Euclidean, 10 for cosine); ``learn_scale``: learn it, starting
    there (Meta-Baseline: ``distance=cosine learn_scale=true``); ``hidden`` (Conv-4 width;
    None: 64); ``rotation_weight``: rotation prediction as an auxiliary loss of this weight
    (Gidaris et al. 2019 use 1; 0: off; :meth:`BackboneLearner.add_rotation_loss`);
    ``step_norm``: BatchNorm statistics over all the step's episodes together, as the authors'
    Meta-Baseline code (default: per episode, see the module text); ``refine``: refine the
    prototypes with the episodes' unlabelled images (Ren et al. 2018, :mod:`fewshot.refine`),
    ``refine_steps`` times, the distractor cluster's radius starting at ``distractor_radius``
    and learned when ``learn_radius``."""

    distance: Literal["euclidean", "cosine"] = "euclidean"
    hidden: int | None = None
    scale: float | None = None
    learn_scale: bool = False
    rotation_weight: float = 0.0
    step_norm: bool = False
    refine: Refine = "none"
    refine_steps: int = 1
    distractor_radius: float = 100.0
    learn_radius: bool = True

    def __post_init__(self) -> None:
        check(self.refine in REFINES, "refine", " or ".join(REFINES), self.refine)
        check(self.refine_steps >= 1, "refine_steps", ">= 1", self.refine_steps)
        check(self.distractor_radius > 0, "distractor_radius", "> 0", self.distractor_radius)
        check(self.refine == "none" or (self.distance == "euclidean" and self.scale is None
                                        and not self.learn_scale),
              "refine", "none with distance=cosine or a scale (refinement uses plain Euclidean "
              "distances)", self.refine)
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
                       learn_scale=config.learn_scale, step_norm=config.step_norm,
                       refiner=None if config.refine == "none" else PrototypeRefiner(
                           config.refine, config.refine_steps, config.distractor_radius,
                           config.learn_radius))
    return add_rotation(learner, spec, config.rotation_weight)

