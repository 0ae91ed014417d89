"""Scoring prototypes refined with unlabelled images (Ren et al. 2018, :mod:`fewshot.refine`) on
fixed episodes that carry them, for any backbone whose features the prototype classifier uses: a
ProtoNet checkpoint's (with its learned refinement, if it was meta-trained with one) or a
pre-trained backbone's (``fewshot eval --head prototype``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from episodes import ClassDataset, FixedEpisodes
from episodes.episode import class_major_labels

from ..refine import PrototypeRefiner
from .evaluate import embed_items, score_shards
from .memory import chunks, memory_budget
from .results import EvalResult


def refiner_for(learner: nn.Module | None, mode: str, steps: int | None) -> PrototypeRefiner:
    """The refinement ``mode`` for a learner: the one it was meta-trained with when that is
    ``mode`` (its learned radius or mask; ``steps`` None: its own), else a new one (``steps``
    None: 1); ``masked`` needs a learner trained with it (its mask MLP is learned)."""
    own = getattr(learner, "refiner", None)
    if own is not None and own.mode == mode:
        if steps is not None:
            own.steps = steps
        return own
    if mode == "masked":
        raise ValueError("--refine masked needs a checkpoint meta-trained with --option "
                         "refine=masked (its masks are learned): give --refine soft-kmeans or "
                         "distractor")
    return PrototypeRefiner(mode, 1 if steps is None else steps)


def check_refinable(learner: nn.Module, what: str) -> None:
    """Raise ``ValueError`` unless ``learner`` classifies by Euclidean distance to prototypes."""
    if getattr(learner, "distance", None) != "euclidean" or getattr(learner, "scale", None) is not None:
        raise ValueError(f"--refine refines the Euclidean prototypes of a ProtoNet checkpoint or "
                         f"of --head prototype; {what} is not one: score it without --refine")


def evaluate_refined(embed: Callable[[Tensor], Tensor], refiner: PrototypeRefiner,
                     episodes: FixedEpisodes, dataset: ClassDataset, batch_size: int | None = None,
                     device: torch.device | str = "cpu", max_memory: int | None = None
                     ) -> EvalResult:
    """Accuracy on each of ``episodes`` (which carry unlabelled images) of the query logits of
    ``refiner`` on the features ``embed`` gives (images ``[B, C, H, W]`` -> ``[B, *F]``; put its
    module in eval mode first). The distinct images of ``batch_size`` episodes (default 100) are
    embedded once, in chunks that fit the memory budget; in a distributed run each rank scores
    its part (:func:`~fewshot.engine.evaluate.score_shards`)."""
    if episodes.unlabelled is None:
        raise ValueError("these fixed episodes carry no unlabelled images: draw them with "
                         "--unlabelled-per-class M (and a new --episodes-file)")
    episodes.check(dataset)
    device = torch.device(device)
    budget = memory_budget(device, max_memory)
    n, k, kq = episodes.items.shape[1], episodes.k_shot, episodes.items.shape[2]
    support_y = class_major_labels(1, n, k, device)
    query_y = class_major_labels(1, n, kq - k, device)

    def score(part: FixedEpisodes) -> Tensor:
        accs = []
        for s in chunks(len(part), batch_size or 100):
            g = len(part.items[s])
            index = torch.cat([part.items[s].flatten(1), part.unlabelled[s]], 1)  # [G, N*KQ + U]
            unique, inverse = index.unique(return_inverse=True)
            feats = embed_items(embed, dataset, unique, device, budget).flatten(1)
            feats = feats[inverse.to(device)]  # [G, N*KQ + U, D]
            labelled = feats[:, :n * kq].unflatten(1, (n, kq))
            with torch.no_grad():
                logits = refiner(labelled[:, :, :k].flatten(1, 2), support_y.expand(g, -1),
                                 labelled[:, :, k:].flatten(1, 2), feats[:, n * kq:], n)
            accs.append((logits.argmax(-1) == query_y).float().mean(1).cpu())
        return torch.cat(accs)

    return EvalResult(score_shards(episodes, score), n, k, kq - k)
