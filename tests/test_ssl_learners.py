"""Self-supervised learners: every method trains through the one loop on views and gives a
backbone the other commands use; momentum targets are momentum averages (checked numerically);
momentum encoders, queues and pseudo-labels resume bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from episodes import ImageBatchSampler, TensorClassDataset, ViewBatch
from fewshot.cli import main
from fewshot.engine.checkpoint import CheckpointFile
from fewshot.engine.train import TrainConfig, train
from fewshot.modules import cosine_momentum, ema_update
from fewshot.registry import build_learner, make_spec, method_names

from .conftest import data_args

SMALL = {"simclr": {"proj_hidden": 16}, "moco": {"proj_hidden": 16, "queue_size": 12, "bn_splits": 2},
         "byol": {"proj_hidden": 16}, "simsiam": {"proj_dim": 16, "pred_hidden": 8},
         "barlow-twins": {"proj_dim": 16}, "vicreg": {"proj_dim": 16},
         "deepcluster": {"clusters": 4, "proj_hidden": 16}, "uic": {"clusters": 4},
         "rotation": {"head_hidden": 8}, "jigsaw": {"permutations": 10, "head_hidden": 8},
         "context": {"head_hidden": 8}, "colorization": {"decoder_width": 8},
         "autoencoder": {"decoder_width": 8, "noise": "patches"},
         "gan": {"width": 8, "noise_dim": 8}, "triplet": {"proj_hidden": 16, "emb_dim": 8}}
PRE = ["--batch-size", "6", "--val-episodes", "2", "--val-way", "2", "--val-query", "2",
       "--val-every", "3", "--quiet", "--checkpoint-every", "1", "--option", "hidden=8"]


def dataset(n: int = 12, size: int = 16) -> TensorClassDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return TensorClassDataset(images, torch.arange(n) % 3, ["a", "b", "c"])


@pytest.mark.parametrize("method", method_names("self-supervised"))
def test_every_method_trains_and_reports_spread(method: str) -> None:
    ds = dataset()
    options = {**SMALL[method], "hidden": 8}
    if method in ("deepcluster", "uic"):
        options["num_images"] = len(ds)
    spec = make_spec(method, "conv4", 3, 16, options)
    torch.manual_seed(0)
    learner = build_learner(spec)
    sampler = ImageBatchSampler(ds, 6, views=learner.view_augments())
    batch = sampler.sample()
    assert isinstance(batch, ViewBatch) and batch.views.shape == (learner.num_views, 6, 3, 16, 16)
    before = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    result = train(learner, spec, sampler, TrainConfig(steps=2, lr=0.01, progress=False))
    assert result.steps == 2
    assert any(not torch.equal(before[k], v) for k, v in learner.backbone.state_dict().items())
    learner.train()
    loss, _ = learner.batch_loss(sampler.sample())
    assert torch.isfinite(loss)
    metrics = learner.train_metrics()
    assert 0 < metrics["emb_std"] < 1 and metrics["emb_std_ratio"] > 0
    # the labels are never read: other labels, the same loss
    torch.manual_seed(1)
    batch = sampler.sample()
    a = learner.batch_loss(batch)[0]
    torch.manual_seed(1)
    b = learner.batch_loss(ViewBatch(batch.views, torch.zeros_like(batch.labels), batch.index))[0]
    if method not in ("moco",):  # MoCo's queue moved on between the two calls
        assert torch.equal(a, b)


def test_ema_update_and_cosine_schedule() -> None:
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    old = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for o, t0, t1 in zip(online.parameters(), old, target.parameters(), strict=True):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * o.detach(), atol=1e-7)
    assert cosine_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 50, 100) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["byol", "moco"])
def test_target_is_a_momentum_average(method: str) -> None:
    ds = dataset()
    spec = make_spec(method, "conv4", 3, 16, {**SMALL[method], "hidden": 8})
    torch.manual_seed(0)
    learner = build_learner(spec)
    sampler = ImageBatchSampler(ds, 6, views=learner.view_augments())
    opt = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=0.05)
    learner.begin_training(sampler, 4)

    def pair() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return ([p.detach().clone() for p in [*learner.backbone.parameters(),
                                              *learner.projector.parameters()]],
                [p.detach().clone() for p in [*learner.target_backbone.parameters(),
                                              *learner.target_projector.parameters()]])

    for step in range(4):
        tau = learner.current_tau() if method == "byol" else learner.momentum
        assert tau == pytest.approx(cosine_momentum(0.996, step, 4) if method == "byol"
                                    else 0.999)
        _, target = pair()
        opt.zero_grad()
        learner.batch_loss(sampler.sample())[0].backward()
        opt.step()
        learner.end_step()
        online, new_target = pair()
        for t0, o1, t1 in zip(target, online, new_target, strict=True):
            assert torch.allclose(t1, tau * t0 + (1 - tau) * o1, atol=1e-6)
        assert any(not torch.equal(o, t) for o, t in zip(online, new_target, strict=True))
    if method == "moco":  # the queue holds the last keys, normalised
        assert int(learner.queue_ptr) == (4 * 6) % 12
        assert torch.allclose(learner.queue.norm(dim=1), torch.ones(12), atol=1e-5)


@pytest.mark.parametrize("method", ["byol", "moco", "deepcluster", "uic", "jigsaw", "gan"])
def test_resume_is_bit_identical(tree: Path, method: str, stopped_and_resumed) -> None:
    d = data_args(tree)
    opts = [a for k, v in SMALL[method].items() for a in ("--option", f"{k}={v}")]
    full = stopped_and_resumed(["pretrain", *d, "--method", method, *PRE, *opts, "--steps", "6"],
                               tree, 6)
    if method in ("deepcluster", "uic"):  # 24 images, batches of 6: relabelled after step 4
        assert int(full["model"]["epochs_labelled"]) == 2
        assert full["spec"]["options"]["num_images"] == 24
    record = json.loads((tree / "full" / "run.json").read_text())
    assert record["command"] == "pretrain" and record["spec"]["method"] == method
    state, meta = CheckpointFile(tree / "full" / "last.pt", "--init").backbone_state()
    assert meta is not None and all(k.startswith("blocks.") for k in state)
    vals = [json.loads(ln) for ln in (tree / "full" / "metrics.jsonl").read_text().splitlines()]
    vals = [v for v in vals if "val_acc" in v]
    assert [v["step"] for v in vals] == [3, 6]
    assert all(0 <= v["knn_acc"] <= 1 and 0 <= v["probe_acc"] <= 1 for v in vals)
    if method == "byol":  # scored without a head (prototypes), plotted, refused by train
        main(["eval", *d, "--checkpoint", str(tree / "full" / "last.pt"), "--way", "2",
              "--query", "2", "--episodes", "2", "--split", "val"])
        main(["plot-embeddings", *d, "--checkpoint", str(tree / "full" / "last.pt"),
              "--split", "val", "--output", str(tree / "emb.png")])
        assert (tree / "emb.png").stat().st_size > 1000
        with pytest.raises(SystemExit):
            main(["train", *d, "--method", "byol", "--out", str(tree / "no")])


@pytest.mark.parametrize("method", ["protonet", "matching"])
def test_rotation_as_auxiliary_loss(tree: Path, method: str) -> None:
    """Gidaris et al. 2019: episode loss + weight x rotation loss on the episodes' images."""
    from episodes import EpisodeSampler
    from fewshot.engine.checkpoint import load_learner
    from fewshot.functional import rotate_batch
    from fewshot.models.episode_norm import PerEpisodeNorm

    ds = dataset(n=12)
    spec = make_spec(method, "conv4", 3, 16, {"hidden": 8, "rotation_weight": 0.5})
    torch.manual_seed(0)
    learner = build_learner(spec)
    plain = build_learner(make_spec(method, "conv4", 3, 16, {"hidden": 8}))
    assert not any(k.startswith("rotation.") for k in plain.state_dict())
    episode = EpisodeSampler(ds, 2, 1, 1, 2, seed=0).sample()
    learner.train()
    learner(episode.support_x, episode.support_y, episode.query_x, 2)  # Matching: first call
    loss, acc = learner.batch_loss(episode)
    logits = learner(episode.support_x, episode.support_y, episode.query_x, 2)
    # each episode's rotated images with BatchNorm statistics of their own, as its episode's
    images = torch.cat([episode.support_x, episode.query_x], 1)
    rotated, labels = rotate_batch(images.flatten(0, 1), episodes=2)
    assert torch.equal(rotated[4 * images.shape[1]], images[1, 0])
    with PerEpisodeNorm(2):
        rot_logits = learner.rotation.classifier(learner.backbone(rotated).flatten(1))
    expected = (learner.loss(logits, episode.query_y)
                + 0.5 * torch.nn.functional.cross_entropy(rot_logits, labels))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert "rotation_acc" in learner.train_metrics()
    # through the CLI: trained, resumed, scored
    d = data_args(tree)
    args = ["train", *d, "--method", method, "--way", "2", "--query", "2", "--steps", "3",
            "--val-episodes", "0", "--quiet", "--option", "rotation_weight=1.0",
            "--option", "hidden=8", "--out", str(tree / "rot")]
    main(args)
    learner, spec, _ = load_learner(tree / "rot" / "last.pt")
    assert spec.options["rotation_weight"] == 1.0 and learner.rotation_weight == 1.0
    assert any(k.startswith("rotation.") for k in learner.state_dict())
    main([*args[:-2], "--steps", "4", "--resume", "--out", str(tree / "rot")])
    main(["eval", *d, "--checkpoint", str(tree / "rot" / "last.pt"), "--way", "2", "--query",
          "2", "--episodes", "3", "--split", "val"])


def test_unlabelled_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder of images without class folders (nested or flat) pre-trains self-supervised;
    supervised pre-training and validation are refused in one line."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(8):
        folder = tmp_path / "imgs" / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    d = ["--dataset", "unlabelled", "--root", str(tmp_path / "imgs"), "--image-size", "16",
         "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    main(["pretrain", *d, "--method", "uic", "--option", "clusters=2", "--option", "hidden=8",
          "--batch-size", "4", "--steps", "2", "--val-episodes", "0", "--quiet",
          "--augment-option", "solarize=0.5", "--out", str(tmp_path / "run")])
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["args"]["augment_option"] == {"solarize": 0.5}
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["spec"]["options"]["num_images"] == 8 and ckpt["pipeline"]["size"] == 16
    for extra in (["--method", "supervised"], ["--method", "simclr", "--val-episodes", "5"]):
        with pytest.raises(SystemExit):
            main(["pretrain", *d, *extra, "--steps", "1", "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1


def test_collapse_is_reported() -> None:
    """Embeddings collapsed to one point report a spread near 0; healthy ones near 1/sqrt(D)."""
    ds = dataset()
    spec = make_spec("byol", "conv4", 3, 16, {**SMALL["byol"], "hidden": 8})
    torch.manual_seed(0)
    learner = build_learner(spec)
    sampler = ImageBatchSampler(ds, 6, views=learner.view_augments())
    batch = sampler.sample()
    learner.batch_loss(batch)
    healthy = learner.train_metrics()["emb_std_ratio"]
    last = learner.projector[-1]
    with torch.no_grad():  # every image projected to the same vector
        last.weight.zero_()
        last.bias.fill_(1.0)
    learner.batch_loss(batch)
    assert learner.train_metrics()["emb_std_ratio"] < 1e-3 < 0.3 < healthy
