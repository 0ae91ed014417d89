"""Backbones by name (torchvision, timm), weights from local files, freezing by layer name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewshot.engine.checkpoint import CheckpointFile, load_backbone_weights
from fewshot.heads import HeadLearner, head_config
from fewshot.models.backbones import ResNet12, make_backbone
from fewshot.models.zoo import freeze, select_parameters


def run_episode(backbone: torch.nn.Module, channels: int = 3, size: int = 32) -> torch.Tensor:
    """One 2-way 1-shot episode through a logistic-regression head."""
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(1, 2, channels, size, size, generator=g)
    qx = torch.rand(1, 4, channels, size, size, generator=g)
    learner = HeadLearner(backbone, "logistic", head_config("logistic"))
    return learner.infer(sx, torch.tensor([[0, 1]]), qx, 2)


def round_trip(name: str, tmp_path: Path, channels: int = 3) -> None:
    """A backbone built by name loads the weights file of another of its kind and then gives
    the same features; an episode runs."""
    torch.manual_seed(0)
    source = make_backbone(name, channels)
    full = {**source.state_dict()}
    head = getattr(source, "removed_head", None)
    if head:  # the file holds the classifier too, as torchvision's and timm's files do
        full[f"{head}.weight"] = torch.zeros(1000, 4)
        full[f"{head}.bias"] = torch.zeros(1000)
    torch.save(full, tmp_path / "weights.pth")
    torch.manual_seed(1)
    target = make_backbone(name, channels)
    load_backbone_weights(target, tmp_path / "weights.pth", name)
    x = torch.rand(2, channels, 32, 32)
    source.eval()
    target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    logits = run_episode(target, channels)
    assert logits.shape == (1, 4, 2) and torch.isfinite(logits).all()


def test_torchvision_resnet18(tmp_path: Path):
    net = make_backbone("resnet18", 3)
    assert net.removed_head == "fc" and net(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    round_trip("resnet18", tmp_path)
    gray = make_backbone("resnet18", 1)  # grayscale repeated to the 3 channels it takes
    assert gray(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def test_timm_model(tmp_path: Path):
    pytest.importorskip("timm")
    net = make_backbone("timm:resnet18", 1)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 512)
    round_trip("timm:resnet18", tmp_path, channels=1)


def test_unknown_backbones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet13': choose conv4, resnet12, a "
                                         "torchvision classification model"):
        make_backbone("resnet13", 3)
    with pytest.raises(ValueError, match="backbone resnet18 takes no options \\(flatten\\)"):
        make_backbone("resnet18", 3, flatten=False)
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="timm has no model 'nope'"):
        make_backbone("timm:nope", 3)


def test_weights_round_trip_and_fewshot_checkpoints(tmp_path: Path):
    from fewshot import make_spec
    from fewshot.engine.checkpoint import save_checkpoint
    from fewshot.registry import build_learner

    torch.manual_seed(0)
    spec = make_spec("protonet", "conv4", 1, 16)
    learner = build_learner(spec)
    save_checkpoint(tmp_path / "proto.pt", learner, spec, pipeline=None)
    state, meta = CheckpointFile(tmp_path / "proto.pt", "--weights").backbone_state()
    assert meta["spec"]["method"] == "protonet"
    assert state.keys() == learner.backbone.state_dict().keys()
    fresh = make_backbone("conv4", 1)
    load_backbone_weights(fresh, tmp_path / "proto.pt", "conv4")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                  learner.backbone.state_dict().values(),
                                                  strict=True))
    torch.save({"state_dict": {f"module.{k}": v for k, v in fresh.state_dict().items()}},
               tmp_path / "wrapped.pth")
    load_backbone_weights(make_backbone("conv4", 1), tmp_path / "wrapped.pth", "conv4")


def test_wrong_architecture_weights_fail_clearly(tmp_path: Path):
    torch.save(make_backbone("conv4", 3).state_dict(), tmp_path / "conv4.pth")
    with pytest.raises(ValueError) as info:
        load_backbone_weights(ResNet12(3), tmp_path / "conv4.pth", "resnet12")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"--weights {tmp_path / 'conv4.pth'} does not fit backbone resnet12: "
                           f"missing blocks.0.body.0.weight")
    assert "unexpected blocks.0.0.weight" in text and "give weights saved from a resnet12" in text
    with pytest.raises(ValueError, match=r"shape mismatch in blocks.0.0.weight \(file \[64, 3, 3, "
                                         r"3\], backbone \[64, 1, 3, 3\]\)"):
        load_backbone_weights(make_backbone("conv4", 1), tmp_path / "conv4.pth", "conv4")
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    with pytest.raises(ValueError, match="is not a readable PyTorch file"):
        load_backbone_weights(make_backbone("conv4", 1), tmp_path / "junk.pth", "conv4")
    torch.save({"where": Path("x")}, tmp_path / "object.pth")
    with pytest.raises(ValueError, match="holds objects other than tensors"):
        load_backbone_weights(make_backbone("conv4", 1), tmp_path / "object.pth", "conv4")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="is not a state dict"):
        load_backbone_weights(make_backbone("conv4", 1), tmp_path / "list.pth", "conv4")


def test_freezing_by_layer_name():
    net = make_backbone("conv4", 1)
    frozen = freeze(net, ["blocks.0", "blocks.3.1"])
    assert frozen == ["blocks.0.0.weight", "blocks.0.0.bias", "blocks.0.1.weight",
                      "blocks.0.1.bias", "blocks.3.1.weight", "blocks.3.1.bias"]
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == frozen
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net.train()(torch.randn(8, 1, 28, 28) * 3 + 1)
    after = net.state_dict()
    kept = [k for k in before if torch.equal(before[k], after[k])]
    assert kept == ["blocks.0.1.running_mean", "blocks.0.1.running_var",
                    "blocks.3.1.running_mean", "blocks.3.1.running_var"]
    assert select_parameters(net, ["*.1.weight"]) == [f"blocks.{i}.1.weight" for i in range(4)]
    with pytest.raises(ValueError, match=r"--freeze 'layer4' matches no layer of the backbone: "
                                         r"its layers are blocks.0, blocks.1, blocks.2, blocks.3"):
        freeze(net, ["layer4"])
