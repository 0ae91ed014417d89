"""Self-supervised losses against hand computations on tiny explicit tensors (plain Python
arithmetic, not the library's functions), pretext labels against the transforms, k-means, the
collapse monitor and the k-NN monitor."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.functional import rotate_batch
from fewshot.ssl.losses import (
    balanced_cross_entropy,
    barlow_twins_loss,
    byol_loss,
    embedding_std,
    info_nce,
    negative_cosine,
    nt_xent,
    vicreg_loss,
)
from fewshot.ssl.monitor import knn_accuracy, linear_probe_accuracy, project_2d
from fewshot.ssl.pretext import jigsaw_permutations, jigsaw_tiles, kmeans

Z1 = [[1.0, 0.0], [0.6, 0.8]]
Z2 = [[0.8, 0.6], [0.0, 2.0]]


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_nt_xent_by_hand() -> None:
    u, temp = Z1 + Z2, 0.5  # anchors 0, 1 (view 1), 2, 3 (view 2); positive of i: i +- 2
    total = 0.0
    for i in range(4):
        pos = (i + 2) % 4
        denom = sum(math.exp(cos(u[i], u[j]) / temp) for j in range(4) if j != i)
        total += -math.log(math.exp(cos(u[i], u[pos]) / temp) / denom)
    loss, logits, positive = nt_xent(t(Z1), t(Z2), temp)
    assert loss.item() == pytest.approx(total / 4, rel=1e-12)
    assert positive.tolist() == [2, 3, 0, 1] and logits[0, 0] == float("-inf")


def test_info_nce_by_hand() -> None:
    queue, temp = [[-1.0, 0.0], [0.0, -3.0], [1.0, 1.0]], 0.2
    total = 0.0
    for q, k in zip(Z1, Z2, strict=True):
        pos = math.exp(cos(q, k) / temp)
        total += -math.log(pos / (pos + sum(math.exp(cos(q, n) / temp) for n in queue)))
    loss, logits = info_nce(t(Z1), t(Z2), t(queue), temp)
    assert loss.item() == pytest.approx(total / 2, rel=1e-12)
    assert logits.shape == (2, 4)


def test_byol_and_simsiam_by_hand() -> None:
    expected = sum(2 - 2 * cos(p, z) for p, z in zip(Z1, Z2, strict=True)) / 2
    assert byol_loss(t(Z1), t(Z2)).item() == pytest.approx(expected, rel=1e-12)
    # ||p/|p| - z/|z|||^2 is the same number
    diff = sum(sum((a / math.hypot(*p) - b / math.hypot(*z)) ** 2 for a, b in zip(p, z, strict=True))
               for p, z in zip(Z1, Z2, strict=True)) / 2
    assert expected == pytest.approx(diff, rel=1e-12)
    neg = -sum(cos(p, z) for p, z in zip(Z1, Z2, strict=True)) / 2
    assert negative_cosine(t(Z1), t(Z2)).item() == pytest.approx(neg, rel=1e-12)
    p, z = t(Z1).requires_grad_(), t(Z2).requires_grad_()
    negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None  # stop-gradient on the target


A = [[1.0, 2.0], [3.0, 0.0], [2.0, 5.0]]  # B = 3, D = 2
C = [[0.0, 1.0], [2.0, 2.0], [1.0, 6.0]]


def column(rows: list[list[float]], d: int) -> list[float]:
    return [r[d] for r in rows]


def test_barlow_twins_by_hand() -> None:
    b, lambd, eps = 3, 0.0051, 1e-5

    def standardise(x: list[float]) -> list[float]:
        m = sum(x) / b
        var = sum((v - m) ** 2 for v in x) / b  # biased, as BatchNorm
        return [(v - m) / math.sqrt(var + eps) for v in x]

    za = [standardise(column(A, d)) for d in range(2)]
    zc = [standardise(column(C, d)) for d in range(2)]
    corr = [[sum(za[i][n] * zc[j][n] for n in range(b)) / b for j in range(2)] for i in range(2)]
    expected = (1 - corr[0][0]) ** 2 + (1 - corr[1][1]) ** 2 + lambd * (corr[0][1] ** 2
                                                                         + corr[1][0] ** 2)
    assert barlow_twins_loss(t(A), t(C), lambd).item() == pytest.approx(expected, rel=1e-10)


def test_vicreg_by_hand() -> None:
    b, d = 3, 2
    mse = sum((A[n][k] - C[n][k]) ** 2 for n in range(b) for k in range(d)) / (b * d)

    def var_cov(x: list[list[float]]) -> tuple[float, float]:
        mean = [sum(column(x, k)) / b for k in range(d)]
        cov = [[sum((x[n][i] - mean[i]) * (x[n][j] - mean[j]) for n in range(b)) / (b - 1)
                for j in range(d)] for i in range(d)]
        v = sum(max(0.0, 1 - math.sqrt(cov[k][k] + 1e-4)) for k in range(d)) / d
        return v, (cov[0][1] ** 2 + cov[1][0] ** 2) / d

    (va, ca), (vc, cc) = var_cov(A), var_cov(C)
    expected = 25 * mse + 25 * (va + vc) / 2 + 1 * (ca + cc)
    assert vicreg_loss(t(A), t(C)).item() == pytest.approx(expected, rel=1e-10)
    # small spread: the variance hinge is active
    small = [[0.1 * v for v in r] for r in A]
    vs, _ = var_cov(small)
    assert vs > 0


def test_balanced_cross_entropy_by_hand() -> None:
    logits, labels, counts = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 1, 1], [1, 4]
    ce = [-math.log(math.exp(r[y]) / sum(math.exp(v) for v in r))
          for r, y in zip(logits, labels, strict=True)]
    w = [1 / counts[y] for y in labels]
    expected = sum(a * b for a, b in zip(w, ce, strict=True)) / sum(w)
    got = balanced_cross_entropy(t(logits), torch.tensor(labels), torch.tensor(counts))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_embedding_std_detects_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4096, 64, generator=g)
    assert embedding_std(spread).item() == pytest.approx(1 / math.sqrt(64), rel=0.05)
    collapsed = torch.ones(4096, 64) + 1e-4 * torch.randn(4096, 64, generator=g)
    assert embedding_std(collapsed).item() < 1e-3


def test_rotation_labels_match_the_transform() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).view(2, 3, 4, 4)
    rotated, labels = rotate_batch(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for i in range(8):
        k, b = int(labels[i]), i % 2
        image = x[b].numpy()
        import numpy as np
        assert np.array_equal(rotated[i].numpy(), np.rot90(image, k, axes=(1, 2)))
    # a quarter turn counter-clockwise: the top row becomes the left column, reversed
    assert rotated[2, 0, :, 0].tolist() == x[0, 0, 0].flip(0).tolist()


def test_jigsaw_permutations_and_tiles_match() -> None:
    perms = jigsaw_permutations(30)
    assert perms.shape == (30, 9) and len({tuple(p) for p in perms.tolist()}) == 30
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    hamming = (perms[:, None] != perms[None]).sum(-1)
    assert int(hamming[~torch.eye(30, dtype=torch.bool)].min()) >= 2
    assert len({tuple(p) for p in jigsaw_permutations(24, grid=2).tolist()}) == 24
    x = torch.arange(2 * 1 * 9 * 9, dtype=torch.float64).view(2, 1, 9, 9)
    choice = torch.tensor([4, 17])
    tiles = jigsaw_tiles(x, perms, choice, grid=3, tile_fraction=1.0)  # whole cells
    for b in range(2):
        for i in range(9):
            cell = int(perms[choice[b], i])
            r, c = divmod(cell, 3)
            assert torch.equal(tiles[b, i, 0], x[b, 0, 3 * r:3 * r + 3, 3 * c:3 * c + 3])
    crops = jigsaw_tiles(x, perms, choice, grid=3, tile_fraction=0.67,
                         generator=torch.Generator().manual_seed(0))
    assert crops.shape == (2, 9, 1, 2, 2)
    for b in range(2):  # each crop lies inside the cell its permutation names
        for i in range(9):
            r, c = divmod(int(perms[choice[b], i]), 3)
            top = int(crops[b, i, 0, 0, 0]) - 81 * b
            assert 3 * r <= top // 9 <= 3 * r + 1 and 3 * c <= top % 9 <= 3 * c + 1


def test_kmeans_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    truth = torch.arange(3).repeat_interleave(20)
    x = centres[truth] + 0.05 * torch.randn(60, 3, generator=g)
    centroids, assign = kmeans(x, 3, generator=torch.Generator().manual_seed(1))
    # the same partition, whatever the cluster numbering
    assert len({(int(a), int(b)) for a, b in zip(truth, assign, strict=True)}) == 3
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3))


def test_knn_accuracy_and_projection() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    bank_y = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.2, 1.0]])
    assert knn_accuracy(bank, bank_y, query, torch.tensor([0, 1, 1]), k=2) == 1.0
    assert knn_accuracy(bank, bank_y, query, torch.tensor([1, 1, 1]), k=2) == pytest.approx(2 / 3)
    assert linear_probe_accuracy(bank, bank_y, query, torch.tensor([0, 1, 1]), 2) == 1.0
    pts = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [4.0, 0.0, 1e-3]])
    proj = project_2d(pts)
    assert proj.shape == (3, 2) and abs(float(proj[2, 0] - proj[0, 0])) == pytest.approx(4.0, 1e-4)
