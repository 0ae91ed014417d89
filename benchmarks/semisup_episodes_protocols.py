"""What ``benchmarks/semisup_episodes.py`` trains and scores, as data: Ren et al. 2018
("Meta-learning for semi-supervised few-shot classification") on Omniglot and the reduced
mini-ImageNet.

Their protocol, from their code (renmengye/few-shot-ssl-public: ``run_exp.py``, README,
``fewshot/configs/{omniglot,mini_imagenet}_config.py``, ``fewshot/data/refinement_dataset.py``,
``fewshot/utils/lr_schedule.py``; read, not copied), point by point:

- label split: a seeded per-class split of the train classes' images, 10 % labelled on Omniglot
  (their README: ``--label_ratio 0.1`` for Omniglot and tieredImageNet) and 40 % on mini-ImageNet;
  support and query from the labelled part, unlabelled images from the rest (``--label-ratio``).
  Same. The supervised baseline (``basic``) meta-trains on the labelled part alone: here
  ``--label-fraction`` with the same ratio and seed, which chooses the same images.
- training episodes: 5-way, their ``nshot`` (1 on Omniglot), 5 unlabelled images per class and 5
  distractor classes of 5 unlabelled images each (``--disable_distractor``: none); queries: on
  Omniglot every labelled image left after the shot (``num_test`` -1: 2 labelled of 20, so 1),
  on mini-ImageNet 5. Same.
- optimiser: Adam 1e-3, weight decay 5e-5 (their ``wd``), the learning rate halved at
  6,000, 8,000, 12,000, ... of 20,000 steps on Omniglot (their ``lr_list`` starts at the base
  rate, so the first listed step, 4,000, changes nothing), halved every 25,000 of 200,000 on
  mini-ImageNet; the last model is tested. Here: Adam 1e-3, weight decay 5e-5, halved every
  ``decay`` steps (``--lr-decay-every``), the last model (``last.pt``); the CPU budget runs fewer
  steps (``--steps``), which the results record.
- network: Conv-4 of 64 filters with batch norm, one refinement step (``num_cluster_steps`` 1).
  Same (the library's Conv-4, ``refine_steps=1``).
- Omniglot: their Vinyals split with 90-degree rotations as classes (``aug_90``). Same split and
  rotations (the library's ``omniglot`` dataset). mini-ImageNet: Ravi's split at 84x84; the
  reduced copy here has 100 images per train and val class and no test classes, so tests use the
  16 val classes (theirs: ``--use_test`` for the test classes, else val).
- test episodes: 5-way, the whole class (``label_ratio=1``), support then queries then unlabelled
  images of the same classes; Omniglot: 5 unlabelled per class and every other image as a query
  (20 - 1 - 5 = 14); mini-ImageNet (their README): 20 unlabelled and 20 queries per class;
  distractor classes as in training. 600 episodes theirs; here 1000 fixed episodes, the same for
  every model of a setting (paired tests).
- scores: ``Supervised`` (ProtoNet on the labelled part, plain prototypes), ``Semi-Supervised
  Inference`` (the same model, prototypes refined by soft k-means at test only), ``Soft
  k-Means``, ``Soft k-Means+Cluster`` (``distractor``), ``Masked Soft k-Means``, each
  meta-trained with its refinement; models are trained with and without distractors and tested
  in the same condition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# the refinements meta-trained (their kmeans-refine, kmeans-refine-radius, kmeans-refine-mask)
REFINED = ("soft-kmeans", "distractor", "masked")
# a row of the table: (name, model, --refine at test)
ROWS = (("protonet", "protonet", None), ("protonet+soft-kmeans", "protonet", "soft-kmeans"),
        *((r, r, r) for r in REFINED))
ROW_TITLES = {"protonet": "Supervised (ProtoNet on the labelled part)",
              "protonet+soft-kmeans": "Semi-supervised inference (soft k-means at test)",
              "soft-kmeans": "Soft k-means", "distractor": "Soft k-means + cluster",
              "masked": "Masked soft k-means"}


@dataclass(frozen=True)
class Setting:
    """One dataset's protocol (see the module text)."""

    dataset: str  # the ``--dataset`` of the command line
    label_ratio: float
    shots: tuple[int, ...]
    train_query: int
    test_split: str
    test_query: int
    test_unlabelled: int
    steps: int  # training steps (the authors', or the reduced setting's)
    decay: int  # halve the learning rate every this many steps
    image_size: int
    unlabelled: int = 5
    distractors: int = 5
    way: int = 5
    test_episodes: int = 1000
    # the paper's figures: (row, shot, distractor classes, %), and where each was checked
    published: tuple[tuple[str, int, int, float], ...] = ()
    published_source: str = ""


# Ren et al.'s published tables report the mean over 10 label splits. Their mini-ImageNet rows of
# the three refinements, with and without distractors, are checked against the copy of that table
# in Liu et al. 2019 (TPN, ICLR 2019, Table 3); the ProtoNet rows and Omniglot are recalled: the
# review version of the paper (one split) gives Omniglot errors of 5.16, 2.56 and 2.46 % (94.84,
# 97.44, 97.54) and mini-ImageNet ProtoNet 43.36 / 59.03, near the recalled figures
OMNIGLOT_SOURCE = "recalled (the review version, one split: 94.84, 97.44, 97.54)"
MINI_SOURCE = ("the refinements checked against Liu et al. 2019 (TPN), Table 3; ProtoNet recalled "
               "(the review version, one split: 43.36 / 59.03)")
MINI_PUBLISHED = (("protonet", 1, 0, 43.61), ("protonet", 5, 0, 59.08),
                  ("soft-kmeans", 1, 0, 50.09), ("soft-kmeans", 5, 0, 64.59),
                  ("soft-kmeans", 1, 5, 48.70), ("soft-kmeans", 5, 5, 63.55),
                  ("distractor", 1, 0, 49.03), ("distractor", 5, 0, 63.08),
                  ("distractor", 1, 5, 48.86), ("distractor", 5, 5, 61.27),
                  ("masked", 1, 0, 50.41), ("masked", 5, 0, 64.39),
                  ("masked", 1, 5, 49.04), ("masked", 5, 5, 62.96))
MINI = Setting("miniimagenet", 0.4, (1, 5), 5, "val", 20, 20, 200_000, 25_000, 84,
               published=MINI_PUBLISHED, published_source=MINI_SOURCE)

SETTINGS = {
    "omniglot": Setting("omniglot", 0.1, (1,), 1, "test", 14, 5, 20_000, 2_000, 28,
                        published=(("protonet", 1, 0, 94.62), ("soft-kmeans", 1, 0, 97.25),
                                   ("masked", 1, 0, 97.52)),
                        published_source=OMNIGLOT_SOURCE),
    "mini": MINI,
    # the same protocol reduced to what one CPU core trains in minutes a model: 42x42 images
    # (the CPU preset of the label-efficiency curve), 2,000 steps with the rate halved at 1,000
    # (theirs: 200,000 at 84x84); episodes, label split and tests as "mini". Its figures are the
    # full protocol's anchors, not targets at this budget
    "mini-cpu": replace(MINI, image_size=42, steps=2_000, decay=1_000),
    # the embedded stroke characters (20 images a class, as Omniglot): a smoke run in seconds
    "quick": Setting("embedded", 0.1, (1,), 1, "test", 14, 5, 4, 2, 28, test_episodes=20),
}


def model_key(method: str, shot: int, distractors: int) -> str:
    """The model folder: ``"masked-1s-d5"`` (``protonet``: no unlabelled images, so one model
    serves both conditions and ``d`` is left out: ``"protonet-1s"``)."""
    return f"{method}-{shot}s" if method == "protonet" else f"{method}-{shot}s-d{distractors}"


def cell_name(row: str, shot: int, distractors: int) -> str:
    """``"masked/1s-d5"``."""
    return f"{row}/{shot}s-d{distractors}"


def models(setting: Setting) -> list[tuple[str, str, int, int | None]]:
    """Every model to train as (key, method, shot, distractor classes or None), the plain
    ProtoNet of each shot first."""
    plain = [(model_key("protonet", s, 0), "protonet", s, None) for s in setting.shots]
    return plain + [(model_key(m, s, d), m, s, d) for s in setting.shots
                    for d in (setting.distractors, 0) for m in REFINED]
