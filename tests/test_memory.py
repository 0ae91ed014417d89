"""Bounded memory (issue 15): chunked forwards give what unchunked ones give."""

from __future__ import annotations

import copy

import pytest
import torch

from episodes import EpisodeSampler, FixedEpisodes
from fewshot import TrainConfig, build_learner, evaluate, make_spec, train
from fewshot.engine.memory import (
    bytes_per_item,
    chunks,
    forward_in_chunks,
    image_chunk,
    memory_budget,
)
from fewshot.engine.train import accumulate
from fewshot.models.episode_norm import PerEpisodeNorm, deferred_running_stats
from fewshot.values import parse_bytes

LEARNERS = [("protonet", {}), ("matching", {}), ("relation", {"batch_stats_at_test": False}),
            ("relation", {}), ("maml", {"n_way": 3, "inner_steps": 1})]


def learner_for(method: str, options: dict, seed: int = 0):
    torch.manual_seed(seed)
    spec = make_spec(method, "conv4", 1, 28 if method == "relation" else 16, options)
    return build_learner(spec), spec


@pytest.fixture
def data(tiny_dataset, request):
    size = 28 if "relation" in request.node.name else 16
    return tiny_dataset(num_classes=6, per_class=8, size=size)


def reference_accuracies(learner, episodes, dataset) -> torch.Tensor:
    """Every episode in one unchunked ``infer`` call: what evaluation computed before issue 15."""
    learner.eval()
    ep = next(episodes.batches(dataset, len(episodes)))
    logits = learner.infer(ep.support_x, ep.support_y, ep.query_x, ep.n_way)
    return (logits.argmax(-1) == ep.query_y).float().mean(1)


@pytest.mark.parametrize("method,options", LEARNERS)
def test_chunked_evaluation_equals_unchunked(data, method, options):
    learner, spec = learner_for(method, options)
    episodes = FixedEpisodes.generate(data, 3, 2, 3, num_episodes=7, seed=1)
    # a few training steps, so BatchNorm's running statistics are not the identity
    train(learner, spec,
          EpisodeSampler(data, 3, 2, 3, episodes_per_batch=2, seed=0),
          TrainConfig(steps=3, progress=False))
    ref = reference_accuracies(learner, episodes, data)
    tiny = evaluate(learner, episodes, data, max_memory=1)  # one image / episode per forward
    auto = evaluate(learner, episodes, data)
    assert torch.equal(tiny.accuracies, ref)
    assert torch.equal(auto.accuracies, ref)


@pytest.mark.parametrize("method,options", LEARNERS[:3])
def test_features_path_matches_forward_logits(data, method, options):
    learner, _ = learner_for(method, options)
    learner.eval()
    assert learner.features_per_image()
    ep = next(FixedEpisodes.generate(data, 3, 2, 3, num_episodes=4, seed=2).batches(data, 4))
    with torch.no_grad():
        direct = learner(ep.support_x, ep.support_y, ep.query_x, ep.n_way)
        s = forward_in_chunks(learner.embed, ep.support_x.flatten(0, 1), 5)
        q = forward_in_chunks(learner.embed, ep.query_x.flatten(0, 1), 5)
        via = learner.head(s.view(4, -1, *s.shape[1:]), ep.support_y, q.view(4, -1, *q.shape[1:]),
                           ep.n_way)
    torch.testing.assert_close(via, direct, rtol=1e-5, atol=1e-5)


def test_batch_stats_learners_are_not_split_by_image(data):
    relation, _ = learner_for("relation", {})
    maml, _ = learner_for("maml", {"n_way": 3})
    assert not relation.features_per_image() and not maml.features_per_image()


@pytest.mark.parametrize("method,options", [("protonet", {}), ("relation", {}),
                                            ("maml", {"n_way": 3, "inner_steps": 1}),
                                            ("protonet", {"rotation_weight": 0.5})])
def test_gradient_accumulation_equals_one_step(data, method, options):
    """T episodes in one forward vs in chunks of 1 and 2: same loss, gradients, running stats
    (with the rotation loss too: its rotated images pass through the same BatchNorms again)."""
    base, _ = learner_for(method, options)
    base.train()
    ep = EpisodeSampler(data, 3, 2, 3, episodes_per_batch=5, seed=3).sample()
    results = []
    for size in (5, 2, 1):
        learner = copy.deepcopy(base)
        stats = accumulate(learner, ep, chunks(5, size), precision="fp32")
        results.append((stats, {n: p.grad.clone() for n, p in learner.named_parameters()},
                        {n: b.clone() for n, b in learner.named_buffers()}))
    whole = results[0]
    scale = max(float(g.abs().max()) for g in whole[1].values())  # float32 sums in another order
    for stats, grads, buffers in results[1:]:
        torch.testing.assert_close(stats, whole[0], rtol=1e-5, atol=1e-6)
        for n in grads:
            torch.testing.assert_close(grads[n], whole[1][n], rtol=1e-4, atol=1e-5 * scale, msg=n)
        for n in buffers:
            torch.testing.assert_close(buffers[n], whole[2][n], rtol=1e-5, atol=1e-6, msg=n)


def test_batched_episodes_train_as_single_episodes(data):
    """Per-episode BatchNorm: the loss of T batched episodes is the mean of their single losses,
    and the running statistics move by the mean of the single updates."""
    learner, _ = learner_for("protonet", {})
    learner.train()
    ep = EpisodeSampler(data, 3, 2, 3, episodes_per_batch=4, seed=4).sample()
    batched = copy.deepcopy(learner)
    loss = batched.loss(batched(ep.support_x, ep.support_y, ep.query_x, 3), ep.query_y)
    singles, means = [], []
    for i in range(4):
        single = copy.deepcopy(learner)
        sl = slice(i, i + 1)
        singles.append(single.loss(single(ep.support_x[sl], ep.support_y[sl], ep.query_x[sl], 3),
                                   ep.query_y[sl]))
        means.append(single.backbone.blocks[0][1].running_mean)
    torch.testing.assert_close(loss, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.backbone.blocks[0][1].running_mean,
                               torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


def test_training_bytes_count_the_rotation_forward(data):
    """The memory estimate of a training step includes the auxiliary rotation loss's forward and
    backward (four rotations of every image: several times the episode's own bytes)."""
    from fewshot.engine.step_size import training_bytes_per_episode
    plain, _ = learner_for("protonet", {})
    rotation, _ = learner_for("protonet", {"rotation_weight": 0.5})
    sizes = [training_bytes_per_episode(m, 3, 2, 3, (1, 16, 16), "cpu") for m in (plain, rotation)]
    assert sizes[1] > 4 * sizes[0]


def test_per_episode_norm_refuses_a_batch_it_cannot_split():
    bn = torch.nn.BatchNorm2d(2)
    with pytest.raises(ValueError, match="episode-major"), PerEpisodeNorm(3):
        bn(torch.randn(4, 2, 3, 3))


def test_deferred_running_stats_count_one_step():
    bn = torch.nn.BatchNorm2d(2)
    x = torch.randn(4, 2, 3, 3)
    whole = copy.deepcopy(bn)
    with PerEpisodeNorm(2):
        whole(x)
    split = copy.deepcopy(bn)
    with deferred_running_stats(split, 2) as stats:
        for part in (x[:2], x[2:]):
            with PerEpisodeNorm(1, stats):
                split(part)
    torch.testing.assert_close(split.running_mean, whole.running_mean)
    torch.testing.assert_close(split.running_var, whole.running_var)
    assert int(split.num_batches_tracked) == int(whole.num_batches_tracked) == 1


def test_bytes_per_item_grows_with_the_batch():
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    one = bytes_per_item(lambda: conv(torch.zeros(1, 1, 16, 16)))
    four = bytes_per_item(lambda: conv(torch.zeros(4, 1, 16, 16)))
    assert one >= 8 * 16 * 16 * 4 and four >= 4 * 8 * 16 * 16 * 4 > one
    assert image_chunk(conv, (1, 16, 16), "cpu", budget=10 * one) in range(5, 11)
    assert image_chunk(conv, (1, 16, 16), "cpu", budget=1) == 1


@pytest.mark.parametrize("text,value", [("2GB", 2 << 30), ("512mb", 512 << 20), ("1.5GiB", 3 << 29),
                                        ("1000", 1000)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "2XB", "-1GB", "0", "lots"])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(text)


def test_budget_is_bounded():
    assert memory_budget("cpu", 123) == 123
    assert 0 < memory_budget("cpu") <= 1 << 30


def write_folders(data, root, classes=3, support=2):
    """Support class folders and a query folder of PNGs from ``data``'s first classes."""
    from PIL import Image
    for c in range(classes):
        items = (data.targets == c).nonzero().flatten()
        (root / "support" / f"c{c}").mkdir(parents=True)
        (root / "query").mkdir(exist_ok=True)
        for i, idx in enumerate(items.tolist()):
            folder = root / "support" / f"c{c}" if i < support else root / "query"
            Image.fromarray(data.images[idx, 0].numpy(), "L").save(folder / f"{c}_{i}.png")
    return root / "support", root / "query"


@pytest.mark.parametrize("method,options", [("protonet", {}), ("matching", {})])
def test_chunked_prediction_equals_unchunked(data, tmp_path, method, options):
    from episodes import ImagePipeline
    from fewshot.engine.predict import predict
    learner, spec = learner_for(method, options)
    support, query = write_folders(data, tmp_path)
    pipeline = ImagePipeline(channels=1, size=16)
    whole = predict(learner, spec, support, query, pipeline=pipeline, max_memory=1 << 30)
    tiny = predict(learner, spec, support, query, pipeline=pipeline, max_memory=1)
    assert [p.label for p in tiny] == [p.label for p in whole]
    torch.testing.assert_close([p.probability for p in tiny], [p.probability for p in whole])
