"""The real Omniglot and mini-ImageNet in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from episodes import EpisodeSampler, FixedEpisodes, ImagePipeline, image_folder, omniglot
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.engine.checkpoint import load_learner, recorded_pipeline
from fewshot.engine.predict import predict

from .conftest import SHARED_DATA

OMNIGLOT = SHARED_DATA / "omniglot"
MINI = SHARED_DATA / "miniimagenet"

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory):
    if not (OMNIGLOT / "materialize.py").is_file():
        pytest.skip("Omniglot not in ../shared/data")
    dest = tmp_path_factory.mktemp("omniglot")
    subprocess.run([sys.executable, str(OMNIGLOT / "materialize.py"), str(dest)], check=True,
                   capture_output=True)
    return dest


def test_omniglot_vinyals_val_split(omniglot_root):
    ds = omniglot(omniglot_root, "val")
    assert ds.num_classes == 688 and len(ds) == 688 * 20 and ds.image_shape == (1, 28, 28)
    # Against an independent computation from the npz: invert, then exact area averaging
    # (each 105-pixel side split into 28 cells of 3.75 pixels: repeat 4x, average 15x15 blocks).
    rows = [ln.split("\t") for ln in (OMNIGLOT / "characters.tsv").read_text().splitlines()[1:]]
    first = ds.class_names[0].rsplit("/", 1)[0]
    cid, split, idx, *_ = next(r for r in rows if f"{r[3]}/{r[4]}" == first)
    raw = np.load(OMNIGLOT / f"images_{split}.npz")["images"][int(idx)]
    ink = torch.from_numpy(~raw).float().unsqueeze(1) * 255
    fine = ink.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    ref = F.avg_pool2d(fine, 15).round()
    ours = ds.images[ds.targets == 0].float()
    assert (ours - ref).abs().max() <= 1
    ep = EpisodeSampler(ds, 20, 5, 5, episodes_per_batch=2).sample()
    assert ep.support_x.shape == (2, 100, 1, 28, 28)


def test_miniimagenet_folder():
    if not (MINI / "images").is_dir():
        pytest.skip("mini-ImageNet not in ../shared/data")
    ds = image_folder(MINI / "images", "val", split_dir=MINI / "splits" / "ravi", image_size=84)
    assert ds.num_classes == 16 and len(ds) == 1600 and ds.image_shape == (3, 84, 84)


def predict_accuracy(learner, spec, pipeline: ImagePipeline, episodes: FixedEpisodes,
                     files: list[list[Path]], table: torch.Tensor, folder: Path) -> float:
    """Mean accuracy of :func:`predict` on raw files laid out as the fixed episodes: for each
    episode a support folder (one folder per class, K files) and a query folder."""
    correct = total = 0
    for e in range(len(episodes)):
        support, query = folder / f"{e}" / "support", folder / f"{e}" / "query"
        truth = {}
        for j, c in enumerate(episodes.classes[e].tolist()):
            (support / f"{j:02d}").mkdir(parents=True)
            for r, item in enumerate(episodes.items[e, j].tolist()):
                rank = int((table[c] == item).nonzero())  # item -> its file (class file order)
                f = files[c][rank]
                if r < episodes.k_shot:
                    (support / f"{j:02d}" / f.name).symlink_to(f)
                else:
                    query.mkdir(exist_ok=True)
                    (query / f.name).symlink_to(f)
                    truth[f.name] = f"{j:02d}"
        preds = predict(learner, spec, support, query, pipeline=pipeline)
        correct += sum(p.label == truth[p.path.name] for p in preds)
        total += len(preds)
    return correct / total


@pytest.mark.slow
def test_predict_on_raw_omniglot_files_agrees_with_evaluate(omniglot_root, tmp_path):
    """Train ProtoNet briefly on the Omniglot train classes, then label raw PNGs of test
    characters with predict on 20-way 1-shot tasks and score the same tasks with evaluate.

    Predict reads each file through the checkpoint's pipeline into the very tensor the loader
    cached (tests/test_pipeline.py checks they are identical), so the two accuracies differ only
    where a near-tie flips between the two batchings of the same float computation: allowed 1
    point. Reading the files the old way (bilinear, no inversion) must lose far more.
    """
    steps = int(os.environ.get("FEWSHOT_REAL_STEPS", "300"))
    tasks = int(os.environ.get("FEWSHOT_REAL_TASKS", "40"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        spec = ModelSpec("protonet", "conv4", 1, 28)
        sampler = EpisodeSampler(omniglot(omniglot_root, "train"), 20, 1, 5, seed=0)
        train(build_learner(spec), spec, sampler,
              TrainConfig(steps=steps, checkpoint_dir=str(tmp_path / "run"), progress=False))
        learner, spec, ckpt = load_learner(tmp_path / "run" / "last.pt")
        pipeline = recorded_pipeline(ckpt, tmp_path / "run" / "last.pt")
        test = omniglot(omniglot_root, "test")
        raw = test.subset_classes([n for n in test.class_names if n.endswith("/rot000")])
        episodes = FixedEpisodes.generate(raw, 20, 1, 5, tasks, seed=1)
        by_eval = evaluate(learner, episodes, raw).mean
        table, _ = raw.index_table()
        files = [sorted(next(omniglot_root.glob(f"*/{n.rsplit('/', 1)[0]}")).glob("*.png"))
                 for n in raw.class_names]
        by_predict = predict_accuracy(learner, spec, pipeline, episodes, files, table,
                                      tmp_path / "new")
        old = replace(pipeline, resample="bilinear", invert=False)
        by_old = predict_accuracy(learner, spec, old, episodes, files, table, tmp_path / "old")
    finally:
        torch.set_num_threads(threads)
    print(f"\nOmniglot test, 20-way 1-shot, {tasks} tasks x 100 queries, ProtoNet after {steps} "
          f"steps: evaluate {100 * by_eval:.2f} %, predict on raw PNGs {100 * by_predict:.2f} %, "
          f"predict with the old reading (bilinear, no inversion) {100 * by_old:.2f} %")
    assert abs(by_predict - by_eval) <= 0.01
    assert by_old < by_eval - 0.1
