"""Bounded memory: how many images (or episodes) one forward pass may take.

Every forward over images (evaluation, prediction, feature extraction, training) is split into
chunks whose size comes from a memory budget in bytes: ``--max-memory`` when given, otherwise a
share of what the device has free (:func:`memory_budget`). The cost of one item is measured, not
guessed: :func:`bytes_per_item` runs the function on one item under a dispatch mode that adds up
the bytes of every tensor each operation creates (activations, temporaries, the backward's
gradients when it runs one). That sum bounds the peak from above (tensors freed along the way
count too), so a chunk sized from it fits the budget on any device.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CPU_BUDGET = 1 << 30  # bytes a CPU forward may take by default (at most a quarter of what is free)
GPU_SHARE = 0.5  # share of the GPU's free memory a forward may take by default
def fmt_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: bytes in binary units, for messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_memory(device: torch.device | str) -> int:
    """Bytes free on ``device``: the CUDA allocator's view, or ``MemAvailable`` on the host."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free) + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 8 << 30


def memory_budget(device: torch.device | str, max_memory: int | None = None) -> int:
    """Bytes one forward may take: ``max_memory`` if given; else on a GPU half its free memory, on
    the CPU 1 GiB or a quarter of the free memory if that is less."""
    if max_memory is not None:
        return int(max_memory)
    device = torch.device(device)
    if device.type == "cuda":
        return int(GPU_SHARE * free_memory(device))
    return min(CPU_BUDGET, free_memory(device) // 4)


class _CountBytes(TorchDispatchMode):
    """Adds up the bytes of every tensor that an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func not in (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default,
                        torch.ops.aten.detach.default):
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor) and t.device.type != "meta":
                    self.total += t.numel() * t.element_size()
        return out


def bytes_per_item(fn: Callable[[], object]) -> int:
    """Bytes created by the tensor operations of ``fn()`` (an upper bound of its peak memory).

    Call it with ``fn`` running one item (one image, one episode); include the backward in
    ``fn`` to size a training step.
    """
    with _CountBytes() as counter:
        fn()
    return max(counter.total, 1)


def items_per_chunk(item_bytes: int, budget: int, total: int | None = None) -> int:
    """How many items of ``item_bytes`` fit ``budget`` (at least 1, at most ``total``). One item
    that does not fit is still run (nothing can be split further), with a warning."""
    if item_bytes > budget:
        warnings.warn(f"the memory budget ({fmt_bytes(budget)}: --max-memory, or a share of the "
                      f"free memory) is less than one item's {fmt_bytes(item_bytes)}: running one "
                      f"item per forward, which takes more than the budget; raise --max-memory",
                      stacklevel=2)
    n = max(1, budget // max(item_bytes, 1))
    return min(n, total) if total is not None else n


def chunks(total: int, size: int) -> list[slice]:
    """``ceil(total / size)`` consecutive slices covering ``range(total)``."""
    return [slice(s, min(s + size, total)) for s in range(0, total, max(size, 1))]


def forward_in_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int) -> Tensor:
    """``fn`` over the first dimension of ``x`` ``chunk`` items at a time, concatenated: equal
    to ``fn(x)`` for any ``fn`` that treats items independently (a backbone in eval mode)."""
    if x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(x[s]) for s in chunks(x.shape[0], chunk)])


def image_chunk(module: Callable[[Tensor], Tensor], image_shape: tuple[int, ...],
                device: torch.device | str, budget: int, dtype: torch.dtype = torch.float32,
                total: int | None = None) -> int:
    """Images per inference forward of ``module`` (``[B, *image_shape] -> [B, ...]``) within
    ``budget`` bytes, measured on one image without autograd."""
    probe = torch.zeros(1, *image_shape, device=device, dtype=dtype)
    with torch.no_grad():
        per_image = bytes_per_item(lambda: module(probe))
    return items_per_chunk(per_image + math.prod(image_shape) * 4, budget, total)
