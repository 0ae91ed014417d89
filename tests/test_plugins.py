"""A method, a head and a dataset added from outside the library (this file) are trained,
scored and used through the command line like the built-in ones: nothing in the library names
them. And a registry imports the modules of its entry-point group, as an installed package's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from episodes import ImagePipeline, TensorClassDataset
from episodes.options import check
from episodes.registry import DATASETS, Registry
from fewshot.cli import main
from fewshot.functional import protonet_logits
from fewshot.heads import HEADS, register_head
from fewshot.models.backbones import spec_backbone
from fewshot.models.learner import BackboneLearner, ModelSpec
from fewshot.registry import METHODS, data_field, register

SIZE = 16


@dataclass
class ToyConfig:
    temperature: float = 1.0
    n_way: int = data_field("way", 5)

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", "> 0", self.temperature)


class ToyLearner(BackboneLearner):
    """Prototypes with a temperature; checks it was built for the episodes' way."""

    def __init__(self, spec: ModelSpec, config: ToyConfig) -> None:
        super().__init__()
        self.backbone, self.config = spec_backbone(spec, 8), config

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        assert n_way == self.config.n_way, (n_way, self.config.n_way)
        return protonet_logits(support.flatten(2), support_y, query.flatten(2), n_way) \
            / self.config.temperature


@dataclass
class NearestConfig:
    scale: float = 1.0


def nearest_logits(s: Tensor, y: Tensor, q: Tensor, n: int, c: NearestConfig) -> Tensor:
    return c.scale * protonet_logits(s, y, q, n)


@dataclass
class BarsOptions:
    NEEDS_ROOT: ClassVar[bool] = False  # generated, not read from a folder
    classes: int = 12
    cache_dir: str | None = None


def bars(root, split: str, image_size: int | None, o: BarsOptions) -> TensorClassDataset:
    """Class c: a bright bar at row c on noise; 6 images a class; the classes split 2:1:1."""
    first, count = {"train": (0, o.classes // 2), "val": (o.classes // 2, o.classes // 4),
                    "test": (3 * o.classes // 4, o.classes // 4)}[split]
    g = torch.Generator().manual_seed(first)
    images = torch.randint(0, 60, (count * 6, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    for i, c in enumerate(range(first, first + count)):
        images[6 * i:6 * i + 6, :, c:c + 1] = 255
    return TensorClassDataset(images, torch.arange(count).repeat_interleave(6),
                              [f"bar{c}" for c in range(first, first + count)],
                              ImagePipeline(channels=1, size=SIZE, resample="area"))


@pytest.fixture
def toys() -> Iterator[None]:
    """Register the toy method, head and dataset for one test, and take them out again."""
    register("toy-protos", ToyConfig, "episodic", "prototypes with a temperature")(ToyLearner)
    register_head("toy-nearest", NearestConfig, "features", "scaled nearest mean",
                  nearest_logits)
    DATASETS.register("toy-bars", BarsOptions, "images", "bars on noise")(bars)
    yield
    for registry, name in ((METHODS, "toy-protos"), (HEADS, "toy-nearest"),
                           (DATASETS, "toy-bars")):
        registry.entries.pop(name)


def test_a_method_head_and_dataset_from_outside_run_through_the_cli(toys, tmp_path: Path,
                                                                   capsys):
    data = ["--dataset", "toy-bars", "--image-size", str(SIZE), "--cache-dir", str(tmp_path),
            "--device", "cpu"]
    run = tmp_path / "run"
    main(["train", *data, "--method", "toy-protos", "--option", "temperature=2", "--way", "3",
          "--shot", "1", "--query", "2", "--steps", "3", "--val-episodes", "2", "--val-query",
          "2", "--quiet", "--out", str(run)])
    spec = json.loads((run / "run.json").read_text())["spec"]
    assert spec["method"] == "toy-protos" and spec["options"] == {"temperature": 2.0, "n_way": 3}
    main(["eval", *data, "--checkpoint", str(run / "best.pt"), "--way", "3", "--query", "2",
          "--episodes", "4", "--json", str(tmp_path / "own.json")])
    main(["eval", *data, "--checkpoint", str(run / "last.pt"), "--head", "toy-nearest",
          "--head-option", "scale=3", "--way", "2", "--query", "2", "--episodes", "4",
          "--json", str(tmp_path / "head.json")])
    for name in ("own.json", "head.json"):
        assert len(json.loads((tmp_path / name).read_text())["accuracies"]) == 4
    support, query = tmp_path / "support", tmp_path / "query"
    rng = np.random.default_rng(0)
    for c in range(3):
        (support / f"bar{c}").mkdir(parents=True)
        img = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
        img[c:c + 1] = 255
        Image.fromarray(img, "L").save(support / f"bar{c}" / "0.png")
    query.mkdir()
    Image.fromarray(np.asarray(Image.open(support / "bar1" / "0.png")), "L").save(query / "q.png")
    capsys.readouterr()
    main(["predict", "--checkpoint", str(run / "last.pt"), "--support", str(support), "--query",
          str(query), "--format", "json", "--device", "cpu", "--quiet"])
    assert json.loads(capsys.readouterr().out)[0]["label"] == "bar1"


def test_data_filled_options_and_dataset_options_are_checked(toys, tmp_path: Path, capsys):
    data = ["--dataset", "toy-bars", "--cache-dir", str(tmp_path), "--device", "cpu"]
    for extra, message in ((["--option", "n_way=4"], "option n_way of toy-protos is set from "
                            "--way (the classes of an episode): leave it out"),
                           (["--option", "temperature=0"], "option temperature must be > 0"),
                           (["--crop-boxes"], "--crop-boxes does not apply to --dataset "
                            "toy-bars (it takes --cache-dir)")):
        with pytest.raises(SystemExit):
            main(["train", *data, "--method", "toy-protos", "--steps", "1", *extra,
                  "--out", str(tmp_path / "x")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_registry_loads_its_entry_point_group(tmp_path: Path, monkeypatch):
    things = Registry("thing", "fewshot.things")
    (tmp_path / "toy_things.py").write_text(
        "from dataclasses import dataclass\n"
        f"from {__name__} import THINGS\n"
        "@dataclass\nclass Opt:\n    size: int = 1\n"
        "THINGS.register('plugged', Opt, 'kind', 'from a plugin')(lambda o: o.size)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "THINGS", things, raising=False)
    found = [metadata.EntryPoint("plugged", "toy_things", "fewshot.things")]
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group: found if group == "fewshot.things" else [])
    assert things.names() == ["plugged"]
    assert things.get("plugged").build(things.config("plugged", {"size": "3"})) == 3
    with pytest.raises(ValueError, match="unknown thing 'other': choose one of plugged"):
        things.get("other")
