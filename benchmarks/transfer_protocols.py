"""What ``benchmarks/transfer.py`` trains and scores, as data: the models, the cells, the presets.

A *model* is one training run (a checkpoint folder): the supervised pre-training of a backbone
(shared by every head and both shots), ProtoNet from scratch and Meta-Baseline (one per
backbone and shot). A *cell* is a (backbone, shot, method): a model scored on the shared fixed
test episodes, by its own forward or by a head fitted on each episode.

Settings, with where they come from (read, not copied):

- ``pretrain``: RFS's supervised stage (WangYueFt/rfs ``train_supervised.py``): cross-entropy over
  the 64 train classes, SGD 0.05, momentum 0.9, weight decay 5e-4, batch 64, cosine schedule, 100
  epochs (the reduced copy's 6,400 images: 10,000 steps), random crop / flip / colour jitter
  (here ``AugmentConfig.standard()``). The last model is kept: the reduced copy's val classes are
  its test classes, so there is nothing to validate on.
- ``protonet``: ``reproduce_protocols.protonet`` for mini-ImageNet (Snell et al.: 30-way 1-shot /
  20-way 5-shot training episodes, 15 queries, Adam 1e-3 halved every 2,000 steps; 20,000 steps,
  last model).
- ``meta-baseline``: Chen et al. 2021 (few-shot-meta-baseline ``configs/train_meta_mini.yaml``,
  ``utils.make_optimizer``): ProtoNet with cosine similarity and a learned temperature (10 at
  first), the backbone from ``pretrain``; 5-way K-shot 15-query episodes, 4 per step, SGD 0.001,
  momentum 0.9, weight decay 5e-4, 20 epochs x 200 steps = 4,000 steps, last model (they select
  on val; not possible here).
- heads: :mod:`fewshot.heads` defaults (CloserLookFewShot's Baseline / Baseline++ head training,
  RFS's logistic regression and nearest neighbour; fine-tuning: 100 SGD steps at 0.01; two-stage:
  100 head steps at 0.01, then 50 steps of head and backbone at 0.001).

Presets scale the steps and episodes: ``full`` is the above (a GPU run); ``cpu`` is a reduced
protocol for the 2-core development machine (Conv-4: about a day; ResNet-12: about 2.5 days;
BENCHMARKS.md gives the estimates): 3,000 pre-training steps (30 epochs), ProtoNet trained on
5-way episodes for 3,000 steps, 300 Meta-Baseline steps, fine-tuning cells on the first 50 of the
1,000 test episodes (paired with ProtoNet on those 50); ``cpu-small`` is what a session of the
2-core machine can finish with Conv-4 (83 minutes measured with 1 thread at load 3-6): 42 x 42
images (a quarter of the pixels), 1,000 pre-training steps (10 epochs), 1,000 ProtoNet steps of
5-way episodes, 100 Meta-Baseline steps, fine-tuning cells on the first 25 test episodes;
``cpu-short`` is ``cpu-small`` cut to what a session can finish with ResNet-12 (83 minutes
measured with 2 threads on the idle machine: pre-training 9 minutes, ProtoNet 14 / 19, Meta-Baseline
11 / 14): 300 pre-training steps (3 epochs), 350 ProtoNet steps, 60 Meta-Baseline steps,
fine-tuning cells on the first 5 test episodes (``--finetune-episodes`` adds more); ``quick`` is a
smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

BACKBONES = ("conv4", "resnet12")
SHOTS = (1, 5)
FEATURE_HEADS = ("prototype", "linear", "cosine", "logistic", "knn")
FINETUNE_HEADS = ("finetune", "two-stage")
METHODS = ("protonet", *(f"pretrain+{h}" for h in FEATURE_HEADS + FINETUNE_HEADS),
           "meta-baseline")


@dataclass(frozen=True)
class Training:
    """How one model is trained (``fewshot.engine.train.train``).

    ``batch`` > 0: supervised pre-training on mini-batches of that many images; else episodes of
    ``way``/``shot``/``query``, ``per_step`` per step. ``init``: the model whose last checkpoint
    initialises the backbone.
    """

    method: str
    steps: int
    lr: float
    options: dict = field(default_factory=dict)
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_decay_every: int = 0
    batch: int = 0
    way: int = 5
    shot: int = 1
    query: int = 15
    per_step: int = 1
    augment: bool = False
    init: str | None = None

    def describe(self) -> str:
        data = (f"batches of {self.batch} images" if self.batch else
                f"{self.way}w{self.shot}s{self.query}q episodes x {self.per_step}")
        opt = (f"SGD {self.lr:g} (momentum {self.momentum:g})" if self.optimizer == "sgd"
               else f"Adam {self.lr:g}")
        sched = ("cosine" if self.schedule == "cosine" else
                 f"halved every {self.lr_decay_every:,}" if self.lr_decay_every else "constant")
        return (f"{self.steps:,} steps of {data}; {opt}, weight decay {self.weight_decay:g}, "
                f"{sched}" + (", augmented" if self.augment else "")
                + (f"; backbone from {self.init}" if self.init else ""))


@dataclass(frozen=True)
class Preset:
    """Steps of each kind of training and episodes of each kind of cell."""

    pretrain_steps: int = 10000
    protonet_steps: int = 20000
    metabaseline_steps: int = 4000
    test_episodes: int = 1000
    finetune_episodes: int = 1000
    protonet_ways: tuple[int, int] = (30, 20)  # training way of ProtoNet for 1 and 5 shots
    head_options: dict = field(default_factory=dict)  # head -> options (quick: fewer steps)
    image_size: int = 84  # side of the images every model trains and is scored on


PRESETS = {
    "full": Preset(),
    "cpu": Preset(pretrain_steps=3000, protonet_steps=3000, metabaseline_steps=300,
                  test_episodes=1000, finetune_episodes=50, protonet_ways=(5, 5)),
    "cpu-small": Preset(pretrain_steps=1000, protonet_steps=1000, metabaseline_steps=100,
                        test_episodes=1000, finetune_episodes=25, protonet_ways=(5, 5),
                        image_size=42),
    "cpu-short": Preset(pretrain_steps=300, protonet_steps=350, metabaseline_steps=60,
                        test_episodes=1000, finetune_episodes=5, protonet_ways=(5, 5),
                        image_size=42),
    "quick": Preset(pretrain_steps=3, protonet_steps=3, metabaseline_steps=3, test_episodes=20,
                    finetune_episodes=4, protonet_ways=(5, 5),
                    head_options={"linear": {"epochs": 3}, "cosine": {"epochs": 3},
                                  "finetune": {"steps": 2}, "two-stage": {"steps": 1,
                                                                          "head_steps": 2}}),
}


def model_key(method: str, backbone: str, shot: int) -> str:
    """The model a cell scores: ``pretrain-<backbone>``, ``protonet-<backbone>-<K>shot`` or
    ``metabaseline-<backbone>-<K>shot``."""
    if method.startswith("pretrain+"):
        return f"pretrain-{backbone}"
    return f"{method.replace('-', '')}-{backbone}-{shot}shot"


def training(key: str, preset: Preset) -> Training:
    """The training of model ``key`` under ``preset``."""
    kind, backbone, *rest = key.split("-")
    if kind == "pretrain":
        return Training("classifier", preset.pretrain_steps, 0.05, optimizer="sgd",
                        weight_decay=5e-4, schedule="cosine", batch=64, augment=True)
    shot = int(rest[0].removesuffix("shot"))
    if kind == "protonet":
        return Training("protonet", preset.protonet_steps, 1e-3, lr_decay_every=2000,
                        way=preset.protonet_ways[shot != 1], shot=shot)
    return Training("protonet", preset.metabaseline_steps, 1e-3,
                    {"distance": "cosine", "learn_scale": True}, optimizer="sgd",
                    weight_decay=5e-4, shot=shot, per_step=4, init=f"pretrain-{backbone}")


def with_steps(t: Training, steps: int | None) -> Training:
    return t if steps is None else replace(t, steps=steps)


def cells(backbones: tuple[str, ...] = BACKBONES, shots: tuple[int, ...] = SHOTS,
          methods: tuple[str, ...] = METHODS) -> list[tuple[str, int, str]]:
    """(backbone, shot, method) in the order they run: pre-training before Meta-Baseline."""
    return [(b, s, m) for b in backbones for s in shots for m in methods]


def cell_name(backbone: str, shot: int, method: str) -> str:
    return f"{backbone}/5w{shot}s/{method}"
