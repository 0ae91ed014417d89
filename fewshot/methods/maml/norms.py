"""Normalisation layers written out in primitive ops, for exact second-order gradients under vmap.

Under ``torch.func.vmap``, PyTorch's fused batch/instance/layer norm kernels give wrong
*second-order* gradients (their double-backward batching rule is incorrect for ``grad_input``:
pytorch/functorch#534; measured here as relative errors of 0.5-3% in MAML meta-gradients, whereas
first-order gradients and the unbatched fused kernels are correct). :class:`DecomposedNorms` is a
``torch.overrides.TorchFunctionMode`` that, while active, computes ``F.batch_norm`` (with batch
statistics and no running-stat update), ``F.instance_norm`` and ``F.layer_norm`` from means and
variances, which autograd and vmap differentiate exactly to any order. Modules are not touched:
any model's norm layers call these functions, so the mode covers torchvision models too. Calls
that would read or update running statistics go to PyTorch unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ...models.episode_norm import BN_ARGS, bind_args


def _normalise(x: Tensor, dims: list[int], eps: float, weight: Tensor | None,
               bias: Tensor | None, shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` with statistics over ``dims``, as
    ``x * scale + shift`` (the per-channel factors first, then one fused pass over ``x``, as
    PyTorch's CPU kernel computes it): fewer full-size intermediates for autograd to store and
    differentiate than the textbook order. Returns the output and the statistics it used, the
    mean and the biased variance (``keepdim`` shapes)."""
    var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.reshape(shape)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.reshape(shape)
    return torch.addcmul(shift, x, scale), mean, var


def batch_norm_with_stats(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batch_norm`, and the batch mean and biased variance it normalised with (``[C]``)."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    y, mean, var = _normalise(x, [0, *range(2, x.dim())], eps, weight, bias, shape)
    return y, mean.flatten(), var.flatten()


def batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """Batch statistics over all dims but 1 (``[B, C, *]``), biased variance, as BatchNorm."""
    return batch_norm_with_stats(x, weight, bias, eps)[0]


def instance_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """Statistics of each sample and channel over the spatial dims (``[B, C, *]``)."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    return _normalise(x, list(range(2, x.dim())), eps, weight, bias, shape)[0]


def layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None,
               bias: Tensor | None, eps: float) -> Tensor:
    """Statistics over the last ``len(normalized_shape)`` dims."""
    n = len(normalized_shape)
    shape = [1] * (x.dim() - n) + list(normalized_shape)
    return _normalise(x, list(range(x.dim() - n, x.dim())), eps, weight, bias, shape)[0]


IN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats",
           "momentum", "eps")
LN_ARGS = ("input", "normalized_shape", "weight", "bias", "eps")


class DecomposedNorms(TorchFunctionMode):
    """While active, batch/instance/layer norm run as primitive ops (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            a = bind_args(BN_ARGS, args, kwargs)
            if a.get("running_mean") is None and a.get("running_var") is None:
                return batch_norm(a["input"], a.get("weight"), a.get("bias"), a.get("eps", 1e-5))
        elif func is F.instance_norm:
            a = bind_args(IN_ARGS, args, kwargs)
            if a.get("use_input_stats", True) and a.get("running_mean") is None:
                return instance_norm(a["input"], a.get("weight"), a.get("bias"),
                                     a.get("eps", 1e-5))
        elif func is F.layer_norm:
            a = bind_args(LN_ARGS, args, kwargs)
            return layer_norm(a["input"], a["normalized_shape"], a.get("weight"), a.get("bias"),
                              a.get("eps", 1e-5))
        return func(*args, **kwargs)
