"""Self-supervised learners against their authors' code: MoCo's shuffling BatchNorm (the split
BatchNorm of the official single-GPU demo) and MoCo v2's views, SimCLR's projector; checkpoints
written before these still load as the models they were."""

from __future__ import annotations

from pathlib import Path

import torch

from episodes import VIEW_PRESETS
from fewshot.engine.checkpoint import load_learner, save_checkpoint
from fewshot.models.episode_norm import PerEpisodeNorm
from fewshot.modules import ScaleBatchNorm1d
from fewshot.registry import build_learner, make_spec


def moco(**options):
    torch.manual_seed(0)
    spec = make_spec("moco", "conv4", 3, 16, {"hidden": 8, "proj_hidden": 16, "queue_size": 16,
                                             **options})
    return build_learner(spec).train(), spec


def test_moco_queries_use_sub_batch_statistics() -> None:
    """With ``bn_splits`` 4 (batch 8), a query's features depend on its own sub-batch only."""
    learner, _ = moco(bn_splits=4)
    views = torch.rand(2, 8, 3, 16, 16)
    learner.views_loss(views, torch.arange(8))
    with learner.split_norm():
        before = learner.projector(learner.features(views[0]))
        changed = views[0].clone()
        changed[4:] = torch.rand(4, 3, 16, 16)  # the last two sub-batches
        after = learner.projector(learner.features(changed))
    torch.testing.assert_close(after[:4], before[:4])
    assert not torch.allclose(after[4:], before[4:])


def test_moco_keys_are_shuffled_through_split_batchnorm() -> None:
    """The keys (the queue's newest entries) are the key encoder's output on the shuffled key
    batch in sub-batches, put back in the batch's order: not its output on the whole batch."""
    learner, _ = moco(bn_splits=4)
    views = torch.rand(2, 8, 3, 16, 16)
    torch.manual_seed(5)
    learner.views_loss(views, torch.arange(8))
    keys = learner.queue[:8].clone()
    torch.manual_seed(5)
    order = torch.randperm(8)
    with torch.no_grad(), PerEpisodeNorm(4):
        k = learner.target_projector(learner.target_backbone(views[1][order]).flatten(1))
    expected = torch.nn.functional.normalize(k, dim=1)[order.argsort()]
    torch.testing.assert_close(keys, expected)
    with torch.no_grad():
        whole = torch.nn.functional.normalize(
            learner.target_projector(learner.target_backbone(views[1]).flatten(1)), dim=1)
    assert not torch.allclose(keys, whole, atol=1e-3)


def test_moco_views_are_moco_v2s() -> None:
    """MoCo v2's ``--aug-plus``: crop 0.2-1, jitter 0.4/0.4/0.4/0.1 (p 0.8), gray 0.2, blur 0.5."""
    learner, spec = moco(bn_splits=2)
    assert spec.options["views"] == "mocov2"
    for config in learner.view_augments():
        assert config == VIEW_PRESETS["mocov2"][0]
        assert (config.area, config.hflip, config.jitter_p, config.grayscale, config.blur) == (
            (0.2, 1.0), 0.5, 0.8, 0.2, 0.5)
        assert (config.brightness, config.contrast, config.saturation, config.hue) == (
            0.4, 0.4, 0.4, 0.1)


def test_simclr_projector_ends_with_a_scale_only_batchnorm() -> None:
    """google-research/simclr's head: the last dense layer without bias, then BatchNorm with a
    scale and no shift."""
    spec = make_spec("simclr", "conv4", 3, 16, {"hidden": 8, "proj_hidden": 16})
    projector = build_learner(spec).projector
    last, bn = projector[-2], projector[-1]
    assert isinstance(last, torch.nn.Linear) and last.bias is None
    assert isinstance(bn, ScaleBatchNorm1d) and bn.weight is not None and bn.bias is None
    z = projector.train()(torch.randn(10, projector[0].in_features))
    torch.testing.assert_close(z.mean(0), torch.zeros(128), atol=1e-5, rtol=0)


def test_checkpoints_from_before_load_as_they_were(tmp_path: Path) -> None:
    """A stored spec without ``proj_last_bn`` (SimCLR) or ``bn_splits`` (MoCo) was written when
    neither existed: it loads as that model (no last BatchNorm, no split), weights and all."""
    for method, option, old in (("simclr", "proj_last_bn", False), ("moco", "bn_splits", 1)):
        spec = make_spec(method, "conv4", 3, 16, {"hidden": 8, "proj_hidden": 16, option: old,
                                                  **({"views": "simclr"} if method == "moco"
                                                     else {})})
        learner = build_learner(spec)
        spec.options.pop(option)
        save_checkpoint(tmp_path / f"{method}.pt", learner, spec)
        loaded, loaded_spec, _ = load_learner(tmp_path / f"{method}.pt")
        assert loaded_spec.options[option] == old
        assert loaded.state_dict().keys() == learner.state_dict().keys()
