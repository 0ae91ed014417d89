"""The short Python API: FewShotClassifier on tensors, files and folders, for every method and
for a backbone with a head; its probabilities are those of ``predict`` (one code path), at the
checkpoint's temperature; learners and ``evaluate`` take a single episode."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from episodes import Episode, ImagePipeline
from fewshot import FewShotClassifier, build_learner, evaluate, make_spec, predict
from fewshot.engine.calibrate import set_temperature
from fewshot.engine.checkpoint import load_learner, save_checkpoint
from fewshot.registry import fill_from_data, method_names


def checkpoint(tmp_path: Path, method: str = "protonet", way: int = 2) -> Path:
    """An untrained checkpoint of ``method`` (conv4, 1-channel images of 16 px, or 28 for
    relation), recording its image pipeline."""
    torch.manual_seed(0)
    size = 28 if method == "relation" else 16
    spec = make_spec(method, "conv4", 1, size, fill_from_data(method, {}, way=way))
    path = tmp_path / f"{method}.pt"
    save_checkpoint(path, build_learner(spec), spec, pipeline=ImagePipeline(channels=1, size=size))
    return path


def images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def write(folder: Path, x: torch.Tensor) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(len(x))]
    for p, img in zip(paths, x, strict=True):
        Image.fromarray(img[0].numpy(), "L").save(p)
    return paths


@pytest.mark.parametrize("method", ["protonet", "matching", "relation", "maml"])
def test_every_method_fits_and_predicts_tensors(tmp_path: Path, method: str):
    assert method in method_names("episodic")
    size = 28 if method == "relation" else 16
    clf = FewShotClassifier.from_checkpoint(checkpoint(tmp_path, method), device="cpu")
    clf.fit(images(4, size), ["cat", "dog", "cat", "dog"])
    assert clf.classes_ == ["cat", "dog"]
    probs = clf.predict_proba(images(3, size, seed=1))
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    labels = clf.predict(images(3, size, seed=1))
    assert labels == [clf.classes_[i] for i in probs.argmax(-1)]
    assert "not fitted" not in repr(clf) and method in repr(clf)


def test_files_folders_and_tensors_give_the_probabilities_of_predict(tmp_path: Path):
    path = checkpoint(tmp_path)
    support, query = images(4), images(5, seed=1)
    for c in (0, 1):
        write(tmp_path / "support" / f"c{c}", support[2 * c:2 * c + 2])
    files = write(tmp_path / "query", query)
    learner, spec, ckpt = load_learner(path)
    reference = predict(learner, spec, tmp_path / "support", tmp_path / "query",
                        pipeline=ckpt["pipeline"])
    clf = FewShotClassifier.from_checkpoint(path).fit(tmp_path / "support")
    assert clf.classes_ == ["c0", "c1"]
    from_folder = clf.predict_proba(tmp_path / "query")
    assert [clf.classes_[i] for i in from_folder.argmax(-1)] == [p.label for p in reference]
    torch.testing.assert_close(from_folder.max(-1).values, torch.tensor(
        [p.probability for p in reference]))
    # the same images as tensors (PNG is lossless), and as a list of files with labels
    torch.testing.assert_close(clf.predict_proba(query), from_folder)
    clf2 = FewShotClassifier.from_checkpoint(path).fit(
        sorted((tmp_path / "support").rglob("*.png")), [0, 0, 1, 1])
    torch.testing.assert_close(clf2.predict_proba(files), from_folder)
    torch.testing.assert_close(clf.predict_proba(query[0]), from_folder[:1])  # one image


def test_temperature_is_read_from_the_checkpoint_and_can_be_turned_off(tmp_path: Path):
    path = checkpoint(tmp_path)
    support, query = images(4), images(6, seed=1)
    plain = FewShotClassifier.from_checkpoint(path).fit(support, [0, 1, 0, 1])
    assert plain.temperature == 1.0  # a checkpoint without temperature reads as T = 1
    set_temperature(path, 2.0)
    assert load_learner(path)[2]["temperature"] == 2.0
    hot = FewShotClassifier.from_checkpoint(path).fit(support, [0, 1, 0, 1])
    off = FewShotClassifier.from_checkpoint(path, temperature=False).fit(support, [0, 1, 0, 1])
    p1 = plain.predict_proba(query)
    torch.testing.assert_close(off.predict_proba(query), p1)
    # softmax(z / 2) is softmax(z) square-rooted and renormalised
    expected = p1.sqrt() / p1.sqrt().sum(-1, keepdim=True)
    torch.testing.assert_close(hot.predict_proba(query), expected)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), "hot", [2.0]])
def test_a_checkpoint_with_a_bad_temperature_is_refused(tmp_path: Path, bad):
    path = checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "temperature": bad}, path)
    with pytest.raises(ValueError, match="temperature .* not a positive finite number"):
        load_learner(path)


def test_a_backbone_with_a_head(tmp_path: Path):
    path = checkpoint(tmp_path)
    set_temperature(path, 3.0)
    clf = FewShotClassifier.from_checkpoint(path, head="logistic", head_options={"C": 0.5})
    assert clf.temperature == 1.0  # the checkpoint's temperature is its own learner's
    probs = clf.fit(images(6), ["a", "b", "c"] * 2).predict_proba(images(2, seed=1))
    assert probs.shape == (2, 3)
    with pytest.raises(ValueError, match="head"):
        FewShotClassifier.from_checkpoint(path, head_options={"C": 0.5})


def test_bad_images_are_refused_with_the_expected_shape(tmp_path: Path):
    clf = FewShotClassifier.from_checkpoint(checkpoint(tmp_path))
    rgb = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="support images have 3 channels; this checkpoint reads "
                                         "1-channel 16x16 images: average the channels"):
        clf.fit(rgb, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="support images are 20x20; this checkpoint reads"):
        clf.fit(torch.zeros(4, 1, 20, 20), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"values in \[-1, 1\].*give unnormalised images"):
        clf.fit(torch.linspace(-1, 1, 4 * 256).view(4, 1, 16, 16), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="4 support images but 3 labels"):
        clf.fit(images(4), [0, 1, 0])
    with pytest.raises(ValueError, match="at least two classes"):
        clf.fit(images(4), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="call fit"):
        clf.predict(images(1))
    clf.fit(images(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"query images have shape \[2, 5, 16, 16, 1\]; this "
                                         r"checkpoint reads .* give a batch \[B, 1, 16, 16\]"):
        clf.predict(torch.zeros(2, 5, 16, 16, 1))


def test_learners_and_evaluate_take_one_episode_without_the_episode_dimension(tmp_path: Path):
    learner, _, _ = load_learner(checkpoint(tmp_path))
    sx, qx = images(4).float() / 255, images(6, seed=1).float() / 255
    sy, qy = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1])
    learner.eval()
    batched = learner.infer(sx[None], sy[None], qx[None], 2)
    single = learner.infer(sx, sy, qx, 2)
    assert single.shape == (6, 2)
    torch.testing.assert_close(single, batched[0])
    with pytest.raises(ValueError, match=r"support_x \[T, N\*K, C, H, W\].*got support_x "
                                         r"\[4, 1, 16, 16\], support_y \[1, 4\]"):
        learner(sx, sy[None], qx, 2)
    episode = Episode(sx, sy, qx, qy, torch.tensor([3, 7]))
    assert "one episode, 2-way 2-shot 3-query" in repr(episode)
    result = evaluate(learner, episode)
    assert len(result.accuracies) == 1
    assert float(result.accuracies[0]) == float((single.argmax(-1) == qy).float().mean())
    assert 0 <= result.ece <= 1


def python_block(doc: str, heading: str) -> str:
    """The first ```python block after ``heading`` in ``docs/<doc>``."""
    text = (Path(__file__).parents[1] / "docs" / doc).read_text()
    after = text[text.index(heading):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_snippets_run(tmp_path: Path, monkeypatch, tiny_dataset):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    checkpoint(tmp_path).rename(tmp_path / "runs" / "x" / "best.pt")
    support_images, query_images = images(4), images(3, seed=1)
    write(tmp_path / "my_support" / "cat", support_images[::2])
    write(tmp_path / "my_support" / "dog", support_images[1::2])
    write(tmp_path / "my_queries", query_images)
    scope = {"support_images": support_images, "query_images": query_images}
    exec(python_block("getting-started.md", "### Classify your own images"), scope)  # noqa: S102
    assert scope["clf"].classes_ == ["cat", "dog"]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = "from fewshot import FewShotClassifier" + readme.split(
        "```python\nfrom fewshot import FewShotClassifier", 1)[1].split("```", 1)[0]
    scope = {}
    exec(block, scope)  # noqa: S102 - the README's own inference snippet
    assert scope["clf"].classes_ == ["cat", "dog"]

    from episodes import FixedEpisodes
    val_ds = tiny_dataset(num_classes=6, per_class=8, size=16)
    scope = {"val_ds": val_ds, "val_episodes": FixedEpisodes.generate(val_ds, 3, 1, 2, 4, seed=1)}
    exec(python_block("guide/calibration.md", "## Temperature scaling"), scope)  # noqa: S102
    assert scope["logits"].shape == (4, 6, 3) and scope["t"] > 0
    assert 0 <= scope["after"] <= 1 and 0 <= scope["before"] <= 1
