"""Input normalisation recorded in the spec and applied by the backbone on every path
(fewshot.models.input_norm): what auto chooses, that the backbone computes (x - mean) / std before
anything else, that weights files and old checkpoints are unchanged, and that pretrain, eval
(checkpoint and weights file) and --init agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewshot import build_learner, make_spec
from fewshot.cli import main
from fewshot.engine.checkpoint import load_learner, save_checkpoint
from fewshot.models.backbones import Conv4
from fewshot.models.input_norm import add_input_norm, parse_normalize, resolve_normalize
from fewshot.models.weights import backbone_of

from .conftest import data_args

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_what_auto_and_the_names_give():
    assert resolve_normalize("auto", "conv4", 3) is None
    assert resolve_normalize("auto", "resnet12", 1) is None
    assert resolve_normalize("auto", "resnet18", 3) == IMAGENET
    # torchvision repeats a grayscale channel to three: the three statistics stay
    assert resolve_normalize("auto", "resnet18", 1) == IMAGENET
    # a backbone that takes one channel gets the statistics averaged
    gray = resolve_normalize("imagenet", "conv4", 1)
    assert gray == {"mean": [sum(IMAGENET["mean"]) / 3], "std": [sum(IMAGENET["std"]) / 3]}
    assert resolve_normalize("none", "resnet18", 3) is None
    assert resolve_normalize(" 0.5,0.25,1/2,4,8 ", "conv4", 3) == {"mean": [0.5, 0.25, 1.0],
                                                                   "std": [2.0, 4.0, 8.0]}
    assert parse_normalize("inception") == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert parse_normalize("auto") == "auto"


def test_timm_auto_is_the_models_own():
    pytest.importorskip("timm")
    assert resolve_normalize("auto", "timm:resnet18", 3) == IMAGENET
    assert resolve_normalize("auto", "timm:vit_tiny_patch16_224", 3) == {
        "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize("backbone, channels", [("conv4", 1), ("conv4", 3), ("resnet18", 1)])
def test_backbone_normalises_first_and_keeps_its_state_dict(backbone: str, channels: int):
    norm = resolve_normalize("imagenet", backbone, channels)
    torch.manual_seed(0)
    plain = build_learner(make_spec("protonet", backbone, channels, 32))
    normed = build_learner(make_spec("protonet", backbone, channels, 32, normalize=norm))
    assert list(normed.state_dict()) == list(plain.state_dict())  # weights files fit both
    normed.load_state_dict(plain.state_dict())
    plain.eval()
    normed.eval()
    x = torch.rand(4, channels, 32, 32)
    mean, std = (torch.tensor(norm[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    by_hand = (x - mean) / std  # a grayscale image becomes 3 channels for torchvision models
    with torch.no_grad():
        torch.testing.assert_close(normed.backbone(x), plain.backbone(by_hand), rtol=0, atol=0)
        assert not torch.equal(normed.backbone(x), plain.backbone(x))


OPTIONS = {"classifier": {"num_classes": 4}, "maml": {"n_way": 2},
           "deepcluster": {"num_images": 200}, "uic": {"num_images": 200}}


@pytest.mark.parametrize("method", ["protonet", "matching", "relation", "maml", "classifier",
                                    "rotation", "jigsaw", "simclr", "moco", "byol", "simsiam",
                                    "barlow-twins", "vicreg", "deepcluster", "uic"])
def test_every_backbone_of_every_method_normalises(method: str):
    """Every Conv-4 a learner holds normalises, momentum targets (BYOL, MoCo) included."""
    norm = {"mean": [0.5], "std": [0.25]}
    learner = build_learner(make_spec(method, "conv4", 1, 28, OPTIONS.get(method), norm))
    convs = [m for m in learner.modules() if isinstance(m, Conv4)]
    assert len(convs) == (2 if method in ("byol", "moco") else 1)
    for m in convs:
        assert m.input_mean.flatten().tolist() == [0.5] and m.input_std.flatten().tolist() == [0.25]


def test_checkpoints_record_it_and_old_ones_have_none(tmp_path: Path):
    spec = make_spec("protonet", "conv4", 3, 16, normalize=IMAGENET)
    learner = build_learner(spec)
    save_checkpoint(tmp_path / "m.pt", learner, spec)
    loaded, loaded_spec, _ = load_learner(tmp_path / "m.pt")
    assert loaded_spec.normalize == IMAGENET
    assert torch.equal(backbone_of(loaded).input_std.flatten(), torch.tensor(IMAGENET["std"]))
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    del ckpt["spec"]["normalize"]  # as written before normalisation was recorded
    torch.save(ckpt, tmp_path / "old.pt")
    old, old_spec, _ = load_learner(tmp_path / "old.pt")
    assert old_spec.normalize is None and not hasattr(backbone_of(old), "input_mean")
    with pytest.raises(ValueError, match="already normalises"):
        add_input_norm(backbone_of(loaded), IMAGENET)


def test_pretrain_eval_and_init_use_the_recorded_normalisation(tree: Path):
    d = data_args(tree)
    main(["pretrain", *d, "--backbone", "resnet18", "--batch-size", "6", "--steps", "1",
          "--val-episodes", "0", "--quiet", "--out", str(tree / "pre")])
    ckpt = torch.load(tree / "pre" / "last.pt", weights_only=True)
    assert ckpt["spec"]["normalize"] == IMAGENET  # auto for a torchvision model
    assert json.loads((tree / "pre" / "run.json").read_text())["spec"]["normalize"] == IMAGENET
    learner, _, _ = load_learner(tree / "pre" / "last.pt")
    torch.save(learner.backbone.state_dict(), tree / "resnet18.pth")
    ev = ["--way", "2", "--query", "2", "--episodes", "4", "--head", "prototype",
          "--episodes-file", str(tree / "eps.pt")]
    main(["eval", *d, "--checkpoint", str(tree / "pre" / "last.pt"), *ev, "--json",
          str(tree / "ckpt.json")])
    main(["eval", *d, "--backbone", "resnet18", "--weights", str(tree / "resnet18.pth"), *ev,
          "--json", str(tree / "auto.json")])
    acc = {n: json.loads((tree / f"{n}.json").read_text()) for n in ("ckpt", "auto")}
    # the weights file with auto normalisation scores exactly as the checkpoint
    assert acc["auto"]["accuracies"] == acc["ckpt"]["accuracies"]
    # a fewshot checkpoint as --weights brings its own normalisation
    main(["eval", *d, "--backbone", "resnet18", "--weights", str(tree / "pre" / "last.pt"), *ev,
          "--json", str(tree / "asweights.json")])
    assert json.loads((tree / "asweights.json").read_text())["accuracies"] == \
        acc["ckpt"]["accuracies"]
    # meta-training from it keeps it
    main(["train", *d, "--backbone", "resnet18", "--init", str(tree / "pre" / "last.pt"),
          "--way", "2", "--query", "2", "--steps", "1", "--val-episodes", "0", "--quiet",
          "--out", str(tree / "meta")])
    meta = torch.load(tree / "meta" / "last.pt", weights_only=True)
    assert meta["spec"]["normalize"] == IMAGENET
