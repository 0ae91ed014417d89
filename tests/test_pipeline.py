"""The recorded image pipeline: built by every loader, carried by the dataset, saved in the
checkpoint, applied by predict to raw files exactly as the loader applied it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from episodes import (
    EpisodeSampler,
    ImagePipeline,
    image_folder,
    omniglot,
    read_images,
    stroke_characters,
    to_unit_float,
)
from episodes.omniglot import vinyals_characters
from fewshot import ModelSpec, TrainConfig, build_learner, train
from fewshot.engine.checkpoint import check_pipeline, load_learner, recorded_pipeline
from fewshot.engine.predict import predict

from .test_datasets import make_fake_omniglot, write_tree

OMNIGLOT_PIPELINE = ImagePipeline(1, 28, "area", invert=True)


@pytest.fixture(scope="module")
def fake_omniglot(tmp_path_factory) -> tuple[Path, object]:
    """A fake Omniglot tree (val split, 3 drawings of 105x105 per character) and its dataset."""
    root = tmp_path_factory.mktemp("omni")
    make_fake_omniglot(root, vinyals_characters("val"))
    return root, omniglot(root, "val", cache_dir=root / "cache")


@pytest.fixture(scope="module")
def trained(fake_omniglot, tmp_path_factory) -> Path:
    """A checkpoint of a ProtoNet trained 2 steps on the fake Omniglot (the pipeline saved)."""
    _, ds = fake_omniglot
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    spec = ModelSpec("protonet", "conv4", 1, 28)
    sampler = EpisodeSampler(ds, 3, 1, 2, seed=0)
    train(build_learner(spec), spec, sampler, TrainConfig(steps=2, checkpoint_dir=str(out),
                                                          progress=False))
    return out / "last.pt"


def char_files(root: Path, char: str) -> list[Path]:
    return sorted(next(root.glob(f"*/{char}")).glob("*.png"))


def test_pipeline_text_round_trip_and_checks():
    p = ImagePipeline(3, 84, "bilinear", crop="boxes")
    assert ImagePipeline.parse(p.describe()) == p
    assert ImagePipeline.from_dict(p.to_dict()) == p
    assert ImagePipeline.parse("channels=1,size=28,resample=area,invert=true") == OMNIGLOT_PIPELINE
    assert p.differences(replace(p, invert=True)) == {"invert": (False, True)}
    for bad in ("channels=2,size=8", "channels=1,size=8,resample=nearest", "channels=1",
                "channels=1,size=8,colour=red", "size", "channels=1,size=8,invert=maybe"):
        with pytest.raises(ValueError, match="image pipeline"):
            ImagePipeline.parse(bad)


def test_every_loader_records_its_pipeline(fake_omniglot, tmp_path):
    _, ds = fake_omniglot
    assert ds.pipeline == OMNIGLOT_PIPELINE
    assert ds.to("cpu").pipeline == ds.pipeline
    assert ds.subset_classes(ds.class_names[:3]).pipeline == ds.pipeline
    write_tree(tmp_path / "data", {f"c{i}": 2 for i in range(3)}, mode="L")
    folder = image_folder(tmp_path / "data", "all", image_size=8, channels=1, decoder="threads")
    assert folder.pipeline == ImagePipeline(1, 8, "bilinear")
    strokes = stroke_characters("val", cache_dir=tmp_path / "c", image_size=20)
    assert strokes.pipeline == ImagePipeline(1, 20, "area", invert=False)
    with pytest.raises(ValueError, match="does not match"):
        type(ds)(ds.images, ds.targets, ds.class_names, ImagePipeline(1, 32, "area"))


def test_loader_cache_is_the_pipeline_applied_to_the_files(fake_omniglot):
    root, ds = fake_omniglot
    char = ds.class_names[0].rsplit("/", 1)[0]
    files = char_files(root, char)
    ours, _ = read_images(files, ds.pipeline)
    assert torch.equal(ours, ds.images[ds.targets == 0])  # rot000 of the first character
    old, _ = read_images(files, ImagePipeline(1, 28, "bilinear"))  # predict's old reading
    assert (old.float() - ours.float()).abs().mean() > 100


def test_checkpoint_records_the_pipeline_as_plain_data(trained):
    raw = torch.load(trained, weights_only=True)
    assert raw["pipeline"] == OMNIGLOT_PIPELINE.to_dict()
    _, _, ckpt = load_learner(trained)
    assert ckpt["pipeline"] == OMNIGLOT_PIPELINE
    assert recorded_pipeline(ckpt, trained) == OMNIGLOT_PIPELINE


def test_predict_reads_raw_files_as_the_loader_did(fake_omniglot, trained, tmp_path):
    root, ds = fake_omniglot
    learner, spec, ckpt = load_learner(trained)
    chars = sorted((n.rsplit("/", 1)[0] for n in ds.class_names[:3 * 4:4]),  # 3 characters
                   key=lambda c: c.replace("/", "_"))  # in the support folders' order
    support, query = tmp_path / "support", tmp_path / "query"
    query.mkdir()
    want_s, want_q = [], []
    for char in chars:
        files = char_files(root, char)
        images = ds.images[ds.targets == ds.class_names.index(f"{char}/rot000")]
        (support / char.replace("/", "_")).mkdir(parents=True)
        shutil.copy(files[0], support / char.replace("/", "_") / files[0].name)
        for f in files[1:]:
            shutil.copy(f, query / f.name)
        want_s.append(images[:1])
        want_q += [(f.name, img) for f, img in zip(files[1:], images[1:], strict=True)]
    seen = []
    embed = learner.embed  # predict embeds the support images, then the queries
    learner.embed = lambda x: seen.append(x) or embed(x)
    preds = predict(learner, spec, support, query, pipeline=recorded_pipeline(ckpt, trained))
    sx, qx = seen[-2:]
    want_q = [img for _, img in sorted(want_q)]
    assert torch.equal(sx, to_unit_float(torch.cat(want_s)))  # identical tensors
    assert torch.equal(qx, to_unit_float(torch.stack(want_q)))
    logits = learner.infer(sx[None], torch.arange(3).unsqueeze(0),
                           to_unit_float(torch.stack(want_q))[None], 3)
    assert [p.label for p in preds] == [sorted(p.name for p in support.iterdir())[i]
                                        for i in logits[0].argmax(-1).tolist()]


def test_old_checkpoint_without_pipeline(trained, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    del ckpt["pipeline"]
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    learner, spec, loaded = load_learner(old)
    with pytest.raises(ValueError, match=r"old\.pt records no image pipeline.*retrain") as e:
        recorded_pipeline(loaded, old)
    assert "\n" not in str(e.value)
    stated = "channels=1,size=28,resample=area,invert=true"
    assert recorded_pipeline(loaded, old, stated) == OMNIGLOT_PIPELINE
    _, _, new = load_learner(trained)
    with pytest.raises(ValueError, match="not the stated"):
        recorded_pipeline(new, trained, "channels=1,size=28")
    with pytest.raises(ValueError, match="pipeline the model was trained with"):
        predict(learner, spec, tmp_path, tmp_path)


def test_eval_refuses_a_dataset_read_differently(fake_omniglot, trained, tmp_path):
    _, ds = fake_omniglot
    _, spec, ckpt = load_learner(trained)
    check_pipeline(spec, ckpt["pipeline"], ds)  # the same pipeline: accepted
    write_tree(tmp_path / "data", {f"c{i}": 2 for i in range(3)}, size=40, mode="L")
    folder = image_folder(tmp_path / "data", "all", image_size=28, channels=1, decoder="threads")
    with pytest.raises(ValueError, match=r"resample: trained 'area', dataset 'bilinear'; invert: "
                                         r"trained True, dataset False"):
        check_pipeline(spec, ckpt["pipeline"], folder, str(trained))
    small = image_folder(tmp_path / "data", "all", image_size=20, channels=1, decoder="threads")
    with pytest.raises(ValueError, match="--image-size 28"):
        check_pipeline(spec, None, small)  # an old checkpoint: channels and size still checked
