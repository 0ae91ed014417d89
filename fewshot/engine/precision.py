"""Numeric precision and memory layout of training and evaluation: the CPU fast path.

``precision`` is ``"fp32"``, ``"bf16"`` (bfloat16 autocast: convolutions and matrix products in
bfloat16, reductions and losses in float32) or ``"auto"``, resolved by :func:`resolve_precision`:
bf16 on a CPU with bfloat16 units (:func:`cpu_has_bf16`: AVX512-BF16 or AMX-BF16) for the
methods whose paired accuracy test showed no loss (:data:`BF16_METHODS`), fp32 elsewhere (on a
GPU too: not measured there yet). On a CPU without such units bfloat16 is emulated and slower.

Channels-last (NHWC) weights make oneDNN run the convolutions, BatchNorm, ReLU and pooling in its
faster layout on the CPU; :func:`use_channels_last` turns it on for learners whose
``channels_last_cpu`` is True (MAML's is False: its per-task fast weights come back in the
default layout, and the conversions cost more than they save). Both choices are measured in
BENCHMARKS.md ("The CPU fast path").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)
# methods trained in bf16 by "auto" on a CPU with bf16 units (paired accuracy tests, BENCHMARKS.md).
# Not MAML: its second-order meta-gradient in bf16 drifts from fp32's with the inner steps (cosine
# 0.97, 0.89, 0.75 at 1, 2, 5 steps on Omniglot; 0.18 at 5 on the embedded data), so it stays fp32
# unless asked for.
BF16_METHODS = frozenset({"protonet", "matching", "relation"})
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`CHOICES`, else a one-line ``ValueError``."""
    if precision not in CHOICES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(CHOICES)}")
    return precision


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether the ``flags`` lines of ``cpuinfo`` (the text of ``/proc/cpuinfo``) name a bfloat16
    unit (:data:`CPU_BF16_FLAGS`)."""
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") and ":" in line
             for f in line.split(":", 1)[1].split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (AVX512-BF16 or AMX-BF16), where bf16
    autocast runs faster than fp32. Asks PyTorch (``torch.cpu._is_avx512_bf16_supported``,
    ``_is_amx_tile_supported``) where it can, else reads ``/proc/cpuinfo``
    (:func:`cpuinfo_has_bf16`; no such file: False)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                          "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(bool(probe()) for probe in probes)
    path = Path("/proc/cpuinfo")
    return path.is_file() and cpuinfo_has_bf16(path.read_text())


def resolve_precision(precision: str, device: torch.device | str, method: str | None = None,
                      has_bf16: bool | None = None) -> Precision:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself unless it is ``"auto"``, which is bf16 on a
    CPU with bfloat16 units (``has_bf16``, default :func:`cpu_has_bf16`) when ``method`` is one
    of :data:`BF16_METHODS` (None: any method), fp32 otherwise."""
    check_precision(precision)
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if torch.device(device).type != "cpu" or (method is not None and method not in BF16_METHODS):
        return "fp32"
    return "bf16" if (cpu_has_bf16() if has_bf16 is None else has_bf16) else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (``"bf16"``: bfloat16 autocast on ``device``'s type;
    ``"fp32"``: disabled)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def use_channels_last(learner: nn.Module, device: torch.device | str,
                      wanted: bool | None = None) -> bool:
    """Whether ``learner`` trains with channels-last weights on ``device``: ``wanted`` when given,
    else on a CPU for learners whose ``channels_last_cpu`` is True (default True)."""
    if wanted is not None:
        return wanted
    return torch.device(device).type == "cpu" and getattr(learner, "channels_last_cpu", True)


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D parameters and buffers in channels-last layout, in place (the
    ``Parameter`` objects stay the same, so an optimizer built on them keeps working). Inputs
    need no conversion: oneDNN follows the weights' layout."""
    return module.to(memory_format=torch.channels_last)


def check_resumed_precision(ckpt: dict, precision: str, source: Path) -> None:
    """Refuse to resume a run in another precision than its checkpoint's (one line, with the
    fix); a checkpoint from before precisions were recorded has its ``amp`` flag."""
    saved = ckpt.get("config") or {}
    before = saved.get("resolved_precision", "bf16" if saved.get("amp") else "fp32")
    if before != precision:
        raise ValueError(f"cannot resume {source}: it was trained in {before}, this run is in "
                         f"{precision}: resume with --precision {before}, or train into a new "
                         f"--out")
