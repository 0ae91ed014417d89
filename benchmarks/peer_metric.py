"""The metric learners' training steps that ``benchmarks/peers.py`` times, ours and the peers',
one builder per variant, each returning ``run(episodes) -> (episodes_done, seconds)``, one timed
round. All train on 5-way 1-shot 15-query episodes of 1x28x28 images (Omniglot's shape); the MAML
steps are in :mod:`peer_maml`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import sync
from torch import nn

from episodes import EpisodeSampler, TensorClassDataset
from fewshot import ModelSpec, TrainConfig, build_learner, train
from fewshot.engine.precision import resolve_precision, use_channels_last
from fewshot.engine.step_size import auto_episodes
from fewshot.models.backbones import Conv4

N, K, Q = 5, 1, 15
Round = Callable[[int], tuple[int, float]]


def synthetic_dataset(device: torch.device, classes: int = 64, per_class: int = 20
                      ) -> TensorClassDataset:
    """Random uint8 images ``[classes * per_class, 1, 28, 28]`` on ``device`` (speed does not
    depend on the pixel values)."""
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(targets), 1, 28, 28), generator=g, dtype=torch.uint8)
    return TensorClassDataset(images, targets, [f"c{i}" for i in range(classes)]).to(device)


def stepper(step: Callable[[], object], device: torch.device, limit: float) -> Round:
    """A round of ``episodes`` calls of ``step`` (one episode each; fewer if ``limit`` seconds
    have passed), timed with the device synchronised at both ends."""
    def run(episodes: int) -> tuple[int, float]:
        sync(device)
        start, done = time.perf_counter(), 0
        while done < episodes and (done == 0 or time.perf_counter() - start < limit):
            step()
            done += 1
        sync(device)
        return done, time.perf_counter() - start
    return run


# ---------------------------------------------------------------- metric learners
METRIC_SPECS = {"protonet": ("protonet", {}), "matching_fce": ("matching", {"fce": True}),
                "relation": ("relation", {})}


def fewshot_metric(method: str, data: TensorClassDataset, device: torch.device,
                   per_step: int | str, limit: float, precision: str = "auto",
                   channels_last: bool | None = None) -> tuple[Round, dict]:
    """Our learner through :func:`fewshot.engine.train.train` with ``per_step`` episodes per optimizer
    step (``"auto"``: what ``fewshot train --episodes-per-step auto`` picks on this device), in
    ``precision`` with ``channels_last`` (None: the device's defaults, :mod:`fewshot.engine.precision`).
    The round's seconds are the training loop's own (``TrainResult.seconds``), set-up excluded;
    a round stops after ``limit`` seconds."""
    torch.manual_seed(0)
    name, options = METRIC_SPECS[method]
    spec = ModelSpec(name, "conv4", 1, 28, dict(options))
    learner = build_learner(spec).to(device)
    if per_step == "auto":
        per_step = auto_episodes(learner, N, K, Q, (1, 28, 28), device)
    sampler = EpisodeSampler(data, N, K, Q, episodes_per_batch=per_step, seed=0, device=device)

    def run(episodes: int) -> tuple[int, float]:
        config = TrainConfig(steps=max(1, episodes // per_step), progress=False,
                             time_limit=limit, precision=precision, channels_last=channels_last)
        result = train(learner, spec, sampler, config, device=device)
        return result.episodes, result.seconds
    return run, {"episodes_per_step": per_step,
                 "precision": resolve_precision(precision, device, name),
                 "channels_last": use_channels_last(learner, device, channels_last)}


def plain_protonet(data: TensorClassDataset, device: torch.device, limit: float
                   ) -> tuple[Round, dict]:
    """ProtoNet as a user writes it: Conv-4, prototypes, squared distances, cross-entropy, Adam,
    one episode per step (episodes from the same on-device sampler)."""
    torch.manual_seed(0)
    encoder = Conv4(1, 64).to(device)
    opt = torch.optim.Adam(encoder.parameters(), 1e-3)
    sampler = EpisodeSampler(data, N, K, Q, seed=0, device=device)

    def step() -> None:
        ep = sampler.sample()
        prototypes = encoder(ep.support_x[0]).view(N, K, -1).mean(1)
        logits = -torch.cdist(encoder(ep.query_x[0]), prototypes).pow(2)
        loss = F.cross_entropy(logits, ep.query_y[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stepper(step, device, limit), {"episodes_per_step": 1}


def easyfsl_metric(method: str, data: TensorClassDataset, device: torch.device, limit: float
                   ) -> tuple[Round, dict]:
    """easyfsl 1.5's classifier with its documented training step (``process_support_set`` on the
    support set, forward on the queries, the method's loss, Adam), one episode per step. Backbone:
    our Conv-4 (64 filters; for Relation our 64x5x5 feature-map encoder); easyfsl's own FCE LSTMs
    and relation module (which differs from the authors': adaptive max-pools to 5x5 and 1x1)."""
    from easyfsl.methods import MatchingNetworks, PrototypicalNetworks, RelationNetworks
    torch.manual_seed(0)
    if method == "protonet":
        model: nn.Module = PrototypicalNetworks(Conv4(1, 64))
    elif method == "matching_fce":
        model = MatchingNetworks(Conv4(1, 64), feature_dimension=64)
    else:
        embedding = build_learner(ModelSpec("relation", "conv4", 1, 28, {})).embedding
        model = RelationNetworks(embedding, feature_dimension=64)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sampler = EpisodeSampler(data, N, K, Q, seed=0, device=device)

    def step() -> None:
        ep = sampler.sample()
        model.process_support_set(ep.support_x[0], ep.support_y[0])
        scores, labels = model(ep.query_x[0]), ep.query_y[0]
        if method == "protonet":
            loss = F.cross_entropy(scores, labels)
        elif method == "matching_fce":  # log-probabilities
            loss = F.nll_loss(scores, labels)
        else:  # relation scores in [0, 1]
            loss = F.mse_loss(scores, F.one_hot(labels, N).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stepper(step, device, limit), {"episodes_per_step": 1}
