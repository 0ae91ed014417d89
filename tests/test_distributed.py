"""Distributed training (fewshot.engine.distributed): two gloo processes on the CPU against one process.

One spawn of two ranks (module fixture) computes everything the tests below compare: the
synchronised gradient of one step (ProtoNet through DDP, MAML through an all-reduce), the weights
after a few steps, a run resumed on as many ranks, the evaluation of fixed episodes. The tests
compute the single-process references here and compare.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from episodes import Episode, EpisodeSampler, FixedEpisodes, ImageBatchSampler, TensorClassDataset
from episodes.shard import rank_seed, shard_range
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.engine.distributed import GradientSync, current
from fewshot.engine.memory import chunks
from fewshot.engine.streams import shard_sampler
from fewshot.engine.train import accumulate
from fewshot.heads import head_config
from fewshot.heads.scoring import evaluate_head

from .launch import alive, stop, torchrun, worker_pids

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

SPECS = {"protonet": ModelSpec("protonet", "conv4", 1, 16, {"hidden": 8}),
         "maml": ModelSpec("maml", "conv4", 1, 16, {"hidden": 8, "n_way": 4, "inner_steps": 1})}
T = 3  # episodes per step: split 2 + 1 across the ranks, so the shares are unequal


def dataset() -> TensorClassDataset:
    """12 classes x 8 random 1x16x16 images."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (96, 1, 16, 16), generator=g, dtype=torch.uint8)
    return TensorClassDataset(images, torch.arange(12).repeat_interleave(8),
                              [f"c{i}" for i in range(12)])


def to_double(episode: Episode) -> Episode:
    return replace(episode, support_x=episode.support_x.double(),
                   query_x=episode.query_x.double())


def sampler(seed: int = 0, double: bool = False) -> EpisodeSampler:
    return EpisodeSampler(dataset(), 4, 1, 2, episodes_per_batch=T, seed=seed,
                          augment=to_double if double else None)


def fresh(method: str, double: bool = False):
    torch.manual_seed(0)
    learner = build_learner(SPECS[method])
    return learner.double() if double else learner


def step_gradient(method: str, sync: bool) -> dict[str, torch.Tensor]:
    """The gradient of one step on the first batch (float64), synchronised across the ranks
    when ``sync`` (the local episodes in chunks of one: DDP's no_sync path), else on one
    process."""
    learner, s = fresh(method, double=True), sampler(double=True)
    ctx = current() if sync else None
    if sync:
        shard_sampler(s, ctx)
    local = s.part.stop - s.part.start
    gs = GradientSync(learner, ctx, local / T, torch.device("cpu")) if sync else None
    accumulate(learner, s.sample(), chunks(local, 1 if sync else local), False, gs)
    if sync:
        gs.finish()
    return {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}


def short_run(method: str, steps: int, ckdir: str | None = None, resume: bool = False,
              seed: int = 0):
    learner = fresh(method)
    config = TrainConfig(steps=steps, lr=0.05, optimizer="sgd", checkpoint_dir=ckdir,
                         checkpoint_every=2, resume=resume, progress=False,
                         precision="fp32")  # ranks against one process: float32 rounding only
    train(learner, SPECS[method] if ckdir else None, sampler(seed), config)
    return learner


def fixed() -> FixedEpisodes:
    return FixedEpisodes.generate(dataset(), 4, 1, 2, 7, seed=3)  # 7: shards of 4 and 3


def head_scores() -> dict:
    """A logistic head's accuracies on the fixed episodes, and how many images the backbone
    embedded in this process."""
    backbone = fresh("protonet").backbone.eval()
    seen = []
    backbone.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    result = evaluate_head(backbone, "logistic", head_config("logistic"), fixed(), dataset())
    return {"accuracies": result.accuracies, "images": torch.tensor(sum(seen))}


def worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=120))
    out: dict = {}
    for method in SPECS:
        out[f"grad/{method}"] = step_gradient(method, sync=True)
        out[f"weights/{method}"] = short_run(method, 4).state_dict()
    out["full"] = short_run("protonet", 4, f"{folder}/full").state_dict()
    short_run("protonet", 2, f"{folder}/part")  # stopped at step 2
    out["resumed"] = short_run("protonet", 4, f"{folder}/part", resume=True, seed=9).state_dict()
    out["eval"] = {m: evaluate(fresh(m), fixed(), dataset()).accuracies for m in SPECS}
    out["head"] = head_scores()
    s = ImageBatchSampler(dataset(), 5, seed=1)
    shard_sampler(s, current())
    out["images"] = [s.sample().labels for _ in range(3)]
    torch.save(out, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(str(folder),), nprocs=2, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("method", list(SPECS))
def test_synchronised_gradient_is_the_gradient_of_the_union(ranks, method):
    torch.set_num_threads(1)
    reference = step_gradient(method, sync=False)  # one process, all T episodes at once
    for r in range(2):
        got = ranks[r][f"grad/{method}"]
        assert got.keys() == reference.keys()
        worst = max(float((got[n] - reference[n]).abs().max()) for n in reference)
        assert worst < 1e-9, (method, r, worst)  # float64: rounding only


@pytest.mark.parametrize("method", list(SPECS))
def test_ranks_hold_identical_weights_equal_to_one_process(ranks, method):
    torch.set_num_threads(1)
    single = short_run(method, 4).state_dict()
    for name, value in ranks[0][f"weights/{method}"].items():
        assert torch.equal(value, ranks[1][f"weights/{method}"][name]), name
        if value.is_floating_point():
            assert torch.allclose(value, single[name], atol=1e-5), name


def test_run_resumed_on_as_many_ranks_matches_the_uninterrupted_run(ranks):
    for name, value in ranks[0]["full"].items():
        assert torch.equal(value, ranks[0]["resumed"][name]), name


def test_evaluation_through_two_ranks_gives_the_single_process_accuracies(ranks):
    torch.set_num_threads(1)
    for method in SPECS:
        single = evaluate(fresh(method), fixed(), dataset()).accuracies
        assert len(single) == 7
        for r in range(2):
            assert torch.equal(ranks[r]["eval"][method], single), (method, r)


def test_a_head_through_two_ranks_scores_each_part_once(ranks):
    torch.set_num_threads(1)
    single = head_scores()
    for r in range(2):
        assert torch.equal(ranks[r]["head"]["accuracies"], single["accuracies"]), r
        assert ranks[r]["head"]["images"] < single["images"], r  # only its part's images
    assert ranks[0]["head"]["images"] + ranks[1]["head"]["images"] >= single["images"]


def test_ranks_share_the_pretraining_batches_of_one_process(ranks):
    s = ImageBatchSampler(dataset(), 5, seed=1)
    for i in range(3):
        union = torch.cat([ranks[0]["images"][i], ranks[1]["images"][i]])
        assert torch.equal(union, s.sample().labels)


def test_shards_cover_each_item_once_and_rank_zero_keeps_the_seed():
    for n in range(0, 9):
        for w in range(1, 5):
            parts = [shard_range(n, r, w) for r in range(w)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    assert rank_seed(7, 0) == 7 and len({rank_seed(7, r) for r in range(4)}) == 4


def test_more_processes_than_episodes_is_refused():
    with pytest.raises(ValueError, match="--episodes-per-step to at least 4"):
        sampler().shard(0, 4)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_killing_a_rank_stops_the_run_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    run, workers = torchrun(["--steps", "5000"], out), []
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").is_file():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        ranks = worker_pids(run.pid)
        workers = list(ranks.values())
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = run.communicate(timeout=60)
        stopped = time.monotonic() - killed
    finally:
        stop(run.pid, workers)
    assert run.returncode != 0
    assert stopped < 60
    lines = [ln for ln in err.splitlines() if ln.startswith("error: distributed run stopped")]
    assert lines and "--resume" in lines[0], err
    step = load_checkpoint(out / "last.pt")["step"]
    resumed = torchrun(["--steps", str(step + 4), "--resume"], out)
    try:
        stdout, err = resumed.communicate(timeout=180)
    finally:
        stop(resumed.pid, [])
    assert resumed.returncode == 0, err
    assert f"trained {step + 4} steps" in stdout
    assert load_checkpoint(out / "last.pt")["step"] == step + 4


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ranks_die_with_the_test_that_started_them(tmp_path):
    """A test process killed outright (SIGKILL: no ``finally`` runs) takes its torchrun launcher
    and both ranks with it."""
    test = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tests.launch import torchrun; "
         f"run = torchrun(['--steps', '5000'], {str(tmp_path / 'run')!r}); "
         "print(run.pid, flush=True); time.sleep(600)"],
        cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, text=True)
    launcher, workers = int(test.stdout.readline()), []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert alive(launcher) and time.monotonic() < deadline
            workers = list(worker_pids(launcher).values())
            time.sleep(0.2)
        test.kill()
        test.wait()
        deadline = time.monotonic() + 60
        while any(alive(p) for p in [launcher, *workers]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in [launcher, *workers])
    finally:
        test.kill()
        stop(launcher, workers, wait=0)


def test_a_lost_peer_is_reported_in_one_line_with_the_way_to_continue():
    from fewshot.engine.distributed import Stopped, failure

    gloo = RuntimeError("[/src/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:9096. This is typically caused by a remote worker crashing.")
    line = failure(gloo, "runs/x")
    assert "\n" not in line and "pair.cc" not in line and "typically" not in line
    assert "Connection closed by peer" in line and "runs/x/last.pt" in line and "--resume" in line
    assert "stopped by the launcher" in failure(Stopped("rank 1 was stopped by the launcher"), None)
