"""What a run on several processes refuses, on every rank at once, with a one-line reason:
self-supervised learners through :func:`fewshot.train` (the CLI refuses them too). Two gloo
processes on the CPU."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from episodes import ImageBatchSampler, TensorClassDataset
from fewshot import TrainConfig, build_learner, make_spec, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def outcome(fn) -> str:
    """``fn()``'s error message, or "done"."""
    try:
        fn()
    except (ValueError, RuntimeError) as e:
        return str(e)
    return "done"


def ssl_train() -> None:
    images = torch.randint(0, 255, (16, 3, 16, 16), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    ds = TensorClassDataset(images, torch.arange(16) % 2, ["a", "b"])
    spec = make_spec("moco", "conv4", 3, 16, {"hidden": 8, "proj_hidden": 8, "queue_size": 8,
                                             "bn_splits": 2})
    learner = build_learner(spec)
    train(learner, spec, ImageBatchSampler(ds, 8, views=learner.view_augments()),
          TrainConfig(steps=1, progress=False))


def worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=20))
    out = {"ssl": outcome(ssl_train)}
    torch.save(out, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("dist_checks")
    mp.spawn(worker, args=(str(folder),), nprocs=2, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_train_refuses_self_supervised_learners_on_several_processes(ranks):
    for out in ranks:
        assert out["ssl"].startswith("self-supervised pre-training runs in one process"), out
        assert out["ssl"].endswith("run it without torchrun") and "\n" not in out["ssl"]

