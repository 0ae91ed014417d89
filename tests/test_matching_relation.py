"""Matching Networks (with and without FCE) and Relation Networks, next to ProtoNet."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from episodes import EpisodeSampler, TensorClassDataset
from fewshot import ModelSpec, build_learner
from fewshot.engine.train import TrainConfig, train
from fewshot.methods.matching import MatchingNet, matching_log_probs
from fewshot.methods.protonet import ProtoNet
from fewshot.methods.relation import RelationModule, RelationNet
from fewshot.models.backbones import Conv4

SIZE = 16  # 16 -> 1x1 after Conv-4; 4x4 maps with the last two blocks unpooled


def make_learner(kind: str, channels: int = 1) -> nn.Module:
    """Tiny learners (8 filters) for 16x16 images."""
    if kind == "protonet":
        return ProtoNet(Conv4(channels, hidden=8))
    if kind == "matching":
        return MatchingNet(Conv4(channels, hidden=8), feature_dim=8, fce=False)
    if kind == "matching_fce":
        return MatchingNet(Conv4(channels, hidden=8), feature_dim=8, fce=True, fce_steps=3)
    if kind == "relation":
        return RelationNet(Conv4(channels, hidden=8, flatten=False, unpooled_last=2),
                           RelationModule(8, (4, 4), hidden=8))
    raise ValueError(kind)


KINDS = ["protonet", "matching", "matching_fce", "relation"]


def random_episode(t: int, n: int, k: int, q: int, channels: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(t, n * k, channels, SIZE, SIZE, generator=g)
    sy = torch.arange(n).repeat_interleave(k).repeat(t, 1)
    qx = torch.rand(t, n * q, channels, SIZE, SIZE, generator=g)
    qy = torch.arange(n).repeat_interleave(q).repeat(t, 1)
    return sx, sy, qx, qy


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t,n,k,q", [(1, 5, 1, 3), (2, 5, 5, 2), (3, 2, 3, 1), (1, 20, 1, 1)])
def test_output_shapes(kind: str, t: int, n: int, k: int, q: int) -> None:
    torch.manual_seed(0)
    learner = make_learner(kind)
    sx, sy, qx, qy = random_episode(t, n, k, q)
    out = learner(sx, sy, qx, n)
    assert out.shape == (t, n * q, n)
    assert torch.isfinite(out).all()
    assert torch.isfinite(learner.loss(out, qy))
    if kind.startswith("matching"):  # log-probabilities: each row sums to one
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(t, n * q))
    if kind == "relation":
        assert ((out >= 0) & (out <= 1)).all()


def test_cosine_attention_with_normalized_query_matches_hand_computation() -> None:
    """normalize_query=True (the behaviour before issue 9): two classes, three support points in
    2-D, one query: cosine attention by hand."""
    support = [(1.0, 0.0), (0.0, 2.0), (3.0, 3.0)]
    labels = [0, 1, 1]
    query = (2.0, 1.0)

    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))

    weights = [math.exp(cos(query, s)) for s in support]
    attention = [w / sum(weights) for w in weights]
    expected = [math.log(attention[0]), math.log(attention[1] + attention[2])]

    learner = MatchingNet(nn.Flatten(), fce=False, normalize_query=True).eval()
    sx = torch.tensor(support).view(1, 3, 1, 1, 2)
    qx = torch.tensor([query]).view(1, 1, 1, 1, 2)
    out = learner(sx, torch.tensor([labels]), qx, 2)
    torch.testing.assert_close(out, torch.tensor([[expected]]))
    torch.testing.assert_close(learner.loss(out, torch.tensor([[1]])), torch.tensor(-expected[1]))
    # the pure function gives the same, and agrees with cross-entropy on log-probabilities
    torch.testing.assert_close(matching_log_probs(sx.flatten(2), torch.tensor([labels]),
                                                  qx.flatten(2), 2, normalize_query=True), out)
    torch.testing.assert_close(torch.nn.functional.cross_entropy(out[0], torch.tensor([1])),
                               torch.tensor(-expected[1]))


def test_matching_attention_follows_the_reference_code() -> None:
    """Default (as low-shot-shrink-hallucinate and easyfsl): ``softmax(f(x) . g_i / |g_i|)``,
    the query not normalised. Hand-computed; fails on the cosine attention of before issue 9."""
    support = [(1.0, 0.0), (0.0, 2.0), (3.0, 3.0)]
    labels, query = [0, 1, 1], (2.0, 1.0)
    logits = [(query[0] * a + query[1] * b) / math.hypot(a, b) for a, b in support]
    attention = [math.exp(v) / sum(math.exp(w) for w in logits) for v in logits]
    expected = [math.log(attention[0]), math.log(attention[1] + attention[2])]
    learner = build_learner(ModelSpec("matching", "conv4", 1, 28, {"fce": False}))
    learner.backbone = nn.Flatten()
    out = learner.eval()(torch.tensor(support).view(1, 3, 1, 1, 2), torch.tensor([labels]),
                         torch.tensor([query]).view(1, 1, 1, 1, 2), 2)
    torch.testing.assert_close(out, torch.tensor([[expected]]))


def test_matching_attention_is_not_capped_at_five_way_one_shot() -> None:
    """Cosine logits lie in [-1, 1]: at 5-way 1-shot no class can exceed e / (e + 4/e) = 0.649.
    Orthonormal supports, a query 3x its class's support: e^3 / (e^3 + 4) = 0.834 without the
    query normalisation; e / (e + 4) = 0.405 with it (``normalize_query``, before issue 9)."""
    sx = torch.eye(5).view(1, 5, 1, 1, 5)
    sy, qx = torch.arange(5).view(1, 5), (3 * torch.eye(5)[:1]).view(1, 1, 1, 1, 5)
    default = MatchingNet(nn.Flatten(), fce=False)(sx, sy, qx, 5).exp()[0, 0, 0]
    old = MatchingNet(nn.Flatten(), fce=False, normalize_query=True)(sx, sy, qx, 5).exp()[0, 0, 0]
    torch.testing.assert_close(default, torch.tensor(math.exp(3) / (math.exp(3) + 4)))
    torch.testing.assert_close(old, torch.tensor(math.e / (math.e + 4)))
    assert default > math.e / (math.e + 4 / math.e) > old


def test_fce_attention_uses_the_unnormalised_fce_query() -> None:
    """With FCE the final attention is ``softmax(f(x, S) . g_i / |g_i|)`` on the FCE outputs."""
    torch.manual_seed(0)
    learner = MatchingNet(nn.Flatten(), feature_dim=6, fce=True, fce_steps=2).eval()
    sx, qx = torch.randn(1, 4, 1, 1, 6), torch.randn(1, 3, 1, 1, 6)
    sy = torch.tensor([[0, 1, 2, 0]])
    g, f = learner.fce(sx.flatten(2), qx.flatten(2))
    attention = torch.softmax(f @ (g / g.norm(dim=-1, keepdim=True)).transpose(1, 2), dim=-1)
    expected = (attention @ torch.nn.functional.one_hot(sy, 3).float()).log()
    torch.testing.assert_close(learner(sx, sy, qx, 3), expected)


@pytest.mark.parametrize("kind", ["protonet", "matching", "relation"])
def test_support_permutation_leaves_outputs_unchanged(kind: str) -> None:
    torch.manual_seed(0)
    learner = make_learner(kind).eval()
    sx, sy, qx, _ = random_episode(2, 5, 3, 2)
    perm = torch.randperm(15)
    with torch.no_grad():
        torch.testing.assert_close(learner(sx, sy, qx, 5),
                                   learner(sx[:, perm], sy[:, perm], qx, 5), rtol=1e-4, atol=1e-5)


def test_fce_depends_on_support_order_and_shuffles_in_training() -> None:
    """The biLSTM sees an order: permuting changes FCE outputs (in eval mode, no shuffle); in
    training the shuffle is undone, so each output row still belongs to its own support item."""
    torch.manual_seed(0)
    learner = make_learner("matching_fce").eval()
    sx, sy, qx, _ = random_episode(1, 5, 2, 2)
    perm = torch.randperm(10)
    with torch.no_grad():
        a, b = learner(sx, sy, qx, 5), learner(sx[:, perm], sy[:, perm], qx, 5)
    assert not torch.allclose(a, b, atol=1e-6)
    fce = learner.fce.train()
    feats = torch.randn(3, 6, 8)
    torch.manual_seed(1)
    shuffled = fce.forward(feats, feats[:, :2])[0]
    torch.manual_seed(1)
    perm = torch.rand(3, 6).argsort(dim=1)  # the order the biLSTM saw
    ordered = fce.eval().forward(feats.gather(1, perm.unsqueeze(-1).expand_as(feats)), feats[:, :2])[0]
    torch.testing.assert_close(shuffled.gather(1, perm.unsqueeze(-1).expand_as(shuffled)), ordered)


@pytest.mark.parametrize("kind", ["matching_fce", "relation"])
def test_gradients_reach_every_parameter(kind: str) -> None:
    torch.manual_seed(0)
    learner = make_learner(kind).train()
    sx, sy, qx, qy = random_episode(2, 5, 2, 3)
    learner.loss(learner(sx, sy, qx, 5), qy).backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    names = {n.split(".")[1] if n.startswith("fce") else n.split(".")[0]
             for n, _ in learner.named_parameters()}
    assert names >= ({"support_lstm", "query_cell"} if kind == "matching_fce" else {"relation"})


def pattern_dataset(num_classes: int = 10, per_class: int = 6) -> TensorClassDataset:
    """Each class a random 16x16 pattern; its images the pattern plus noise."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(num_classes, 1, SIZE, SIZE, generator=g)
    noise = 0.3 * torch.randn(num_classes, per_class, 1, SIZE, SIZE, generator=g)
    images = ((patterns.unsqueeze(1) + noise).clamp(0, 1) * 255).to(torch.uint8).flatten(0, 1)
    targets = torch.arange(num_classes).repeat_interleave(per_class)
    return TensorClassDataset(images, targets, [f"c{i}" for i in range(num_classes)])


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_the_loss(kind: str, tmp_path) -> None:
    torch.manual_seed(0)
    data = pattern_dataset()
    learner = make_learner(kind)
    probe = EpisodeSampler(data, 5, 1, 3, episodes_per_batch=16, seed=123).sample()

    def probe_loss() -> float:
        with torch.no_grad():
            out = learner(probe.support_x, probe.support_y, probe.query_x, 5)
            return float(learner.loss(out, probe.query_y))

    learner.train()
    before = probe_loss()
    sampler = EpisodeSampler(data, 5, 1, 3, episodes_per_batch=2, seed=0)
    result = train(learner, ModelSpec(kind), sampler, TrainConfig(steps=40, lr=3e-3, progress=False))
    learner.train()
    after = probe_loss()
    assert result.steps == 40
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("method,options,image_size,channels", [
    ("matching", {}, 28, 1), ("matching", {"fce": "false", "scale": "10"}, 28, 1),
    ("matching", {"normalize_query": "true"}, 28, 1),
    ("relation", {}, 28, 1), ("relation", {}, 84, 3),
])
def test_registered_builders(method: str, options: dict, image_size: int, channels: int) -> None:
    learner = build_learner(ModelSpec(method, "conv4", channels, image_size, options))
    sx = torch.rand(1, 3, channels, image_size, image_size)
    out = learner(sx, torch.tensor([[0, 1, 2]]), torch.rand(1, 2, channels, image_size, image_size), 3)
    assert out.shape == (1, 2, 3)
    if method == "matching":
        assert (learner.fce is None) == (options.get("fce") == "false")
        assert learner.normalize_query == (options.get("normalize_query") == "true")


@pytest.mark.parametrize("padding,omni_map,mini_map", [(0, 5, 19), (1, 7, 21)])
def test_relation_feature_map_sizes(padding: int, omni_map: int, mini_map: int) -> None:
    """The authors' encoder (unpadded pooled convs): 28x28 -> 64x5x5, 84x84 -> 64x19x19; padded
    (before issue 9): 7x7 and 21x21. Relation features 64 (Omniglot) and 64x3x3 = 576."""
    omni = build_learner(ModelSpec("relation", "conv4", 1, 28, {"encoder_padding": padding}))
    mini = build_learner(ModelSpec("relation", "conv4", 3, 84, {"encoder_padding": padding}))
    assert omni.embedding(torch.zeros(2, 1, 28, 28)).shape == (2, 64, omni_map, omni_map)
    assert mini.embedding(torch.zeros(2, 3, 84, 84)).shape == (2, 64, mini_map, mini_map)
    assert omni.relation.fc[1].in_features == 64 and mini.relation.fc[1].in_features == 576


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="fce"):
        build_learner(ModelSpec("matching", options={"fce": "maybe"}))
    with pytest.raises(ValueError, match="unknown matching option"):
        build_learner(ModelSpec("matching", options={"steps": 3}))
    # ResNet-12 serves through its feature maps; an embedding of flat features is refused
    relation = build_learner(ModelSpec("relation", "resnet12", 3, 84))
    assert relation.embedding.flatten is False
    from fewshot.methods.relation import RelationNet
    from fewshot.models.backbones import Conv4

    flat = RelationNet(Conv4(1, hidden=8), relation.relation)
    with pytest.raises(ValueError, match="must return feature maps"):
        flat(torch.rand(1, 2, 1, 28, 28), torch.tensor([[0, 1]]), torch.rand(1, 2, 1, 28, 28), 2)


def test_relation_all_pairs_equals_explicit_concatenation() -> None:
    """The factorized first convolution gives the scores of the concatenated pairs."""
    from fewshot.methods.relation import relation_pairs

    torch.manual_seed(0)
    module = RelationModule(8, (4, 4), hidden=8).eval()
    classes, query = torch.randn(2, 5, 8, 4, 4), torch.randn(2, 7, 8, 4, 4)
    explicit = module(relation_pairs(classes, query).flatten(0, 2)).view(2, 7, 5)
    torch.testing.assert_close(module.score_all_pairs(classes, query), explicit)
    assert torch.equal(relation_pairs(classes, query)[1, 3, 2], torch.cat([classes[1, 2], query[1, 3]]))


OLD_RELATION = {"separate_passes": False, "batch_stats_at_test": False, "init": "pytorch",
                "encoder_padding": 1, "grad_clip": None}


def test_relation_initialisation_follows_the_authors() -> None:
    """Conv normal(0, sqrt(2 / (3*3*64))), bias 0; BatchNorm 1 / 0; Linear normal(0, 0.01), bias 1."""
    torch.manual_seed(0)
    learner = build_learner(ModelSpec("relation", "conv4", 1, 28))
    convs = [m for m in learner.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in learner.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([c.weight.flatten() for c in convs[1:]])  # 64 -> 64 convs: many weights
    assert abs(weights.std().item() - math.sqrt(2 / (9 * 64))) < 0.002
    assert all((c.bias == 0).all() for c in convs)
    assert all((m.weight == 1).all() and (m.bias == 0).all()
               for m in learner.modules() if isinstance(m, nn.BatchNorm2d))
    assert all((lin.bias == 1).all() for lin in linears)
    assert abs(linears[0].weight.std().item() - 0.01) < 0.002
    old = build_learner(ModelSpec("relation", "conv4", 1, 28, {"init": "pytorch"}))
    assert not any((lin.bias == 1).all() for lin in old.modules() if isinstance(lin, nn.Linear))


def test_relation_batch_norm_as_the_authors() -> None:
    """Support and queries in separate passes, per episode, with batch statistics also in eval
    mode: scores equal a hand-assembled episode, do not depend on the other episodes of the
    batch, and are the same in train and eval mode. The old options use one joint pass and
    running averages."""
    torch.manual_seed(0)
    learner = build_learner(ModelSpec("relation", "conv4", 1, 28))
    sx, sy, qx, _ = random_episode(2, 5, 1, 3)
    sx, qx = nn.functional.interpolate(sx.flatten(0, 1), 28).view(2, 5, 1, 28, 28), \
        nn.functional.interpolate(qx.flatten(0, 1), 28).view(2, 15, 1, 28, 28)
    with torch.no_grad():
        out = learner.eval()(sx, sy, qx, 5)
        assert not any(m.track_running_stats for m in learner.modules()
                       if isinstance(m, nn.BatchNorm2d))
        torch.testing.assert_close(learner.train()(sx, sy, qx, 5), out)
        torch.testing.assert_close(learner(sx[1:], sy[1:], qx[1:], 5), out[1:])
        emb = learner.embedding
        by_hand = learner.relation.score_all_pairs(emb(sx[0]).unsqueeze(0), emb(qx[0]).unsqueeze(0))
        torch.testing.assert_close(out[:1], by_hand)
        joint = emb(torch.cat([sx[0], qx[0]]))  # support and queries in one pass differ
        mixed = learner.relation.score_all_pairs(joint[None, :5], joint[None, 5:])
        assert not torch.allclose(mixed, by_hand, atol=1e-4)
    old = build_learner(ModelSpec("relation", "conv4", 1, 28, OLD_RELATION))
    assert old.separate_passes is False and old.grad_clip is None
    assert all(m.track_running_stats for m in old.modules() if isinstance(m, nn.BatchNorm2d))


def test_relation_clips_each_module_to_half_and_train_uses_it() -> None:
    torch.manual_seed(0)
    learner = build_learner(ModelSpec("relation", "conv4", 1, 28))
    assert learner.grad_clip == 0.5
    for p in learner.parameters():
        p.grad = torch.full_like(p, 3.0)
    learner.clip_gradients(learner.grad_clip)
    for module in (learner.embedding, learner.relation):
        norm = torch.cat([p.grad.flatten() for p in module.parameters()]).norm()
        torch.testing.assert_close(norm, torch.tensor(0.5), rtol=1e-4, atol=0)
    # the training loop clips with the learner's grad_clip unless TrainConfig sets one
    data = pattern_dataset()
    for config_clip, learner_clip, expected in ((None, 0.5, [0.5]), (2.0, 0.5, [2.0]),
                                                (None, None, [])):
        small = make_learner("relation")
        small.grad_clip, calls = learner_clip, []
        small.clip_gradients = calls.append  # records the limit instead of clipping
        train(small, ModelSpec("relation"), EpisodeSampler(data, 5, 1, 2, seed=0),
              TrainConfig(steps=1, progress=False, grad_clip=config_clip))
        assert calls == expected
    with pytest.raises(ValueError, match="grad_clip"):
        build_learner(ModelSpec("relation", options={"grad_clip": "0"}))
