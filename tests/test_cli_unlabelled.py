"""Semi-supervised episodes on the command line: train with refinement, eval with and without it on
the same fixed episodes, predict with a folder of unlabelled images, and the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from episodes import read_images
from fewshot.cli import main
from fewshot.engine.checkpoint import load_learner, recorded_pipeline
from fewshot.refine import soft_kmeans

from .conftest import data_args, support_query

EPISODES = ["--way", "2", "--shot", "1", "--query", "2"]


def train(tree: Path, refine: str = "masked") -> Path:
    run = tree / f"run-{refine}"
    main(["train", *data_args(tree), *EPISODES, "--steps", "2", "--val-episodes", "0",
          "--unlabelled-per-class", "2", "--distractor-classes", "1", "--option", f"refine={refine}",
          "--out", str(run), "--quiet"])
    return run / "last.pt"


def evaluate(tree: Path, ckpt: Path, *extra: str) -> dict:
    out = tree / "eval.json"
    main(["eval", *data_args(tree), "--checkpoint", str(ckpt), "--split", "train", *EPISODES,
          "--episodes", "4", "--unlabelled-per-class", "2", "--distractor-classes", "1", "--episodes-file",
          str(tree / "eps.pt"), "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_train_with_refinement_then_eval_on_the_same_episodes(tree: Path, capsys):
    ckpt = train(tree)
    record = json.loads((ckpt.parent / "run.json").read_text())
    assert record["spec"]["options"]["refine"] == "masked"
    plain = evaluate(tree, ckpt)
    refined = evaluate(tree, ckpt, "--refine", "masked", "--refine-steps", "2")
    assert plain["episodes"] == refined["episodes"] == 4
    assert "refined by masked" in capsys.readouterr().out
    saved = torch.load(tree / "eps.pt", weights_only=True)
    assert saved["unlabelled"].shape == (4, 6)  # (2 classes + 1 distractor) x 2
    # the checkpoint's learner scores the same accuracies as the library on those episodes
    from episodes import FixedEpisodes
    from episodes.registry import load_dataset
    from fewshot.engine.refined import evaluate_refined, refiner_for
    learner, _, _ = load_learner(ckpt, "cpu")
    ds = load_dataset("folder", "train", tree / "data", 16, ratios=(0.5, 0.25, 0.25),
                      channels=1, cache_dir=str(tree / "cache"))
    again = evaluate_refined(learner.eval().embed, refiner_for(learner, "masked", 2),
                             FixedEpisodes.load(tree / "eps.pt"), ds)
    assert again.accuracies.tolist() == pytest.approx(refined["accuracies"])


def test_predict_refines_the_prototypes_with_an_unlabelled_folder(tree: Path):
    ckpt = train(tree, "soft-kmeans")
    support, query, unlabelled = tree / "support", tree / "query", tree / "unl"
    for c in (0, 5):
        (support / f"class{c}").mkdir(parents=True)
        shutil.copy(tree / "data" / f"class{c}" / "0.png", support / f"class{c}")
        shutil.copytree(tree / "data" / f"class{c}", unlabelled / f"c{c}", ignore=lambda *_: ["0.png"])
    query.mkdir()
    shutil.copy(tree / "data" / "class0" / "5.png", query / "q0.png")
    shutil.copy(tree / "data" / "class5" / "5.png", query / "q5.png")
    base = ["predict", "--checkpoint", str(ckpt), "--support", str(support), "--query", str(query),
            "--format", "json", "--device", "cpu"]
    main([*base, "--output", str(tree / "plain.json")])
    main([*base, "--unlabelled", str(unlabelled), "--refine-steps", "2",
          "--output", str(tree / "refined.json")])
    got = json.loads((tree / "refined.json").read_text())
    assert got != json.loads((tree / "plain.json").read_text())
    # a second computation: the recorded pipeline, the backbone, two soft k-means steps
    learner, _, raw = load_learner(ckpt, "cpu")
    pipeline = recorded_pipeline(raw, ckpt)
    read = lambda files: read_images(sorted(files), pipeline)[0].float() / 255  # noqa: E731
    with torch.no_grad():
        s = learner.eval().embed(read([support / "class0" / "0.png", support / "class5" / "0.png"]))
        u = learner.embed(read(unlabelled.rglob("*.png")))
        q = learner.embed(read(query.glob("*.png")))
        protos = soft_kmeans(s.flatten(1)[None], torch.tensor([[0, 1]]), u.flatten(1)[None], 2, 2)
        probs = (-torch.cdist(q.flatten(1)[None], protos) ** 2).softmax(-1)[0]
    assert [r["probability"] for r in got] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)


def plain_checkpoint(tree: Path) -> Path:
    run = tree / "plain"
    main(["train", *data_args(tree), *EPISODES, "--steps", "1", "--val-episodes", "0",
          "--out", str(run), "--quiet"])
    return run / "last.pt"


def test_head_prototype_refines_as_the_protonet_checkpoint(tree: Path):
    ckpt = plain_checkpoint(tree)
    own = evaluate(tree, ckpt, "--refine", "distractor")
    head = evaluate(tree, ckpt, "--head", "prototype", "--refine", "distractor")
    assert own["accuracies"] == head["accuracies"]


@pytest.mark.parametrize("args, message", [
    (["--refine", "soft-kmeans"], "--refine needs unlabelled images"),
    (["--distractor-classes", "1"], "need --unlabelled-per-class"),
    (["--unlabelled-per-class", "2", "--refine", "masked"], "masked needs a checkpoint meta-trained"),
    (["--unlabelled-per-class", "2", "--refine", "soft-kmeans", "--head", "knn"],
     "give --head prototype"),
    (["--unlabelled-per-class", "9"], "lower --unlabelled-per-class"),
    (["--unlabelled-per-class", "1", "--distractor-classes", "7"], "lower --distractor-classes"),
])
def test_eval_errors(tree: Path, capsys, args, message):
    ckpt = plain_checkpoint(tree)
    with pytest.raises(SystemExit) as info:
        main(["eval", *data_args(tree), "--checkpoint", str(ckpt), *EPISODES,
              "--episodes", "2", *args])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--unlabelled-per-class", "2"], "--option refine=soft-kmeans"),
    (["--option", "refine=soft-kmeans"], "give --unlabelled-per-class M"),
])
def test_train_refuses_unlabelled_images_without_refinement_and_back(tree: Path, capsys, args,
                                                                      message):
    with pytest.raises(SystemExit):
        main(["train", *data_args(tree), *EPISODES, "--steps", "1", "--val-episodes", "0", *args,
              "--out", str(tree / "r"), "--quiet"])
    assert message in capsys.readouterr().err
    assert not (tree / "r" / "last.pt").exists()


@pytest.mark.parametrize("bad", ["missing", "file"])
def test_predict_unlabelled_must_be_a_folder(tree: Path, capsys, bad):
    support, query = support_query(tree)
    path = tree / "nothing"
    if bad == "file":
        path.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        main(["predict", "--checkpoint", str(tree / "no.pt"), "--support", str(support), "--query",
              str(query), "--unlabelled", str(path), "--output", str(tree / "out.tsv")])
    err = capsys.readouterr().err.strip()
    assert info.value.code not in (0, None) and len(err.splitlines()) == 1
    assert "--unlabelled" in err and not (tree / "out.tsv").exists()


@pytest.mark.slow
def test_embedded_dataset_train_and_eval_with_refinement(tmp_path: Path, capsys):
    """The embedded dataset end to end (generating it takes about 20 s on a CPU)."""
    d = ["--dataset", "embedded", "--device", "cpu", "--way", "5", "--shot", "1", "--query", "5"]
    main(["train", *d, "--steps", "2", "--val-episodes", "0", "--unlabelled-per-class", "3",
          "--distractor-classes", "2", "--label-ratio", "0.4", "--option", "refine=distractor",
          "--out", str(tmp_path / "run"), "--quiet"])
    e = ["eval", *d, "--checkpoint", str(tmp_path / "run" / "last.pt"), "--episodes", "20",
         "--unlabelled-per-class", "3", "--distractor-classes", "2", "--episodes-file",
         str(tmp_path / "eps.pt")]
    main([*e, "--json", str(tmp_path / "plain.json")])
    main([*e, "--refine", "distractor", "--json", str(tmp_path / "refined.json")])
    out = capsys.readouterr().out
    assert "embedded test: 5-way 1-shot" in out and "refined by distractor" in out
    plain, refined = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "refined"))
    assert len(plain["accuracies"]) == len(refined["accuracies"]) == 20


@pytest.mark.parametrize("refine", ["soft-kmeans", "distractor", "masked"])
def test_refined_training_resumes_exactly(tree: Path, refine: str, stopped_and_resumed):
    """Stopped after its first step and resumed, episodes with unlabelled images (the unlabelled
    stream, the distractor radius, the mask's MLP) end bit-identical to an uninterrupted run."""
    run = ["train", *data_args(tree), *EPISODES, "--steps", "4", "--val-episodes", "0",
           "--unlabelled-per-class", "2", "--distractor-classes", "1", "--label-ratio", "0.5",
           "--option", f"refine={refine}", "--checkpoint-every", "1", "--quiet"]
    full = stopped_and_resumed(run, tree, 4)
    if refine == "masked":
        assert any("mask" in k for k in full["model"]), sorted(full["model"])
