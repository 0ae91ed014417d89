"""The pure functions of semi-supervised learning against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.semisup.losses import (
    confidence_mask,
    entropy,
    guess_labels,
    linear_rampup,
    masked_consistency,
    mixup,
    sharpen,
    sigmoid_rampup,
    soft_cross_entropy,
    softmax_mse,
    tsa_threshold,
)


def test_sharpen() -> None:
    # 0.6^2 = 0.36, 0.4^2 = 0.16, sum 0.52
    out = sharpen(torch.tensor([[0.6, 0.4]]), 0.5)
    assert torch.allclose(out, torch.tensor([[0.36 / 0.52, 0.16 / 0.52]]))
    assert torch.allclose(sharpen(torch.tensor([0.6, 0.4]), 1.0), torch.tensor([0.6, 0.4]))


def test_confidence_mask_and_masked_consistency() -> None:
    probs = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.05, 0.95]])
    assert confidence_mask(probs, 0.95).tolist() == [1.0, 0.0, 1.0]
    # uniform logits over 2 classes: cross-entropy log 2 for any target; masked rows count in
    # the mean (FixMatch divides by all mu*B images)
    loss = masked_consistency(torch.zeros(3, 2), torch.tensor([0, 1, 1]),
                              torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx(2 * math.log(2) / 3)
    assert masked_consistency(torch.zeros(3, 2), torch.tensor([0, 1, 1])).item() == \
        pytest.approx(math.log(2))


def test_soft_cross_entropy() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax 0.25, 0.75
    got = soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]]))
    assert got.item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)
    assert soft_cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75),
                                                                                 rel=1e-6)


def test_softmax_mse_and_entropy() -> None:
    # softmax 0.5, 0.5 against 1, 0: (0.25 + 0.25) / 2 classes
    assert softmax_mse(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.25)
    assert entropy(torch.zeros(2, 4)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_guess_labels() -> None:
    # two views of one image: softmax 0.5/0.5 and 0.8/0.2, mean 0.65/0.35, sharpened at T=0.5
    views = torch.stack([torch.zeros(1, 2), torch.tensor([[math.log(0.8), math.log(0.2)]])])
    expect = torch.tensor([[0.65 ** 2, 0.35 ** 2]]) / (0.65 ** 2 + 0.35 ** 2)
    assert torch.allclose(guess_labels(views, 0.5), expect, atol=1e-6)


def test_mixup_labels() -> None:
    x, y = torch.tensor([[1.0], [0.0]]), torch.eye(2)
    mx, my = mixup(x, y, 0.3, torch.tensor([1, 0]))  # lam' = max(0.3, 0.7) = 0.7
    assert torch.allclose(mx, torch.tensor([[0.7], [0.3]]))
    assert torch.allclose(my, torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    mx2, _ = mixup(x, y, 0.7, torch.tensor([1, 0]))
    assert torch.equal(mx, mx2)


def test_rampups_and_tsa() -> None:
    assert linear_rampup(5, 10) == 0.5 and linear_rampup(20, 10) == 1.0 and linear_rampup(0, 0) == 1
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0
    assert tsa_threshold("none", 0.3, 4) == 1.0
    assert tsa_threshold("linear", 0.5, 4) == pytest.approx(0.5 * 0.75 + 0.25)
    assert tsa_threshold("exp", 1.0, 4) == pytest.approx(1.0)
    assert tsa_threshold("log", 0.0, 4) == pytest.approx(0.25)
