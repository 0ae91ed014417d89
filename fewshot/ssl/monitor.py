"""How good is an embedding: a weighted k-NN accuracy and a linear probe (multinomial logistic
regression, :func:`fewshot.heads.logistic.logistic_logits`) on a held-out labelled split (cheap
monitors during pre-training, from features), and a 2-D projection of embeddings coloured by class
(PCA in torch; t-SNE when scikit-learn is installed)."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes import ClassDataset

from ..engine.curves import pyplot
from ..engine.features import extract_features
from ..heads.logistic import logistic_logits
from ..models.weights import backbone_of


def knn_accuracy(bank: Tensor, bank_y: Tensor, query: Tensor, query_y: Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Weighted k-NN classification (Wu et al. 2018, as in DINO's and solo-learn's monitors):
    each query ``[M, D]`` takes its ``k`` most cosine-similar bank items ``[N, D]`` (labels
    ``[N]``), each voting for its class with weight ``exp(sim / temperature)``; the accuracy of
    the top-voted class against ``query_y`` ``[M]``."""
    num_classes = num_classes or int(max(bank_y.max(), query_y.max())) + 1
    sim = F.normalize(query.float(), dim=1) @ F.normalize(bank.float(), dim=1).t()
    top, idx = sim.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(query.shape[0], num_classes, device=query.device)
    votes.scatter_add_(1, bank_y[idx], (top / temperature).exp())
    return float((votes.argmax(1) == query_y).float().mean())


def bank_and_queries(dataset: ClassDataset) -> tuple[Tensor, Tensor]:
    """Indices of the first half of each class's images (the k-NN bank) and of the rest (the
    queries): a fixed split of a labelled dataset."""
    order = torch.argsort(dataset.targets, stable=True)
    counts = torch.bincount(dataset.targets, minlength=dataset.num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - starts[dataset.targets[order]]
    in_bank = rank < (counts[dataset.targets] + 1) // 2
    return torch.nonzero(in_bank).flatten(), torch.nonzero(~in_bank).flatten()


def linear_probe_accuracy(bank: Tensor, bank_y: Tensor, query: Tensor, query_y: Tensor,
                          num_classes: int, C: float = 1.0) -> float:
    """Accuracy on ``query`` ``[M, D]`` of a logistic regression (L2-normalised features, as
    RFS) fitted on ``bank`` ``[N, D]`` with labels ``bank_y`` ``[N]``: a linear probe."""

    logits = logistic_logits(bank[None].float(), bank_y[None], query[None].float(), num_classes, C)
    return float((logits[0].argmax(1) == query_y).float().mean())


def knn_monitor(dataset: ClassDataset, k: int = 20, temperature: float = 0.07,
                chunk_size: int = 256, linear_probe: bool = True
                ) -> Callable[[nn.Module], dict[str, float]]:
    """A training-loop monitor (:func:`fewshot.engine.train.train`'s ``monitors``): the k-NN accuracy
    ``knn_acc`` (and with ``linear_probe`` the linear probe's ``probe_acc``) of a learner's
    backbone features on ``dataset`` (held-out labelled images, e.g. the val classes), half of
    each class as the bank (training set) and half as queries."""
    bank, queries = bank_and_queries(dataset)
    images = dataset.load(torch.cat([bank, queries]))
    labels = dataset.targets[torch.cat([bank, queries])]

    def monitor(learner: nn.Module) -> dict[str, float]:
        feats = extract_features(backbone_of(learner), images, chunk_size)
        y = labels.to(feats.device)
        n = len(bank)
        out = {"knn_acc": knn_accuracy(feats[:n], y[:n], feats[n:], y[n:], k, temperature,
                                       dataset.num_classes)}
        if linear_probe:
            with torch.enable_grad():
                out["probe_acc"] = linear_probe_accuracy(feats[:n], y[:n], feats[n:], y[n:],
                                                         dataset.num_classes)
        return out

    return monitor


def project_2d(features: Tensor, method: str = "pca", seed: int = 0) -> Tensor:
    """Project features ``[N, D]`` to ``[N, 2]``: "pca" (the top two principal components,
    torch SVD of the centred features) or "tsne" (scikit-learn's, an optional dependency)."""
    x = features.double().cpu()
    if method == "pca":
        x = x - x.mean(0)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        return (x @ v[:2].t()).float()
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ValueError("t-SNE needs scikit-learn (pip install 'fewshot[tsne]'): install it "
                             "or use pca") from None
        return torch.from_numpy(TSNE(2, random_state=seed, init="pca").fit_transform(
            x.numpy())).float()
    raise ValueError(f"projection must be pca or tsne, got {method!r}")


def plot_embeddings(points: Tensor, labels: Tensor, class_names: list[str],
                    path: str | os.PathLike, title: str = "") -> None:
    """Scatter ``[N, 2]`` points coloured by class (labels ``[N]`` index ``class_names``) into
    an image file (matplotlib, an optional dependency: the ``plot`` extra)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    for c, name in enumerate(class_names):
        pts = points[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, color=cmap(c % cmap.N), label=name)
    if len(class_names) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
