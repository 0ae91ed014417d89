"""Nothing a user owns is lost by a mistaken command, and nothing goes wrong silently: replayed
configurations never choose where to write, outputs never name inputs, an overwrite or a failed
start leaves the folder as it was, divergence stops the run with one line, the run lock holds."""

from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from fewshot.cli import main
from fewshot.engine.checkpoint import all_finite, non_finite_names
from fewshot.engine.runs import RunError, run_lock

from .conftest import data_args, make_tree, support_query

TRAIN = ["--way", "2", "--shot", "1", "--query", "2", "--steps", "2", "--val-episodes", "0",
         "--quiet"]


def fails(argv: list[str], capsys) -> str:
    """Run the CLI, expect a non-zero exit with one line on stderr, return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert info.value.code not in (0, None) and len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained ProtoNet run (``--overwrite`` recorded), trained once for the module."""
    tree = make_tree(tmp_path_factory.mktemp("lost"))
    main(["train", *data_args(tree), *TRAIN, "--val-episodes", "2", "--val-every", "1",
          "--val-query", "2",
          "--out", str(tree / "run"), "--overwrite"])
    return tree / "run"


def tree_of(run: Path) -> Path:
    return run.parent


# 1. replayed configurations
def test_replay_never_writes_where_the_file_says(run: Path, capsys, tmp_path: Path):
    before = snapshot(run)
    record = json.loads((run / "run.json").read_text())
    assert record["args"]["overwrite"] is True and record["args"]["out"] == str(run)
    line = fails(["train", "--config", str(run / "run.json"), "--steps", "3"], capsys)
    assert "give --out" in line
    received = tmp_path / "received.json"  # names the run's folder, with overwrite: true
    received.write_text(json.dumps(record))
    fails(["train", "--config", str(received), "--out", str(run)], capsys)  # overwrite not inherited
    assert snapshot(run) == before
    main(["train", "--config", str(received), "--out", str(tmp_path / "new")])
    assert (tmp_path / "new" / "last.pt").is_file() and snapshot(run) == before


def test_replayed_values_get_the_flags_checks(run: Path, capsys, tmp_path: Path):
    record = json.loads((run / "run.json").read_text())
    for key, value, flag in (("lr", -1.0, "--lr"), ("steps", -3, "--steps"),
                             ("optimizer", "adamw", "--optimizer")):
        bad = tmp_path / f"{key}.json"
        bad.write_text(json.dumps({**record, "args": {**record["args"], key: value}}))
        line = fails(["train", "--config", str(bad), "--out", str(tmp_path / "x")], capsys)
        assert f"--config {bad}: its {flag} {value!r}" in line, line
    assert not (tmp_path / "x").exists()


# 2. outputs that name inputs
def test_eval_outputs_never_name_inputs(run: Path, capsys):
    tree, ckpt = tree_of(run), run / "last.pt"
    before = ckpt.read_bytes()
    base = ["eval", *data_args(tree), "--checkpoint", str(ckpt), "--way", "2", "--query", "2",
            "--episodes", "2"]
    assert "is the --checkpoint file" in fails([*base, "--json", str(ckpt)], capsys)
    link = tree / "link.pt"
    link.unlink(missing_ok=True)
    link.symlink_to(ckpt)
    assert "is the --checkpoint file" in fails([*base, "--json", str(link)], capsys)
    assert "is the --checkpoint file" in fails([*base, "--episodes-file", str(ckpt)], capsys)
    main([*base, "--episodes-file", str(tree / "eps.pt")])
    episodes = (tree / "eps.pt").read_bytes()
    line = fails([*base, "--episodes-file", str(tree / "eps.pt"), "--json", str(tree / "eps.pt")],
                 capsys)
    assert "is the --episodes-file file" in line
    assert ckpt.read_bytes() == before and (tree / "eps.pt").read_bytes() == episodes


def test_an_episodes_file_that_is_a_checkpoint_is_named_so(run: Path, capsys):
    tree = tree_of(run)
    other = tree / "copy.pt"
    other.write_bytes((run / "last.pt").read_bytes())
    line = fails(["eval", *data_args(tree), "--checkpoint", str(run / "last.pt"), "--way", "2",
                  "--query", "2", "--episodes", "2", "--episodes-file", str(other)], capsys)
    assert "is a fewshot checkpoint, not an episodes file" in line and "delete" not in line


def test_predict_output_never_names_an_input(run: Path, capsys):
    tree = tree_of(run)
    support, query = support_query(tree)
    before = snapshot(tree / "query") | snapshot(tree / "support")
    base = ["predict", "--checkpoint", str(run / "last.pt"), "--support", str(support),
            "--query", str(query), "--device", "cpu", "--quiet"]
    for output, message in ((query / "q.png", "inside the --query folder"),
                            (support / "class0" / "0.png", "inside the --support folder"),
                            (query / "new.tsv", "inside the --query folder"),
                            (run / "last.pt", "is the --checkpoint file")):
        assert message in fails([*base, "--output", str(output)], capsys)
    assert snapshot(tree / "query") | snapshot(tree / "support") == before
    assert not (query / "new.tsv").exists()


# 3. demo
def test_demo_refuses_a_trained_run(run: Path, capsys):
    before = snapshot(run)
    line = fails(["demo", "--out", str(run), "--seconds", "1", "--episodes", "2",
                  "--device", "cpu"], capsys)
    assert "already holds a run" in line and "--overwrite" in line
    assert snapshot(run) == before


# 4. --overwrite checks everything first; a failed start leaves the folder as it was
@pytest.mark.parametrize("extra, message", [
    (["--lr", "nan"], "--lr: must be a finite number > 0, got nan"),
    (["--lr", "inf"], "--lr: must be a finite number > 0, got inf"),
    (["--option", "scale=nan"], "option scale must be a finite number"),
    (["--option", "scale=0"], "option scale must be > 0"),
    (["--freeze", "*"], "--freeze * leaves no parameter to train"),
    (["--way", "100000"], "way=100000 is larger than the 4 classes"),
    (["--query", "100000"], "--query"),
    (["--image-size", "100000"], "--image-size: must be >= 16 and <= 1024"),
])
def test_overwrite_deletes_nothing_before_every_value_is_checked(run: Path, capsys, extra, message):
    before = snapshot(run)
    line = fails(["train", *data_args(tree_of(run)), *TRAIN, "--out", str(run), "--overwrite",
                  *extra], capsys)
    assert message in line, line
    assert snapshot(run) == before


def test_a_failed_start_restores_the_overwritten_run(run: Path, capsys, monkeypatch):
    import fewshot.cli.recipe as recipe

    before = snapshot(run)

    def broken(*args, **kwargs):
        raise ValueError("the first step failed")

    monkeypatch.setattr(recipe, "train", broken)
    fails(["train", *data_args(tree_of(run)), *TRAIN, "--out", str(run), "--overwrite",
           "--lr", "0.01"], capsys)
    assert snapshot(run) == before
    new = tree_of(run) / "fresh"
    fails(["train", *data_args(tree_of(run)), *TRAIN, "--out", str(new)], capsys)
    assert not new.exists()  # no run.json left behind to block the corrected rerun
    monkeypatch.undo()
    main(["train", *data_args(tree_of(run)), *TRAIN, "--out", str(new)])
    assert (new / "last.pt").is_file()


# 5. divergence
def test_a_divergence_names_the_non_finite_weights():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert all_finite(net) and non_finite_names(net) == []
    with torch.no_grad():
        net[0].weight[0, 1] = float("nan")
    net[1].running_var[1] = float("inf")
    assert not all_finite(net)
    assert non_finite_names(net) == ["0.weight", "1.running_var"]
    assert non_finite_names(net, most=1) == ["0.weight"]


def test_divergence_stops_with_one_line_and_writes_nothing_non_finite(tmp_path: Path, capsys):
    tree = make_tree(tmp_path)
    out = tree / "div"
    line = fails(["train", *data_args(tree), *TRAIN, "--steps", "40", "--lr", "1e30",
                  "--checkpoint-every", "1000", "--out", str(out)], capsys)
    assert line.startswith("error: training diverged at step") and "--lr" in line
    assert not out.exists()  # failed before its first checkpoint: nothing left
    main(["train", *data_args(tree), *TRAIN, "--steps", "4", "--out", str(out)])  # good weights
    good = snapshot(out)
    line = fails(["train", *data_args(tree), *TRAIN, "--steps", "60", "--lr", "1e30",
                  "--out", str(out / "b"), "--checkpoint-every", "1"], capsys)
    assert "the last good checkpoint is" in line or "no checkpoint" in line
    assert snapshot(out).items() >= good.items()
    for ckpt in (out / "b").glob("*.pt"):
        state = torch.load(ckpt, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    for line in (out / "b" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_non_finite_weights_are_refused_by_eval_and_predict(run: Path, capsys):
    tree = tree_of(run)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))
    bad = tree / "nan.pt"
    torch.save(ckpt, bad)
    line = fails(["eval", *data_args(tree), "--checkpoint", str(bad), "--way", "2", "--query",
                  "2", "--episodes", "2"], capsys)
    assert "holds non-finite weights" in line
    support, query = support_query(tree)
    assert "holds non-finite weights" in fails(["predict", "--checkpoint", str(bad), "--support",
                                                str(support), "--query", str(query)], capsys)
    assert "non-finite weights" in fails(["train", *data_args(tree), *TRAIN, "--init", str(bad),
                                          "--out", str(tree / "init")], capsys)


def test_an_exploding_loss_is_warned_about(tmp_path: Path, capsys, monkeypatch):
    train_module = importlib.import_module("fewshot.engine.train")  # the package exports train()
    tree = make_tree(tmp_path)
    losses = iter([1.0, 2.0, 500.0, 3.0])
    real = train_module.accumulate

    def scaled(*args, **kwargs):  # the real step, its reported loss replaced
        out = real(*args, **kwargs)
        return torch.stack([torch.tensor(next(losses)), out[1]])

    monkeypatch.setattr(train_module, "accumulate", scaled)
    with pytest.warns(UserWarning, match=r"the loss reached 500 at step 3, from 1: the learning "
                                         r"rate \(--lr 0.001\) may be too high"):
        main(["train", *data_args(tree), *TRAIN, "--steps", "4", "--log-every", "1",
              "--out", str(tree / "w")])


# 6. the run lock
def test_the_lock_is_never_held_twice(tmp_path: Path):
    folder, holders, overlaps = tmp_path / "locked", [], []

    def contend() -> None:
        for _ in range(30):
            try:
                with run_lock(folder):
                    holders.append(1)
                    if len(holders) > 1:
                        overlaps.append(len(holders))
                    time.sleep(0.0005)
                    holders.pop()
            except RunError:
                pass

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


def test_a_stale_lock_does_not_block(tmp_path: Path, capsys):
    import os

    tree = make_tree(tmp_path)
    (tree / "r").mkdir()
    (tree / "r" / ".lock").write_text(str(os.getppid()))  # a live process, now another program
    (tree / "e").mkdir()
    (tree / "e" / ".lock").write_text("")  # an empty lock file
    for out in ("r", "e"):
        main(["train", *data_args(tree), *TRAIN, "--out", str(tree / out)])
        assert (tree / out / "last.pt").is_file() and not (tree / out / ".lock").exists()
    with run_lock(tree / "r"):
        line = fails(["train", *data_args(tree), *TRAIN, "--out", str(tree / "r"), "--resume",
                      "--steps", "3"], capsys)
        assert f"in use by another training (process {os.getpid()})" in line


# 7. resuming a folder without run.json
def test_resume_without_run_json_checks_the_checkpoint(tmp_path: Path, capsys):
    tree = make_tree(tmp_path)
    out = tree / "r"
    main(["train", *data_args(tree), *TRAIN, "--out", str(out)])
    (out / "run.json").unlink()
    line = fails(["train", *data_args(tree), *TRAIN, "--out", str(out), "--resume", "--steps",
                  "3", "--way", "3", "--shot", "2", "--lr", "0.01"], capsys)
    assert "configuration changed" in line and "--way: 2 -> 3" in line and "--lr" in line
    main(["train", *data_args(tree), *TRAIN, "--out", str(out), "--resume", "--steps", "3"])
    assert json.loads((out / "run.json").read_text())["args"]["steps"] == 3


# 8. a class in two splits
def test_a_class_in_two_split_files_is_refused(tmp_path: Path, capsys):
    tree = make_tree(tmp_path)
    splits = tree / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("class0\nclass1\nclass2\nclass3\n")
    (splits / "val.txt").write_text("class4\nclass5\n")
    (splits / "test.txt").write_text("class6\nclass7\nclass1\n")
    args = ["--dataset", "folder", "--root", str(tree / "data"), "--split-dir", str(splits),
            "--channels", "1", "--image-size", "16", "--cache-dir", str(tree / "cache"),
            "--device", "cpu"]
    line = fails(["train", *args, *TRAIN, "--out", str(tree / "r")], capsys)
    assert "share 1 class(es), e.g. ['class1']" in line
    line = fails(["eval", *args, "--checkpoint", str(tree / "none.pt")], capsys)
    assert "share 1 class(es)" in line or "does not exist" in line


# 9. budgets that cannot be met
def test_an_unmeetable_memory_budget_is_warned_about(tmp_path: Path):
    tree = make_tree(tmp_path)
    with pytest.warns(UserWarning, match="memory budget .* is less than one item's"):
        main(["train", *data_args(tree), *TRAIN, "--max-memory", "1", "--episodes-per-step", "2",
              "--out", str(tree / "m")])


# 10. tracebacks become one line
def test_unwritable_places_are_named_before_any_work(run: Path, capsys, monkeypatch):
    import os

    import fewshot.cli.evaluate as evaluate

    tree = tree_of(run)
    locked = tree / "readonly"
    locked.mkdir(exist_ok=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    monkeypatch.setattr(evaluate, "eval_model", lambda *a: pytest.fail("scored before checking"))
    base = ["eval", *data_args(tree), "--checkpoint", str(run / "last.pt")]
    assert "is not writable" in fails([*base, "--json", str(locked / "s.json")], capsys)
    assert "is not writable" in fails(["train", *data_args(tree), *TRAIN, "--out",
                                       str(locked / "run")], capsys)


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path: Path, capsys, monkeypatch):
    import episodes.io as io

    tree = make_tree(tmp_path)
    out = tree / "full"
    main(["train", *data_args(tree), *TRAIN, "--out", str(out)])
    before = snapshot(out)
    real = torch.save

    def full(obj, f):  # torch's zip writer on a full disk
        real(obj, f)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 13568 vs "
                           "13464")

    monkeypatch.setattr(io.torch, "save", full)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    line = fails(["train", *data_args(tree), *TRAIN, "--out", str(out), "--resume", "--steps",
                  "4"], capsys)
    assert "last.pt: no space left on device: free space there or write elsewhere" in line
    assert snapshot(out)["last.pt"] == before["last.pt"]
    assert not list(out.glob("*.tmp"))


def test_a_cache_variable_naming_a_file_is_one_line(tmp_path: Path, capsys, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "f"))
    line = fails(["train", *TRAIN, "--device", "cpu", "--out", str(tmp_path / "r")], capsys)
    assert "FEWSHOT_CACHE=" in line and "is a file, not a folder" in line


# 11. errors that point to the right fix
def test_errors_name_the_flag_and_the_right_fix(run: Path, capsys, tmp_path: Path):
    tree = tree_of(run)
    line = fails(["pretrain", *data_args(tree), "--method", "simclr", "--batch-size", "1",
                  "--steps", "1", "--val-episodes", "0", "--out", str(tmp_path / "s")], capsys)
    assert "--batch-size 1" in line and "2 or more" in line
    main(["train", *data_args(tree), *TRAIN, "--method", "maml", "--out", str(tmp_path / "m")])
    support, query = support_query(tree)
    (support / "class2").mkdir(exist_ok=True)
    (support / "class2" / "0.png").write_bytes((tree / "data/class2/0.png").read_bytes())
    line = fails(["predict", "--checkpoint", str(tmp_path / "m" / "last.pt"), "--support",
                  str(support), "--query", str(query)], capsys)
    assert "has 3 class folders: give 2 class folders" in line and "build it" not in line
