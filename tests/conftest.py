"""Shared fixtures: a cache folder per test session, few threads, tiny datasets."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import ImagePipeline, TensorClassDataset
from fewshot.cli import main

# the module, not the function ``fewshot.engine.train`` that the package exports under its name
train_loop = importlib.import_module("fewshot.engine.train")

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def f64():
    """float64 as the default dtype for the test (exact gradient comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_rgb(classes: int, seed: int, per_class: int = 12, size: int = 16) -> TensorClassDataset:
    """``classes`` x ``per_class`` random uint8 RGB images of ``size`` pixels, seeded: a tiny
    class-split dataset for the benchmark harnesses' tests."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * per_class, 3, size, size), generator=g,
                           dtype=torch.uint8)
    return TensorClassDataset(images, torch.arange(classes).repeat_interleave(per_class),
                              [f"c{seed}-{i}" for i in range(classes)],
                              ImagePipeline(3, size, "bilinear"))


class _SlowClock:
    """The ``time`` module, but each ``perf_counter()`` reads one second after the last."""

    def __init__(self) -> None:
        self.now = time.perf_counter()

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def first_step_only() -> Callable[[], AbstractContextManager[None]]:
    """A context manager factory: inside it the training loop's clock moves one second per
    reading, so a run given ``--time-limit 0.01`` (0.6 s) stops after its first step however fast
    the machine is (a resume test's interrupted half)."""

    @contextmanager
    def patched() -> Iterator[None]:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(train_loop, "time", _SlowClock())
            yield

    return patched


@pytest.fixture
def stopped_and_resumed(first_step_only) -> Callable[[list[str], Path, int], dict]:
    """A function ``(argv, root, steps) -> checkpoint``: runs the ``fewshot`` command ``argv``
    (without ``--out``) uninterrupted into ``root/full``, and into ``root/half`` stopped after its
    first step (``--time-limit`` under :func:`first_step_only`) then resumed; asserts both end at
    step ``steps`` with bit-identical weights and buffers, and returns ``root/full/last.pt``."""
    def run(argv: list[str], root: Path, steps: int) -> dict:
        main([*argv, "--out", str(root / "full")])
        with first_step_only():
            main([*argv, "--out", str(root / "half"), "--time-limit", "0.01"])
        assert torch.load(root / "half" / "last.pt", weights_only=True)["step"] < steps
        main([*argv, "--out", str(root / "half"), "--resume"])
        full, half = (torch.load(root / n / "last.pt", weights_only=True) for n in ("full", "half"))
        assert full["step"] == half["step"] == steps
        assert full["model"].keys() == half["model"].keys()
        for k in full["model"]:
            assert torch.equal(full["model"][k], half["model"][k]), k
        return full

    return run


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


def make_tree(root: Path) -> Path:
    """``root/data``: 8 classes x 6 grayscale 20x20 images; class c has a bright bar at row 2c."""
    rng = np.random.default_rng(0)
    for c in range(8):
        (root / "data" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 60, (20, 20), dtype=np.uint8)
            img[2 * c:2 * c + 2] = 255
            Image.fromarray(img, "L").save(root / "data" / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tiny folder dataset in ``tmp_path/data`` (:func:`make_tree`)."""
    return make_tree(tmp_path)


def support_query(tree: Path) -> tuple[Path, Path]:
    """``tree/support`` (classes 0 and 1, one image each) and ``tree/query`` (one image of class
    0) from :func:`make_tree`'s images, for ``fewshot predict``."""
    support, query = tree / "support", tree / "query"
    for c in (0, 1):
        (support / f"class{c}").mkdir(parents=True, exist_ok=True)
        (support / f"class{c}" / "0.png").write_bytes((tree / f"data/class{c}/0.png").read_bytes())
    query.mkdir(exist_ok=True)
    (query / "q.png").write_bytes((tree / "data/class0/1.png").read_bytes())
    return support, query


def data_args(tree: Path) -> list[str]:
    return ["--dataset", "folder", "--root", str(tree / "data"), "--split-ratios", "0.5", "0.25",
            "0.25", "--channels", "1", "--image-size", "16", "--cache-dir", str(tree / "cache"),
            "--device", "cpu"]
