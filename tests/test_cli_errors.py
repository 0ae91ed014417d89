"""Every bad input the CLI is given ends with a non-zero exit status and one line on stderr that
names the input and the fix: no traceback, nothing half-written. One row per input."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fewshot.cli import main
from fewshot.engine.runs import run_lock

from .conftest import data_args, make_tree, support_query

TRAIN = ["--way", "2", "--shot", "1", "--query", "2", "--steps", "2", "--val-episodes", "0",
         "--quiet"]


def trained(tree: Path) -> Path:
    """A run folder with a tiny trained ProtoNet (trained once per test tree)."""
    run = tree / "run"
    if not (run / "last.pt").is_file():
        main(["train", *data_args(tree), *TRAIN, "--out", str(run)])
    return run


def corrupt_query(tree: Path) -> str:
    support, query = support_query(tree)
    bad = tree / "badquery"
    bad.mkdir(exist_ok=True)
    (bad / "q.png").write_bytes((query / "q.png").read_bytes())
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    return str(bad)


def args_eval(tree: Path, *extra: str) -> list[str]:
    return ["eval", *data_args(tree), "--checkpoint", str(trained(tree) / "last.pt"), "--way", "2",
            "--query", "2", "--episodes", "3", *extra]


def existing_file(tree: Path, name: str = "afile") -> str:
    (tree / name).write_text("x")
    return str(tree / name)


def truncated_episodes(tree: Path) -> str:
    (tree / "eps.pt").unlink(missing_ok=True)
    main(args_eval(tree, "--episodes-file", str(tree / "eps.pt")))
    data = (tree / "eps.pt").read_bytes()
    (tree / "eps.pt").write_bytes(data[: len(data) // 2])
    return str(tree / "eps.pt")


def episodes_file(tree: Path) -> str:
    if not (tree / "e2.pt").is_file():
        main(args_eval(tree, "--episodes-file", str(tree / "e2.pt")))
    return str(tree / "e2.pt")


HELD = contextlib.ExitStack()  # locks held for the rest of the module's tests


def live_lock(tree: Path) -> str:
    """A run folder whose lock another holder (an open file of this process) keeps."""
    run = tree / "locked"
    if not (run / ".lock").exists():
        HELD.enter_context(run_lock(run))
    return str(run)


Row = tuple[str, Callable[[Path], list[str]], str]
ROWS: list[Row] = [
    ("checkpoint-every 0", lambda t: ["train", *data_args(t), *TRAIN, "--checkpoint-every", "0"],
     r"--checkpoint-every: must be >= 1, got 0"),
    ("unknown augment option", lambda t: ["train", *data_args(t), *TRAIN, "--augment", "standard",
                                          "--augment-option", "spin=3"],
     r"unknown augmentation option\(s\) spin: .*rotate"),
    ("bad augment value", lambda t: ["train", *data_args(t), *TRAIN, "--augment", "standard",
                                     "--augment-option", "fill=x"],
     r"option fill must be one of constant, edge"),
    ("negative hidden", lambda t: ["train", *data_args(t), *TRAIN, "--method", "relation",
                                   "--option", "hidden=-4"], r"option hidden must be >= 1, got -4"),
    ("image size 3", lambda t: ["train", *data_args(t), *TRAIN, "--image-size", "3"],
     r"--image-size: must be >= 16 and <= 1024, got 3"),
    ("image size 0", lambda t: ["train", *data_args(t), *TRAIN, "--image-size", "0"],
     r"--image-size: must be >= 16 and <= 1024, got 0"),
    ("device gpu7", lambda t: ["train", *TRAIN, "--device", "gpu7"], r"'gpu7' is not a device"),
    ("unknown normalisation", lambda t: ["train", *TRAIN, "--normalize", "imagenett"],
     r"--normalize: normalisation 'imagenett': choose one of auto, none, imagenet, inception, "
     r"MEAN/STD"),
    ("normalisation not numbers", lambda t: ["train", *TRAIN, "--normalize", "0.5/x"],
     r"normalisation '0.5/x': the std must be numbers separated by commas"),
    ("normalisation std 0", lambda t: ["pretrain", *TRAIN, "--normalize", "0.5/0"],
     r"every std must be positive, got \[0.0\]"),
    ("normalisation of 2 channels", lambda t: ["train", *data_args(t), *TRAIN, "--normalize",
                                               "0.5,0.5/1,1"],
     r"backbone conv4 with 1-channel images: mean and std need 1 value each .* got 2 and 2"),
    ("normalisation lengths differ", lambda t: ["train", *TRAIN, "--normalize", "0.5,0.5/1"],
     r"normalisation '0.5,0.5/1': 2 means but 1 stds: give one of each per channel"),
    ("normalisation of a checkpoint", lambda t: args_eval(t, "--normalize", "imagenet"),
     r"--backbone/--weights/--normalize are for scoring a weights file without --checkpoint"),
    ("weights with another normalisation", lambda t: [
        "eval", *data_args(t), "--backbone", "conv4", "--weights", str(trained(t) / "last.pt"),
        "--head", "prototype", "--normalize", "imagenet"],
     r"--weights .*last.pt was trained with --normalize none, and here it would get "
     r"--normalize 0.449/0.226: leave --normalize out"),
    ("init with another normalisation", lambda t: ["train", *data_args(t), *TRAIN, "--init",
                                                   str(trained(t) / "last.pt"), "--normalize",
                                                   "imagenet", "--out", str(t / "n")],
     r"--init .*last.pt was trained with --normalize none, and here it would get "
     r"--normalize 0.449/0.226: give --normalize none"),
    ("query 0", lambda t: ["train", *data_args(t), *TRAIN, "--query", "0"],
     r"--query: must be >= 1, got 0"),
    ("steps 0", lambda t: ["train", *data_args(t), *TRAIN, "--steps", "0"],
     r"--steps: must be >= 1, got 0"),
    ("time limit -1", lambda t: ["train", *data_args(t), *TRAIN, "--time-limit", "-1"],
     r"--time-limit: must be > 0, got -1"),
    ("demo seconds -1", lambda t: ["demo", "--seconds", "-1"], r"--seconds: must be > 0, got -1"),
    ("unknown method option", lambda t: ["train", *data_args(t), *TRAIN, "--option", "foo=1"],
     r"unknown protonet option\(s\) foo: the options of protonet are: distance"),
    ("option value not a number", lambda t: ["train", *data_args(t), *TRAIN, "--method", "maml",
                                             "--option", "inner_lr=fast"],
     r"option inner_lr must be a number, got 'fast'"),
    ("negative inner steps", lambda t: ["train", *data_args(t), *TRAIN, "--method", "maml",
                                        "--option", "inner_steps=-1"],
     r"option inner_steps must be >= 0"),
    ("option without =", lambda t: ["train", *TRAIN, "--option", "fce"],
     r"--option: takes KEY=VALUE, got 'fce'"),
    ("way larger than split", lambda t: ["train", *data_args(t), *TRAIN, "--way", "9"],
     r"way=9 is larger than the 4 classes.*--way"),
    ("val query too large", lambda t: ["train", *data_args(t), *TRAIN, "--val-episodes", "3",
                                       "--val-query", "9"],
     r"validation episodes: .*shot\+query=10.*--val-shot/--val-query"),
    ("out is a file", lambda t: ["train", *data_args(t), *TRAIN, "--out", existing_file(t)],
     r"--out .*afile is a file"),
    ("cache dir is a file", lambda t: ["train", *data_args(t)[:-4], "--cache-dir",
                                       existing_file(t), "--device", "cpu", *TRAIN],
     r"--cache-dir .*afile is a file, not a folder"),
    ("resume without last.pt", lambda t: ["train", *data_args(t), *TRAIN, "--out",
                                          str(t / "new"), "--resume"],
     r"cannot resume: .*last.pt does not exist.*leave out --resume"),
    ("train into an existing run", lambda t: ["train", *data_args(t), *TRAIN, "--out",
                                              str(trained(t))],
     r"already holds a run .*--resume.*--overwrite"),
    ("resume with another config", lambda t: ["train", *data_args(t), *TRAIN, "--out",
                                              str(trained(t)), "--resume", "--shot", "2"],
     r"configuration changed \(--shot: 1 -> 2\)"),
    ("resume with another model", lambda t: ["train", *data_args(t), *TRAIN, "--out",
                                             str(trained(t)), "--resume", "--backbone", "resnet12"],
     r"configuration changed \(--backbone: 'conv4' -> 'resnet12'"),
    ("folder in use", lambda t: ["train", *data_args(t), *TRAIN, "--out", live_lock(t)],
     r"in use by another training"),
    ("replay a missing run.json", lambda t: ["train", "--config", str(t / "nope.json"), "--out",
                                            str(t / "replayed")],
     r"run configuration .*nope.json does not exist"),
    ("json is a folder", lambda t: args_eval(t, "--output", str(t)), r"--output .* is a folder"),
    ("episodes file is a folder", lambda t: args_eval(t, "--episodes-file", str(t)),
     r"--episodes-file .* is a folder"),
    ("truncated episodes file", lambda t: args_eval(t, "--episodes-file", truncated_episodes(t)),
     r"--episodes-file .*eps.pt is not a readable episodes file.*delete it"),
    ("episodes file of another shape", lambda t: [*args_eval(t, "--episodes-file",
                                                             episodes_file(t)), "--way", "3"],
     r"--way 3 and --episodes-file .*e2.pt \(which holds 2\) disagree: leave --way out"),
    ("channels of another model", lambda t: [a if a != "1" else "3" for a in args_eval(t)],
     r"trained on images read differently .*channels: trained 1, dataset 3"),
    ("missing dataset folder", lambda t: ["eval", "--dataset", "folder", "--root", str(t / "no"),
                                          "--split-ratios", "1", "1", "1", "--checkpoint",
                                          str(trained(t) / "last.pt")], r"no does not exist"),
    ("dataset without root", lambda t: ["eval", "--dataset", "folder", "--checkpoint", "x.pt"],
     r"the folder dataset needs its folder: give --root"),
    ("missing checkpoint", lambda t: ["eval", *data_args(t), "--checkpoint", str(t / "no.pt")],
     r"checkpoint .*no.pt does not exist"),
    ("junk checkpoint", lambda t: ["eval", *data_args(t), "--checkpoint", existing_file(t)],
     r"afile is not a readable checkpoint: it is not a PyTorch file"),
    ("predict support missing", lambda t: ["predict", "--checkpoint", str(trained(t) / "last.pt"),
                                           "--support", str(t / "nosupport"), "--query", str(t)],
     r"--support folder .*nosupport does not exist: check the path"),
    ("predict output is a folder", lambda t: ["predict", "--checkpoint",
                                              str(trained(t) / "last.pt"), "--support",
                                              str(support_query(t)[0]), "--query",
                                              str(support_query(t)[1]), "--output", str(t)],
     r"--output .* is a folder: give a file name"),
    ("predict an unreadable query", lambda t: ["predict", "--checkpoint",
                                               str(trained(t) / "last.pt"), "--support",
                                               str(support_query(t)[0]), "--query",
                                               corrupt_query(t)],
     r"broken.png: cannot decode this image .*--skip-bad-images"),
]


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny dataset and trained run for every row (rows only read it or add files)."""
    tree = make_tree(tmp_path_factory.mktemp("cli-errors"))
    trained(tree)
    return tree


@pytest.mark.parametrize("name, argv, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(shared_tree: Path, capsys, name: str, argv: Callable,
                               message: str):
    tree = shared_tree
    args = argv(tree)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
    assert info.value.code not in (0, None), err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not list(tree.rglob("*.tmp")), "a temporary file was left behind"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--device", "cuda"])
    assert "no CUDA GPU is available here: use --device cpu or auto" in capsys.readouterr().err


def test_the_command_itself_prints_no_traceback(tree: Path):
    proc = subprocess.run([sys.executable, "-m", "fewshot.cli", "eval", "--checkpoint",
                           existing_file(tree), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_run_json_replay_and_resume(tree: Path, capsys):
    run = trained(tree)
    record = json.loads((run / "run.json").read_text())
    assert record["args"]["way"] == 2 and record["spec"]["options"] == {
        "distance": "euclidean", "hidden": None, "scale": None, "learn_scale": False,
        "rotation_weight": 0.0, "step_norm": False, "refine": "none", "refine_steps": 1,
        "distractor_radius": 100.0, "learn_radius": True}
    assert record["fewshot_version"] and record["torch_version"] == torch.__version__
    metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in m for m in metrics)
    main(["train", "--config", str(run / "run.json"), "--out", str(tree / "replay")])
    replay = json.loads((tree / "replay" / "run.json").read_text())
    assert {k: v for k, v in replay["args"].items() if k != "out"} == {
        k: v for k, v in record["args"].items() if k != "out"}
    a = torch.load(run / "last.pt", weights_only=True)["model"]
    b = torch.load(tree / "replay" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run, replayed
    main(["train", "--config", str(run / "run.json"), "--out", str(run), "--resume", "--steps",
          "3"])
    assert "trained 3 steps" in capsys.readouterr().out
    main(["train", *data_args(tree), *TRAIN, "--out", str(run), "--overwrite"])
    assert not (run / "best.pt").exists() and (run / "last.pt").is_file()


def test_predict_skips_bad_images_when_asked(shared_tree: Path, capsys):
    tree = shared_tree
    main(["predict", "--checkpoint", str(trained(tree) / "last.pt"), "--support",
          str(support_query(tree)[0]), "--query", corrupt_query(tree), "--skip-bad-images",
          "--format", "json", "--device", "cpu"])
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in rows] == ["q.png"] and rows[0]["label"] in (
        "class0", "class1")


def test_decompression_bomb_through_the_cli(tmp_path: Path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 50x50 is over twice the limit
    tree = make_tree(tmp_path)
    Image.new("L", (50, 50)).save(tree / "data" / "class0" / "bomb.png")
    with pytest.raises(SystemExit) as info:
        main(["train", *data_args(tree), *TRAIN, "--out", str(tree / "r")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"bomb\.png.*decompression.bomb.*--skip-bad-images", err), err
    with pytest.warns(UserWarning, match=r"skipped .*bomb\.png"):
        main(["train", *data_args(tree), *TRAIN, "--out", str(tree / "r"), "--skip-bad-images"])
    assert "trained 2 steps" in capsys.readouterr().out


def test_offline_download_through_the_cli(tmp_path: Path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "omniglot", "--root", str(tmp_path / "omni"), "--download",
              *TRAIN, "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "could not download Omniglot" in err
    assert not (tmp_path / "omni").exists() and not (tmp_path / "run").exists()


def test_resume_compares_options_after_conversion(tmp_path: Path, capsys):
    tree = make_tree(tmp_path)
    maml = ["--method", "maml", "--option", "hidden=4", "--option", "inner_lr=0.4"]
    main(["train", *data_args(tree), *TRAIN, *maml, "--option", "first_order=true",
          "--out", str(tree / "m")])
    main(["train", *data_args(tree), *TRAIN, *maml, "--option", "first_order=True",
          "--out", str(tree / "m"), "--resume", "--steps", "3"])
    assert "trained 3 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", *data_args(tree), *TRAIN, *maml, "--option", "first_order=false",
              "--out", str(tree / "m"), "--resume", "--steps", "4"])
    assert "configuration changed (--option first_order: True -> False)" in capsys.readouterr().err
