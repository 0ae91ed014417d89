"""Expected calibration error and temperature scaling (fewshot.calibration) against hand-computed
values, a second implementation (the authors' loop over bins, written again here) and cases with
a known answer."""

import math

import pytest
import torch

from fewshot.calibration import (
    T_RANGE,
    calibration_bins,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
    temperature_nll,
)


def logits_of(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.55 (wrong); 15 bins of width 1/15:
    # 0.9 -> (13/15, 14/15], 0.7 -> (10/15, 11/15], 0.55 -> (8/15, 9/15]
    logits = logits_of([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 1])
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(0 - 0.55)
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-12)
    bins = calibration_bins(logits, labels)
    assert bins.shape == (1, 3, 15)
    assert bins[0, 0].tolist() == [0] * 8 + [1, 0, 1, 0, 0, 2, 0]


def reference_ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Guo et al.'s ECE as their code computes it: a loop over (lower, upper] bins."""
    conf, pred = logits.softmax(-1).max(-1)
    right = pred.eq(labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += float(inside.double().mean() * (conf[inside].mean() - right[inside].mean()).abs())
    return total


def test_ece_equals_the_loop_over_bins_and_sums_over_episodes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (6, 40), generator=g)
    ece = expected_calibration_error(logits, labels)
    assert ece == pytest.approx(reference_ece(logits.flatten(0, 1), labels.flatten()), abs=1e-12)
    per_episode = calibration_bins(logits, labels)
    assert per_episode.shape == (6, 3, 15)
    assert ece_from_bins(per_episode[:2]) == pytest.approx(
        expected_calibration_error(logits[:2], labels[:2]), abs=1e-12)
    assert ece_from_bins(per_episode) == pytest.approx(ece, abs=1e-12)


def test_ece_of_no_prediction_is_nan_and_bad_shapes_are_refused():
    assert math.isnan(ece_from_bins(torch.zeros(3, 15)))
    with pytest.raises(ValueError, match="disagree"):
        calibration_bins(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("true_logits,counts", [
    ([math.log(3), 0.0], [3, 1]),  # p = (3/4, 1/4): 4 copies, 3 labelled 0
    ([math.log(4), math.log(2), 0.0], [4, 2, 1]),  # p = (4/7, 2/7, 1/7): 7 copies
])
def test_logits_twice_too_confident_get_temperature_two(true_logits, counts):
    # each label appears as often as the true probabilities say, so the likelihood is largest
    # at the true logits: given logits twice as large, the fitted temperature is exactly 2
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    logits = 2 * torch.tensor(true_logits).expand(len(labels), -1)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=1e-6)
    nll = temperature_nll(logits, labels, t)
    assert nll < temperature_nll(logits, labels, 1.9) and nll < temperature_nll(logits, labels, 2.1)
    assert expected_calibration_error(logits, labels, temperature=t) == pytest.approx(0, abs=1e-6)
    assert expected_calibration_error(logits, labels) > 0.1


def test_temperature_of_sampled_overconfident_logits_and_of_separable_ones():
    g = torch.Generator().manual_seed(1)
    true = torch.randn(20000, 5, generator=g, dtype=torch.float64) * 2
    labels = torch.multinomial(true.softmax(-1), 1, generator=g).squeeze(1)
    assert fit_temperature(3 * true, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(true / 2, labels) == pytest.approx(0.5, rel=0.05)
    # every prediction right: the NLL falls as T -> 0, so the range's lower end
    perfect = torch.eye(3).repeat(4, 1) * 5
    assert fit_temperature(perfect, perfect.argmax(-1)) == pytest.approx(T_RANGE[0], rel=1e-5)
