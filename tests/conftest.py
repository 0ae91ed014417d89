"""Shared fixtures: a cache folder per test session, few threads, tiny datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def f64():
    """float64 as the default dtype for the test (exact gradient comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["FEWSHOT_CACHE"] = str(tmp_path_factory.mktemp("fewshot-cache"))


@pytest.fixture
def tiny_dataset():
    """12 classes x 8 images of 1x8x8 uint8 whose pixels encode (class, item)."""
    from episodes import TensorClassDataset

    def make(num_classes: int = 12, per_class: int = 8, channels: int = 1, size: int = 8):
        targets = torch.arange(num_classes).repeat_interleave(per_class)
        images = torch.zeros(len(targets), channels, size, size, dtype=torch.uint8)
        images[:, :, 0, 0] = targets.view(-1, 1).to(torch.uint8)
        images[:, :, 0, 1] = torch.arange(len(targets)).view(-1, 1).to(torch.uint8)
        images[:, :, 1:] = torch.randint(0, 255, (len(targets), channels, size - 1, size),
                                         generator=torch.Generator().manual_seed(0),
                                         dtype=torch.uint8)
        return TensorClassDataset(images, targets, [f"class{c:02d}" for c in range(num_classes)])

    return make
