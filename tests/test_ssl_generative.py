"""Context prediction, colourisation, autoencoders, the GAN and the triplet embedding: their losses
against hand computations on tiny examples, their labels and targets against their definitions,
and each trained a few steps through ``fewshot pretrain``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import ImageBatchSampler, TensorClassDataset, to_unit_float
from fewshot.cli import main
from fewshot.engine.checkpoint import CheckpointFile, load_learner
from fewshot.engine.train import TrainConfig, make_optimizer
from fewshot.registry import build_learner, make_spec
from fewshot.ssl.autoencoder import corrupt, reconstruction_loss
from fewshot.ssl.colour import (
    ab_bins,
    colour_images,
    rebalance_weights,
    rebalanced_cross_entropy,
    rgb_to_lab,
    smoothed_prior,
    soft_encode,
)
from fewshot.ssl.decoders import ImageDecoder
from fewshot.ssl.gan import discriminator_loss, generator_loss
from fewshot.ssl.pretext import NEIGHBOURS, context_pairs, drop_colours, patch_mask
from fewshot.ssl.triplet import mine_negatives, triplet_loss

from .conftest import data_args

EMBEDDED = ["--dataset", "embedded", "--image-size", "16", "--device", "cpu"]
RUN = ["--batch-size", "8", "--steps", "4", "--val-every", "2", "--val-episodes", "2",
       "--val-way", "2", "--val-query", "2", "--quiet", "--knn-k", "0", "--option", "hidden=8"]


def test_context_pairs_labels_are_the_neighbours_positions() -> None:
    # every pixel holds the number of its 3x3 cell, so a tile tells where it was cut from
    cells = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    x = cells.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(64, 3, 24, 24)
    centre, other, label = context_pairs(x, 0.7, torch.Generator().manual_seed(0))
    assert centre.shape == other.shape == (64, 3, 6, 6)
    assert (centre == 4).all()
    assert torch.equal(other[:, 0, 0, 0], torch.tensor(NEIGHBOURS, dtype=torch.float32)[label])
    assert (other == other[:, :1, :1, :1]).all() and set(label.tolist()) == set(range(8))


def test_colour_dropping_keeps_one_channel() -> None:
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out = drop_colours(x, 0.01, torch.Generator().manual_seed(1))
    kept = (out == x).all(3).all(2)  # [5, 3]
    assert torch.equal(kept.sum(1), torch.ones(5, dtype=torch.long))
    assert out[~kept].abs().max() < 0.1 * x.std()
    assert torch.equal(drop_colours(x[:, :1]), x[:, :1])


def test_lab_of_reference_colours() -> None:
    """sRGB primaries, white and mid-gray in CIE Lab (D65), the published reference values."""
    rgb = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5], [0, 0, 0]],
                       dtype=torch.float64)
    lab = rgb_to_lab(rgb.t()[:, :, None]).squeeze(-1).t()
    expected = torch.tensor([[53.24, 80.09, 67.20], [87.73, -86.18, 83.18],
                             [32.30, 79.19, -107.86], [100, 0, 0], [53.39, 0, 0], [0, 0, 0]],
                            dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=0.01)


def test_ab_bins_match_a_second_gamut_computation() -> None:
    bins = ab_bins()
    assert (bins.remainder(10) == 0).all() and bins.abs().max() <= 110
    # the same bins from the sRGB cube's faces (the gamut's boundary) at a finer step
    g = torch.linspace(0, 1, 129, dtype=torch.float64)
    u, v = (t.flatten() for t in torch.meshgrid(g, g, indexing="ij"))
    faces = []
    for c in range(3):
        for value in (0.0, 1.0):
            face = torch.full((3, len(u)), value, dtype=torch.float64)
            face[[i for i in range(3) if i != c]] = torch.stack([u, v])
            faces.append(face)
    ab = rgb_to_lab(torch.cat(faces, 1)[:, :, None]).squeeze(-1)[1:].t()
    reference = torch.unique(torch.round(ab / 10).long(), dim=0) * 10
    assert {tuple(b) for b in bins.long().tolist()} == {tuple(b) for b in reference.tolist()}


def test_soft_encoding_prior_and_rebalancing_by_hand() -> None:
    bins = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = soft_encode(torch.tensor([[5.0, 0.0], [0.0, 10.0]]), bins, neighbours=2)
    assert torch.allclose(z[0], torch.tensor([0.5, 0.5, 0.0]))  # halfway between two bins
    e = math.exp(-100 / 50)  # (0, 10): bin 2 at distance 0, bin 0 at 10 (bin 1 at 14.1: third)
    assert torch.allclose(z[1], torch.tensor([e / (1 + e), 0.0, 1 / (1 + e)]))
    # two bins 10 apart, sigma 5: kernel exp(-100 / 50) between them
    k = math.exp(-2)
    prior = smoothed_prior(torch.tensor([3.0, 1.0]), bins[:2])
    expected = torch.tensor([0.75 + 0.25 * k, 0.25 + 0.75 * k])
    assert torch.allclose(prior, expected / expected.sum())
    # ((1 - 0.5) p + 0.5 / 3)^-1 of p = (0.5, 0.3, 0.2), with expectation 1 under p
    w = rebalance_weights(torch.tensor([0.5, 0.3, 0.2]), 0.5)
    assert torch.allclose(w, torch.tensor([0.828338, 1.089918, 1.294278]), atol=1e-5)
    assert float((w * torch.tensor([0.5, 0.3, 0.2])).sum()) == pytest.approx(1.0)
    loss = rebalanced_cross_entropy(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.3, 0.7]]),
                                    torch.tensor([2.0, 1.0]))
    assert float(loss) == pytest.approx((2 * math.log(2) + 1 * math.log(2)) / 2)
    loss = rebalanced_cross_entropy(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.3, 0.7]]),
                                    torch.tensor([2.0, 1.0]), torch.tensor([False, True]))
    assert float(loss) == pytest.approx(math.log(2) / 2)  # the gray image's pixel counts 0
    ab = torch.zeros(2, 2, 3, 3)
    ab[1, 1, 2, 2] = -5.5
    assert colour_images(ab).tolist() == [False, True]


def test_autoencoder_corruptions_and_loss_by_hand() -> None:
    mask = patch_mask(3, 10, 4, 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 10, 10)  # 3 x 3 patches of 4 (the last row and column of 2)
    blocks = mask[:, 0, ::4, ::4]
    assert torch.equal(blocks.flatten(1).sum(1), torch.full((3,), 4)) and \
        torch.equal(mask, blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None, :10, :10])
    x = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(1)) + 0.1
    masked, m = corrupt(x, "patches", generator=torch.Generator().manual_seed(0), mask_ratio=0.5)
    assert torch.equal(m, mask) and (masked[m.expand_as(x)] == 0).all()
    assert torch.equal(masked[~m.expand_as(x)], x[~m.expand_as(x)])
    dropped, none = corrupt(torch.ones(4, 3, 50, 50), "masking", masking=0.25,
                            generator=torch.Generator().manual_seed(0))
    assert none is None and abs(float((dropped == 0).float().mean()) - 0.25) < 0.02
    out, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    target[0, :, 0, 0] = 3.0
    assert float(reconstruction_loss(out, target)) == pytest.approx((2 * 9 + 6 * 1) / 8)
    only = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    only[0, 0, 0, 0] = True
    assert float(reconstruction_loss(out, target, only)) == pytest.approx(9.0)


@pytest.mark.parametrize("size", [4, 16, 28, 42])
def test_decoder_reaches_any_size(size: int) -> None:
    assert ImageDecoder(5, 3, size, 4)(torch.randn(2, 5)).shape == (2, 3, size, size)


def test_triplet_mining_by_definition() -> None:
    d_ap = torch.tensor([1.0, 1.0, 3.0])
    d_an = torch.tensor([[0.0, 0.5, 2.0], [0.5, 0.0, 1.5], [2.0, 1.5, 0.0]])
    assert mine_negatives(d_ap, d_an, "hard").tolist() == [1, 0, 1]
    # anchor 0: of the negatives farther than 1 (image 2 only) the nearest; anchor 2: none is
    # farther than 3, so the farthest (image 0)
    assert mine_negatives(d_ap, d_an, "semihard").tolist() == [2, 2, 0]
    rand = mine_negatives(d_ap, d_an, "random", torch.Generator().manual_seed(0))
    assert (rand != torch.arange(3)).all()
    a = torch.tensor([[0.0], [1.0], [3.0]])
    p = torch.tensor([[0.5], [1.0], [6.0]])
    loss, acc, neg = triplet_loss(a, p, margin=0.2, mining="hard")
    assert neg.tolist() == [1, 0, 1]
    # d_ap (0.5, 0, 3), d_an (1, 1, 2): hinge (0, 0, 1.2)
    assert float(loss) == pytest.approx(1.2 / 3) and float(acc) == pytest.approx(2 / 3)


def test_triplet_loss_matches_pytorch_metric_learning() -> None:
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    p = torch.nn.functional.normalize(a + 0.5 * torch.randn(6, 4, generator=g,
                                                            dtype=torch.float64), dim=1)
    for mining in ("semihard", "hard"):
        loss, _, neg = triplet_loss(a, p, 0.2, mining)
        i = torch.arange(6)
        theirs = TripletMarginLoss(margin=0.2, reducer=MeanReducer())(
            torch.cat([a, p]), torch.cat([i, i]), indices_tuple=(i, i + 6, neg))
        assert float(loss) == pytest.approx(float(theirs), abs=1e-6), pml.__version__


def test_triplets_are_anchor_affine_and_another_image() -> None:
    ds = TensorClassDataset(torch.randint(0, 255, (12, 3, 16, 16), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)),
                            torch.arange(12) % 3, ["a", "b", "c"])
    learner = build_learner(make_spec("triplet", "conv4", 3, 16, {"hidden": 8}))
    anchor_view, positive_view = learner.view_augments()
    assert anchor_view is None and positive_view.geometric and positive_view.rotate == 15
    assert positive_view.brightness == positive_view.hue == positive_view.grayscale == 0
    batch = ImageBatchSampler(ds, 6, views=learner.view_augments()).sample()
    assert torch.equal(batch.views[0], to_unit_float(ds.load(batch.index)))
    assert not torch.equal(batch.views[1], batch.views[0])


def test_gan_alternates_players_and_its_losses_by_hand() -> None:
    assert float(discriminator_loss(torch.zeros(3), torch.zeros(3))) == pytest.approx(
        2 * math.log(2))
    assert float(generator_loss(torch.zeros(3))) == pytest.approx(math.log(2))
    spec = make_spec("gan", "conv4", 1, 16, {"hidden": 8, "width": 8, "noise_dim": 8})
    torch.manual_seed(0)
    gan = build_learner(spec)
    opt, _ = make_optimizer(gan.param_groups(), TrainConfig(lr=2e-4))
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    views = torch.rand(1, 6, 1, 16, 16)
    d_params = [*gan.backbone.parameters(), *gan.critic.parameters()]
    for step in range(2):
        gan.zero_grad(set_to_none=True)
        loss, _, _ = gan.views_loss(views, torch.arange(6))
        loss.backward()
        d_grads = [p.grad is not None for p in d_params]
        g_grads = [p.grad is not None for p in gan.generator.parameters()]
        assert all(d_grads) != (step == 1) and all(g_grads) == (step == 1)
        assert not any(g_grads) if step == 0 else not any(d_grads)
        assert all(p.requires_grad for p in gan.parameters())
        gan.end_step()


def test_gan_checkpoint_serves_eval_and_init(tree: Path) -> None:
    tmp_path, d = tree, data_args(tree)
    out = tmp_path / "gan"
    main(["pretrain", *d, "--method", "gan", *RUN, "--option", "width=8",
          "--optimizer", "adam", "--lr", "2e-4", "--out", str(out)])
    assert sorted(p.name for p in out.glob("preview-*.png")) == ["preview-step000002.png",
                                                                 "preview-step000004.png"]
    assert Image.open(out / "preview-step000004.png").size[0] > 4 * 16
    learner, spec, _ = load_learner(out / "last.pt")
    state, meta = CheckpointFile(out / "last.pt", "--init").backbone_state()
    assert meta is not None and state.keys() == learner.backbone.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in learner.backbone.state_dict().items())
    assert not any(k.startswith(("generator", "critic")) for k in state)
    main(["eval", *d, "--checkpoint", str(out / "last.pt"), "--head", "prototype",
          "--way", "2", "--query", "2", "--episodes", "2", "--split", "val",
          "--json", str(tmp_path / "eval.json")])
    assert 0 <= json.loads((tmp_path / "eval.json").read_text())["mean"] <= 1
    main(["train", *d, "--method", "protonet", "--init", str(out / "last.pt"), "--way", "2",
          "--query", "2", "--steps", "1", "--val-episodes", "0", "--quiet", "--option", "hidden=8",
          "--freeze", "*", "--option", "learn_scale=true", "--out", str(tmp_path / "proto")])
    proto, _, _ = load_learner(tmp_path / "proto" / "last.pt")  # frozen: the discriminator's trunk
    assert all(torch.equal(proto.backbone.state_dict()[k], v) for k, v in state.items()
               if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("method,options", [
    ("context", ["head_hidden=8"]), ("autoencoder", ["noise=masking", "decoder_width=8"]),
    ("triplet", ["proj_hidden=16", "emb_dim=8", "mining=hard"]),
    ("gan", ["width=8", "noise_dim=8"])])
def test_trains_through_pretrain(tmp_path: Path, method: str, options: list[str]) -> None:
    opts = [a for o in options for a in ("--option", o)]
    main(["pretrain", *EMBEDDED, "--method", method, *RUN, *opts, "--out", str(tmp_path / "r")])
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_acc" in r] == [2, 4]
    assert bool(list((tmp_path / "r").glob("preview-*.png"))) == (method in ("autoencoder", "gan"))


def rgb_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            img[..., c % 3] = 255
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


def test_colorization_trains_on_rgb_and_refuses_gray(tmp_path: Path, capsys) -> None:
    d = ["--dataset", "folder", "--root", str(rgb_tree(tmp_path / "data")), "--split-ratios",
         "0.5", "0.5", "0", "--image-size", "16", "--cache-dir", str(tmp_path / "cache"),
         "--device", "cpu"]
    main(["pretrain", *d, "--method", "colorization", *RUN, "--option", "decoder_width=8",
          "--knn-k", "5", "--out", str(tmp_path / "rgb")])
    ckpt = torch.load(tmp_path / "rgb" / "last.pt", weights_only=True)
    assert int(ckpt["model"]["prior_images"]) == 12 and ckpt["model"]["weights"].max() > 1
    rows = [json.loads(ln) for ln in (tmp_path / "rgb" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["knn_acc"] <= 1 and 0 <= r["probe_acc"] <= 1 for r in rows if "val_acc" in r)
    with pytest.raises(SystemExit):
        main(["pretrain", *EMBEDDED, "--method", "colorization", *RUN,
              "--out", str(tmp_path / "gray")])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "RGB" in err
    assert not (tmp_path / "gray").exists()
