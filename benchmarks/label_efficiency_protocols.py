"""What ``benchmarks/label_efficiency.py`` trains and scores, as data.

The label-efficiency curve: accuracy against the number of labelled images per train class of the
reduced mini-ImageNet (64 train classes of 100 images; scored on the 16 val classes and on
held-out images of the train classes). First ``holdout`` images of every train class (20: 1,280
images; :func:`episodes.hold_out` with :data:`HOLDOUT_SEED`) are set aside: no model trains on
them, with or without labels, and every model is scored on them; the rest (80 per class, 5,120
images) is the *train split* below. At each *level* (labels per class of the train split,
:func:`episodes.labelled_index` with seed 0: the same images for every line) every *line*
trains one model:

- ``sup``: supervised training on the labelled images only (the classifier of ``fewshot
  pretrain``, RFS recipe: SGD 0.05, momentum 0.9, weight decay 5e-4, cosine, standard
  augmentation), from a random backbone;
- ``ft-<ssl>`` (``ft-rotation``, ``ft-moco``): the same, from the backbone of ``ssl-<ssl>``, a
  self-supervised model pre-trained once on every image of the train split without labels (no
  labels, so one pre-trained model serves every level): the two-stage pre-train then fine-tune of
  ``self_supervised.py``'s ``sup10-<method>``; MoCo is the contrastive method that scored best
  there (backbone alone, CPU preset);
- ``<semi>`` (``pseudo-label``, ``mean-teacher``, ``fixmatch``, ``uda``, ``mixmatch``,
  ``noisy-student``): semi-supervised training (``fewshot.semisup``) on the labelled images and the
  unlabelled rest of the train split (:func:`episodes.unlabelled_pool`), each method's defaults and
  views, the same optimiser and schedule as ``sup``.

Every model of a level trains the same number of steps (``steps``, batches of ``batch`` labelled
images, fewer when the level has fewer), so the lines differ in what they learn from, not in how
long; the seconds of training are recorded beside every point. Cells: a model's backbone scored
with the prototype head (Euclidean) on the shared fixed 5-way 1-shot and 5-shot episodes of the
val classes (``common.test_episodes``, name ``mini-val``: the episodes of ``self_supervised.py``
and ``transfer.py``), paired against ``sup`` at the same level; and (``<model>/heldout``, every
model with a classifier over the train classes, not the ``ssl-`` ones) that classifier's accuracy
on the held-out images, paired against ``sup`` at the same level on the same images
(``label_efficiency_heldout.py``).

The held-out count: 20 per class leaves 80 in the train split, so the ``gpu`` preset's levels
end at 70 (not 80): the semi-supervised lines need images left unlabelled (``check_levels``), and
their sampler needs ``mu x batch`` unlabelled images a step (FixMatch and UDA: 7 x 64 = 448, so
at most 73 labels per class); at 70, 640 are left. 1,280 held-out images give a 95% interval of
about +- 2.7 points at 50 % accuracy. A results folder records its holdout; a run refuses to
continue a folder trained with another (folders without the record were trained on every image:
they count as 0 held out and render without the held-out score).

Against the authors' experiment of this kind (Gidaris et al. 2018, RotNet,
``gidariss/FeatureLearningRotNet``: ``run_cifar10_semi_supervised_experiments.sh`` and the
``config/CIFAR10_*_K<n>.py`` files), point by point:

- levels: theirs are 20, 100, 400, 1000 and 5000 images per class of CIFAR-10 (the labelled images
  the first ``num_imgs_per_cat`` of each class); here 1 to 70 of the 80 per class left after the
  held-out images (the ``gpu`` preset's seven; ``cpu``: four), chosen by a seeded shuffle, the
  same for every line;
- equal training at every level: theirs too (``epoch_size`` fixed at 50,000 images whatever the
  level, so an epoch repeats the few labelled images); here ``steps`` batches at every level;
- the supervised line: theirs a NIN from scratch, SGD 0.1 with Nesterov momentum 0.9, weight
  decay 5e-4, steps at 60/120/160 of 200 epochs, batch 128; here Conv-4, SGD 0.05 with momentum
  0.9, weight decay 5e-4, cosine, batch 64 (the library's classifier recipe, as
  ``self_supervised.py``);
- the pre-trained line: theirs trains a new convolutional block and classifier on the frozen
  second block of the RotNet (``optim_params: None`` for the feature extractor), 100 epochs; here
  the whole pre-trained backbone is fine-tuned with the supervised line's recipe (the two-stage
  training of ``self_supervised.py``; the task allows it, and a frozen Conv-4 has no second block
  worth keeping at this size);
- the score: theirs the classifier's accuracy on CIFAR-10's test images of the same classes; here
  that too, on the held-out images of the train classes (``label_efficiency_heldout.py`` compares
  it point by point), and few-shot accuracy on new classes with the prototype head on the
  backbone (the library's question);
- semi-supervised lines: not in their experiment; each method's defaults (``fewshot.semisup``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# every self-supervised pre-training method: ft-<method> is fine-tuned from ssl-<method>, and
# ``--pretrained`` scores ssl-<method> alone (the table of pre-training methods)
SSL_LINES = ("rotation", "jigsaw", "simclr", "moco", "byol", "simsiam", "barlow-twins", "vicreg",
             "deepcluster", "uic", "context", "colorization", "autoencoder", "gan", "triplet")
# the pre-training's Adam learning rate where a method's recipe differs from 1e-3 (DCGAN: 2e-4,
# with its beta1 0.5 from the learner's own parameter groups)
PRETRAIN_LR = {"gan": 2e-4}
SEMI_LINES = ("pseudo-label", "mean-teacher", "fixmatch", "uda", "mixmatch", "noisy-student")
LINES = ("sup", *(f"ft-{m}" for m in SSL_LINES), *SEMI_LINES)
# the gpu preset's lines: the supervised baseline, rotation and MoCo (the best pretext and
# contrastive backbones of self_supervised.py's table) fine-tuned, every semi-supervised method
DEFAULT_LINES = ("sup", "ft-rotation", "ft-moco", *SEMI_LINES)
SHOTS = (1, 5)
BASELINE = "sup"
# the seed of the held-out images' choice (labelled_index's seed 0 then picks the labels)
HOLDOUT_SEED = 1


@dataclass(frozen=True)
class Preset:
    """Sizes of one run of the benchmark (see the module text)."""

    levels: tuple[int, ...] = (1, 2, 5, 10, 20, 40, 70)
    lines: tuple[str, ...] = DEFAULT_LINES
    holdout: int = 20  # images per train class no model trains on, scored by every classifier
    image_size: int = 84
    backbone: str = "conv4"
    ssl_steps: int = 10_000  # 250 epochs of the 5,120 images the holdout leaves
    ssl_batch: int = 128
    steps: int = 5_000  # every model of a level
    batch: int = 64
    test_episodes: int = 1000
    ssl_options: dict = field(default_factory=dict)  # method -> options
    semi_options: dict = field(default_factory=dict)  # method -> options


SMALL_HEADS = {"moco": {"proj_hidden": 64, "queue_size": 256}}

PRESETS = {
    "gpu": Preset(),
    # 2 CPU cores, two jobs of one thread: the pre-training 300 steps of 64 images (3.75 epochs),
    # every point 300 steps of 64 labelled images
    "cpu": Preset(levels=(2, 5, 10, 40),
                  lines=("sup", "ft-rotation", "pseudo-label", "mean-teacher", "ft-moco"),
                  image_size=42, ssl_steps=300, ssl_batch=64, steps=300),
    "quick": Preset(levels=(2, 5), lines=("sup", "ft-rotation", "pseudo-label"), image_size=42,
                    ssl_steps=3, ssl_batch=16, steps=3, batch=16, test_episodes=20,
                    ssl_options=SMALL_HEADS),
}


def line_kind(line: str) -> str:
    """``"supervised"``, ``"fine-tuned"`` or ``"semi-supervised"``."""
    if line == BASELINE:
        return "supervised"
    if line.startswith("ft-") and line.removeprefix("ft-") in SSL_LINES:
        return "fine-tuned"
    if line in SEMI_LINES:
        return "semi-supervised"
    raise ValueError(f"unknown line {line!r}: choose from {', '.join(LINES)}")


def model_key(line: str, level: int) -> str:
    """The model of ``line`` at ``level`` labels per class: ``"sup@5"``."""
    return f"{line}@{level}"


def parse_key(key: str) -> tuple[str, int]:
    """``"sup@5"`` -> ``("sup", 5)``."""
    line, level = key.rsplit("@", 1)
    return line, int(level)


def models(lines: tuple[str, ...], levels: tuple[int, ...],
           pretrained: tuple[str, ...] = ()) -> list[str]:
    """Every model to train, level by level: first the self-supervised models the ``ft-`` lines
    start from, then those of ``pretrained`` (scored alone), then the lines that need none (the
    baseline first), then the ``ft-`` lines (so that parallel jobs train those while the
    pre-training runs)."""
    pre = [f"ssl-{line.removeprefix('ft-')}" for line in lines if line_kind(line) == "fine-tuned"]
    pre = list(dict.fromkeys(pre + [f"ssl-{m}" for m in pretrained]))
    ordered = sorted(lines, key=lambda line: line != BASELINE)
    free = [line for line in ordered if line_kind(line) != "fine-tuned"]
    tuned = [line for line in ordered if line_kind(line) == "fine-tuned"]
    return pre + [model_key(line, level) for group in (free, tuned) for level in levels
                  for line in group]


def cell_name(model: str, shot: int) -> str:
    return f"{model}/5w{shot}s"


def heldout_name(model: str) -> str:
    """The cell of ``model``'s classifier on the held-out images of the train classes."""
    return f"{model}/heldout"


def check_levels(levels: tuple[int, ...], lines: tuple[str, ...], smallest: int,
                 held: int = 0) -> None:
    """Exit with one line if a level asks for more labels than the smallest train class has
    images (``smallest``, after ``held`` per class were held out; semi-supervised lines: leaving
    it none unlabelled)."""
    semi = any(line_kind(line) == "semi-supervised" for line in lines)
    top = smallest - 1 if semi else smallest
    if max(levels) > top:
        after = f" after the {held} held out" if held else ""
        semi_text = ", and the semi-supervised lines need some left unlabelled" if semi else ""
        raise SystemExit(f"--levels {max(levels)}: the smallest train class has {smallest} images"
                         f"{after}{semi_text}: give levels of at most {top}")
