"""The protocol of each (method, setting) cell of ``benchmarks/reproduce.py``, as data.

Each :class:`Protocol` writes down how the paper and the authors' code trained and tested one method
in one setting, the number they published, what was checked where, and where this harness differs.
Verified against the authors' repositories (read, not copied): jakesnell/prototypical-networks
(``scripts/train/few_shot/run_train.py``, ``trainval.py``, ``scripts/predict/few_shot/run_eval.py``),
floodsung/LearningToCompare_FSL (``omniglot/omniglot_train_*.py``, ``miniimagenet/*``, README) and
cbfinn/maml (``main.py`` usage and flags, ``data_generator.py``). Matching Networks has no official
code: its cells follow the paper (Omniglot) and Ravi & Larochelle 2017's re-implementation
(mini-ImageNet), and mark the settings neither states as this library's choices.

Steps are optimizer steps of ``fewshot.engine.train.train``; with ``meta_batch`` T, one step is T episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Setting:
    """One test setting: the shared fixed test episodes every method of it is scored on."""

    dataset: str  # "omniglot" (Vinyals split, 28x28, test classes) or "mini" (84x84, val classes)
    way: int
    shot: int
    query: int = 15
    episodes: int = 1000

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.way}w{self.shot}s"


SETTINGS = {s.name: s for s in (Setting("omniglot", 5, 1), Setting("omniglot", 5, 5),
                                 Setting("omniglot", 20, 1), Setting("omniglot", 20, 5),
                                 Setting("mini", 5, 1), Setting("mini", 5, 5))}


@dataclass(frozen=True)
class Protocol:
    """How ``method`` was trained and tested for ``setting`` (see the module docstring)."""

    method: str  # label: protonet, matching, relation, maml, maml_fo
    setting: str  # a key of SETTINGS
    learner: str  # registry name
    options: dict = field(default_factory=dict)  # the learner's typed options
    train_way: int = 5
    train_shot: int = 1
    train_query: int = 15
    meta_batch: int = 1  # episodes per optimizer step
    optimizer: str = "Adam 1e-3"
    lr: float = 1e-3
    lr_halve_every: int = 0  # steps; 0: constant
    steps: int = 10000
    classes: str = "train"  # classes trained on ("train"; the paper's own choice is in `differs`)
    select: str = "last"  # "best": the checkpoint with the best validation accuracy; "last"
    val_every: int = 0  # steps between validations (0: none)
    patience: int = 0  # early stopping: steps without a better validation accuracy (0: none)
    val_way: int | None = None  # validation way (None: the setting's)
    test: str = ""  # test-time settings
    paper_test: str = ""  # the paper's test episodes and queries
    published: float = float("nan")  # % on the paper's test set
    published_ci: float | None = None
    source: str = ""  # where it was verified
    differs: str = ""  # where this harness differs from the paper and authors' code

    @property
    def name(self) -> str:
        return f"{self.method}/{self.setting}"

    @property
    def model_key(self) -> str:
        """Cells with the same training share one model (ProtoNet: one per shot, tested 5/20-way)."""
        ds = SETTINGS[self.setting].dataset
        return (f"{self.method}-{ds}-{self.train_way}w{self.train_shot}s{self.train_query}q"
                f"-b{self.meta_batch}")


PUBLISHED = {  # % (Omniglot 5w1s, 5w5s, 20w1s, 20w5s, mini 5w1s, 5w5s)
    "protonet": (98.8, 99.7, 96.0, 98.9, 49.42, 68.20),
    "matching": (98.1, 98.9, 93.8, 98.5, 43.56, 55.31),
    "relation": (99.6, 99.8, 97.6, 99.1, 50.44, 65.32),
    "maml": (98.7, 99.9, 95.8, 98.9, 48.70, 63.11),
    "maml_fo": (98.3, 99.2, 89.4, 97.9, 48.07, 63.15),
}
MINI_CI = {"protonet": (0.78, 0.66), "matching": (0.84, 0.73), "relation": (0.82, 0.70),
           "maml": (1.84, 0.92), "maml_fo": (1.75, 0.91)}
OMNI_NOTE = ("Omniglot here: Vinyals split (1028 train / 172 val / 423 test characters), rotations "
             "as classes, 28x28; ")


def protonet(s: Setting, pub: float, ci: float | None) -> Protocol:
    omni = s.dataset == "omniglot"
    return Protocol(
        "protonet", s.name, "protonet", {}, train_way=60 if omni else (30 if s.shot == 1 else 20),
        train_shot=s.shot, train_query=5 if omni else 15, lr_halve_every=2000,
        optimizer="Adam 1e-3, halved every 2000 episodes", steps=1_000_000 if omni else 20000,
        classes="train (paper: then train+val)" if omni else "train",
        select="best" if omni else "last", val_every=100 if omni else 0,
        patience=20000 if omni else 0, val_way=5 if omni else None,
        test="Euclidean distance to class means",
        paper_test="1000 episodes, 15 queries" if omni else "600 episodes, 15 queries",
        published=pub, published_ci=ci,
        source="run_train.py: way 60, query 5, shot = test shot, 100 episodes/epoch, 10000 epochs, "
               "Adam 1e-3 halved every 20 epochs, patience 200 epochs on val loss; trainval.py: "
               "retrain on train+val for best epoch + patience; run_eval.py: 1000 episodes, "
               "query 15. mini-ImageNet (paper): 30-way 1-shot / 20-way 5-shot, 15 queries",
        differs=(OMNI_NOTE + "best val accuracy (fixed 200 val episodes, 5-way) instead of val loss "
                 "on 100 fresh episodes; no train+val retraining (the best-val model is scored); "
                 "one model per shot, scored 5- and 20-way as in the paper") if omni else
                "reduced copy: its 16 val classes are the test set, so no early stopping: a fixed "
                "20,000 steps (our choice; the paper stops on validation)")


def matching(s: Setting, pub: float, ci: float | None) -> Protocol:
    omni = s.dataset == "omniglot"
    return Protocol(
        "matching", s.name, "matching", {"fce": True}, train_way=s.way, train_shot=s.shot,
        train_query=15, lr_halve_every=2500, optimizer="Adam 1e-3, halved every 2500 steps (ours)",
        steps=10000 if omni else 20000, select="best" if omni else "last",
        val_every=500 if omni else 0, test="FCE (5 attention steps), cosine attention over the "
        "normalised support set", paper_test="not stated (Omniglot); 600 episodes, 15 queries "
        "(Ravi & Larochelle)", published=pub, published_ci=ci,
        source="paper (no official code): episodes of the test way and shot; Omniglot 1200 "
               "training characters with 90-degree rotations; mini-ImageNet figure from Ravi & "
               "Larochelle 2017's re-implementation with FCE, 15 queries",
        differs=("optimizer, schedule, queries and steps are not in the paper: the library's "
                 "metric_learners.py settings; FCE on every setting (the library default; the "
                 "Omniglot table of the paper may be without it); "
                 + (OMNI_NOTE + "best val model" if omni
                    else "no early stopping (the val classes are the test set)")))


RELATION_QUERY = {"omniglot-5w1s": 19, "omniglot-5w5s": 15, "omniglot-20w1s": 10,
                  "omniglot-20w5s": 5, "mini-5w1s": 15, "mini-5w5s": 10}


def relation(s: Setting, pub: float, ci: float | None) -> Protocol:
    omni = s.dataset == "omniglot"
    return Protocol(
        "relation", s.name, "relation", {}, train_way=s.way, train_shot=s.shot,
        train_query=RELATION_QUERY[s.name], lr_halve_every=100000,
        optimizer="Adam 1e-3 (both modules), halved every 100,000 episodes",
        steps=1_000_000 if omni else 500_000, select="best" if omni else "last",
        val_every=5000 if omni else 0,
        test="batch statistics at test (as the authors' code); sigmoid relation scores",
        paper_test="1000 episodes, queries = shot" if omni else "600 episodes x 10, 15 queries",
        published=pub, published_ci=ci,
        source="README commands (-w/-s/-b: queries 19/15/10/5 Omniglot, 15/10 mini); "
               "episodes 1,000,000 / 500,000; StepLR(100000, 0.5); gradient norm clipped to 0.5 "
               "per module; test every 5000 episodes, keeping the best test accuracy",
        differs=(OMNI_NOTE + "the authors use 1200 shuffled training characters with a random "
                 "rotation of the whole episode and select the model on the test classes; here "
                 "on the val classes every 5000 steps") if omni else
                "no model selection (the authors select on the test classes; here the val "
                "classes are the test set): the last model is scored")


MAML_OMNI = {5: (32, 1, 0.4, 3), 20: (16, 5, 0.1, 5)}  # way: meta-batch, steps, inner lr, test steps


def maml(s: Setting, pub: float, ci: float | None, first_order: bool) -> Protocol:
    omni = s.dataset == "omniglot"
    batch, steps, inner_lr, test_steps = (MAML_OMNI[s.way] if omni else
                                          (4 if s.shot == 1 else 2, 5, 0.01, 10))
    options = {"n_way": s.way, "inner_steps": steps, "eval_inner_steps": test_steps,
               "inner_lr": inner_lr, "first_order": first_order}
    if not omni:
        options["hidden"] = 32
    return Protocol(
        "maml_fo" if first_order else "maml", s.name, "maml", options, train_way=s.way,
        train_shot=s.shot, train_query=s.shot if omni else 15, meta_batch=batch,
        optimizer="Adam 1e-3, constant", steps=60000,
        test=f"{test_steps} inner steps of {inner_lr}, batch statistics (transductive)",
        paper_test="600 episodes, queries = shot", published=pub, published_ci=ci,
        source=("main.py usage: Omniglot 5-way meta-batch 32, 1 step of 0.4; 20-way meta-batch "
                "16, 5 steps of 0.1; mini 5 steps of 0.01, 32 filters, max-pool, 15 train "
                "queries (update_batch_size+15), else queries = shot; 60,000 iterations, meta-lr "
                "1e-3, last model; 600 test points; test steps per the paper (3 / 5 / 10; the "
                "code logs every step up to 10); first order: --stop_grad=True")
        + ("; Omniglot first-order figures from Nichol et al. 2018 (Reptile), Table 1"
           if first_order and omni else ""),
        differs=(OMNI_NOTE + "the authors train on 1100 characters (1200 minus 100 val) with "
                 "random rotations per class") if omni else
                "meta-batch 2 for 5-shot as the paper says (the code's README uses 4)")


def protocols() -> dict[str, Protocol]:
    """Every cell, keyed by its name ``method/setting``."""
    cells = []
    for i, s in enumerate(SETTINGS.values()):
        ci = {m: MINI_CI[m][s.shot != 1] if s.dataset == "mini" else None for m in PUBLISHED}
        cells += [protonet(s, PUBLISHED["protonet"][i], ci["protonet"]),
                  matching(s, PUBLISHED["matching"][i], ci["matching"]),
                  relation(s, PUBLISHED["relation"][i], ci["relation"]),
                  maml(s, PUBLISHED["maml"][i], ci["maml"], first_order=False),
                  maml(s, PUBLISHED["maml_fo"][i], ci["maml_fo"], first_order=True)]
    return {p.name: p for p in cells}
