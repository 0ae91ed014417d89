"""Multinomial logistic regression on each episode's support features (Tian et al. 2020, RFS),
fitted to convergence for all T episodes at once on the device.

RFS (``eval/meta_eval.py``, read, not copied) L2-normalises the features and calls scikit-learn's
``LogisticRegression(solver='lbfgs', max_iter=1000, multi_class='multinomial')`` once per
episode: C = 1, an L2 penalty on the weights and none on the intercept. scikit-learn minimises
``mean_s CE(W x_s + b, y_s) + |W|^2 / (2 C S)`` (S support items), whose minimiser is the same as
``C * sum_s CE + |W|^2 / 2``. Here that objective is minimised by L-BFGS (strong Wolfe line
search) in float64, for the sum of the T episodes' objectives: the objectives are independent,
so the sum's minimiser is every episode's own minimiser, and the stopping test (largest gradient
entry below ``tol``) holds for every episode. The intercept is determined only up to a constant
added to every class (the softmax ignores it); starting from zero, every update keeps the
intercepts summing to zero, as scikit-learn's L-BFGS does. Differences: RFS also augments each
support image 5 times (``n_aug_support_samples``); not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import linear_logits


def logistic_objective(weight: Tensor, bias: Tensor, x: Tensor, y: Tensor, C: float) -> Tensor:
    """Per-episode objective ``[T]``: ``mean_s CE + |W_t|^2 / (2 C S)``.

    weight ``[T, N, D]``, bias ``[T, N]``, x ``[T, S, D]``, y ``[T, S]``.
    """
    t, s = y.shape
    ce = F.cross_entropy(linear_logits(x, weight, bias).flatten(0, 1), y.flatten(),
                         reduction="none").view(t, s).mean(1)
    return ce + weight.pow(2).sum((1, 2)) / (2 * C * s)


def fit_logistic(support: Tensor, support_y: Tensor, n_way: int, C: float = 1.0,
                 max_iter: int = 1000, tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Weights ``[T, N, D]`` and intercepts ``[T, N]`` (float64) minimising
    :func:`logistic_objective` for each episode (support ``[T, S, D]``, labels ``[T, S]``)."""
    x = support.detach().double()
    weight = torch.zeros(x.shape[0], n_way, x.shape[2], dtype=torch.float64, device=x.device,
                         requires_grad=True)
    bias = torch.zeros(x.shape[0], n_way, dtype=torch.float64, device=x.device,
                       requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=tol, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = logistic_objective(weight, bias, x, support_y, C).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


def logistic_logits(support: Tensor, support_y: Tensor, query: Tensor, n_way: int, C: float = 1.0,
                    normalize: bool = True, max_iter: int = 1000, tol: float = 1e-6) -> Tensor:
    """Query logits ``[T, M, N]`` of the logistic regression fitted on each episode's support set
    (features L2-normalised first when ``normalize``, as RFS)."""
    if normalize:
        support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
    weight, bias = fit_logistic(support, support_y, n_way, C, max_iter, tol)
    return linear_logits(query.double(), weight, bias).to(query.dtype)
