"""What ``benchmarks/self_supervised.py`` trains and scores , as data.

Models (each one training run, a checkpoint folder):

- ``ssl-<method>``: self-supervised pre-training (``fewshot.ssl``) on every image of the 64 train
  classes of the reduced mini-ImageNet, their labels unused: ``ssl_epochs`` epochs of batches of
  ``ssl_batch`` images, Adam 1e-3 with a cosine schedule, weight decay 1e-6, each method's own
  views and defaults (:mod:`fewshot.ssl`; papers' settings and the deviations there). Adam rather
  than the papers' LARS/SGD with warm-up: one setting that trains every method in a short run.
- ``sup10``: supervised training on the labelled 10 % only (10 of each train class's 100 images,
  the first in a seeded shuffle): the classifier of ``fewshot pretrain`` (RFS recipe: SGD 0.05,
  momentum 0.9, weight decay 5e-4, batch 64, cosine, standard augmentation) for
  ``finetune_epochs`` epochs of those images, from a random backbone.
- ``sup10-<method>``: the same, from the backbone of ``ssl-<method>`` (fine-tuning).

Cells: a model's backbone scored with the prototype head (Euclidean) on the shared 1,000 fixed
5-way 1-shot and 5-shot episodes of the 16 val classes (``common.test_episodes``, name
``mini-val``: the episodes of ``transfer.py``, whatever the image size), paired tests against
``sup10``. The headline: ``sup10`` vs ``sup10-{rotation,simclr,
barlow-twins}``; the table ("done when" 3): every ``ssl-<method>`` (no labels at all), with
seconds and peak memory per training epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SSL = ("rotation", "jigsaw", "simclr", "moco", "byol", "simsiam", "barlow-twins", "vicreg",
       "deepcluster", "uic")
# timed by ssl_timing.py (--methods), not (yet) runs of this benchmark
MORE_SSL = ("context", "colorization", "autoencoder", "gan", "triplet")
HEADLINE = ("rotation", "simclr", "barlow-twins")
SHOTS = (1, 5)


@dataclass(frozen=True)
class Preset:
    """Sizes of one run of the benchmark."""

    image_size: int = 84
    backbone: str = "conv4"
    ssl_epochs: int = 100
    ssl_batch: int = 128
    finetune_epochs: int = 100
    labelled_fraction: float = 0.1
    test_episodes: int = 1000
    steps: int | None = None  # every model's steps (smoke runs)
    ssl_options: dict = field(default_factory=dict)  # method -> options


SMALL_HEADS = {"simclr": {"proj_hidden": 64}, "moco": {"proj_hidden": 64, "queue_size": 256},
               "byol": {"proj_hidden": 64}, "simsiam": {"proj_dim": 64, "pred_hidden": 16},
               "barlow-twins": {"proj_dim": 64}, "vicreg": {"proj_dim": 64},
               "deepcluster": {"proj_hidden": 64}, "jigsaw": {"head_hidden": 64}}

PRESETS = {
    "full": Preset(),
    "cpu": Preset(image_size=42, ssl_epochs=20, finetune_epochs=100),
    "quick": Preset(image_size=42, ssl_batch=32, steps=4, test_episodes=20,
                    ssl_options=SMALL_HEADS),
}


def models(methods: tuple[str, ...]) -> list[str]:
    """The models of the selected methods, each after the model it starts from."""
    out = ["sup10"]
    for m in methods:
        out.append(f"ssl-{m}")
        if m in HEADLINE:
            out.append(f"sup10-{m}")
    return out


def cell_name(model: str, shot: int) -> str:
    return f"{model}/5w{shot}s"
