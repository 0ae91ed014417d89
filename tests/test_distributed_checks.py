"""What a run on several processes refuses, on every rank at once, with a one-line reason:
self-supervised learners through :func:`fewshot.train` (the CLI refuses them too), and an
all-reduced gradient whose ranks reached different parameters (which would otherwise wait for
the collective's timeout). Two gloo processes on the CPU."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from episodes import ImageBatchSampler, TensorClassDataset
from fewshot import ModelSpec, TrainConfig, build_learner, make_spec, train
from fewshot.engine.distributed import GradientSync, current

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


MAML = ModelSpec("maml", "conv4", 1, 16, {"hidden": 4, "n_way": 2})


def reduce_uneven_gradients(rank: int) -> None:
    """MAML (all-reduced gradients) with a gradient for its first parameter on rank 0 only."""
    torch.manual_seed(0)
    learner = build_learner(MAML)
    sync = GradientSync(learner, current(), 0.5, torch.device("cpu"))
    for i, p in enumerate(learner.parameters()):
        p.grad = None if i == 0 and rank == 1 else torch.ones_like(p)
    sync.finish()


def worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=20))
    out = {"ssl": outcome(ssl_train), "uneven": outcome(lambda: reduce_uneven_gradients(rank))}
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


def test_ranks_disagreeing_on_gradients_fail_at_once(ranks):
    first = next(iter(build_learner(MAML).named_parameters()))[0]
    for out in ranks:
        assert "reached different parameters" in out["uneven"], out
        assert f"({first} have a gradient on some ranks only)" in out["uneven"], out
