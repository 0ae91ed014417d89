"""Training curves and progress: heartbeat lines off a terminal, metrics.csv and TensorBoard
files beside metrics.jsonl (once per record, also after a resume), --log-every, fewshot plot."""

from __future__ import annotations

import csv
import importlib
import json
import sys
import time
from pathlib import Path

import pytest
import torch

import episodes.progress as progress
from episodes import EpisodeSampler, FixedEpisodes
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.cli import main
from fewshot.engine.logs import CSV_FILE, FIRST_COLUMNS, METRICS_FILE, TENSORBOARD_DIR, csv_columns

from .conftest import data_args, make_tree
from .test_nothing_lost import fails

train_module = importlib.import_module("fewshot.engine.train")  # the package exports train()
QUICK = ["--way", "2", "--shot", "1", "--query", "2", "--val-episodes", "2", "--val-query", "2",
         "--quiet"]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(monkeypatch):
    """Progress on, off a terminal, on a fake clock, without the heartbeat thread (tested on the
    real clock alone); collects ``(time, line)`` of every line."""
    clock, said = FakeClock(), []
    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr(progress, "clock", clock)
    monkeypatch.setattr(progress, "_last_said", clock.now)  # nothing said yet
    monkeypatch.setattr(progress.Heartbeat, "_beat", lambda self: None)  # lines at updates only
    monkeypatch.setattr(progress, "interactive", lambda: False)
    for module in (progress, importlib.import_module("fewshot.engine.logs")):
        monkeypatch.setattr(module, "say", lambda text: said.append((clock.now, text)))
    return clock, said


def jsonl(folder: Path) -> list[dict]:
    return [json.loads(ln) for ln in (folder / METRICS_FILE).read_text().splitlines()]


def csv_rows(folder: Path) -> tuple[list[str], list[dict]]:
    with open(folder / CSV_FILE, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def same_rows(records: list[dict], rows: list[dict]) -> bool:
    """The CSV rows hold exactly the records' values (floats as written, empty where absent)."""
    return len(records) == len(rows) and all(
        all((float(row[k]) == r[k]) if k in r else row[k] == "" for k in row)
        for r, row in zip(records, rows, strict=True))


def learn(ds, steps, folder=None, resume=False, val=None, log_every=3, progress_on=False,
          tensorboard=False, checkpoint_every=4):
    torch.manual_seed(0)
    spec = ModelSpec("protonet", "conv4", 1, 16)
    learner = build_learner(spec)
    sampler = EpisodeSampler(ds, 4, 1, 2, episodes_per_batch=2, seed=0)
    cfg = TrainConfig(steps=steps, lr=1e-3, checkpoint_dir=folder, checkpoint_every=checkpoint_every,
                      resume=resume, progress=progress_on, val_every=5, log_every=log_every,
                      tensorboard=tensorboard, precision="fp32")
    return train(learner, spec, sampler, cfg, val=val)


# heartbeat
def test_a_slow_training_off_a_terminal_says_something_at_least_every_10_s(
        tiny_dataset, lines, monkeypatch):
    clock, said = lines
    real = train_module.accumulate

    def slow(*args, **kwargs):  # every step takes 2 s
        clock.now += 2.0
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "accumulate", slow)
    ds = tiny_dataset(size=16)
    start = clock.now
    result = learn(ds, 10, log_every=1000, progress_on=True,
          val=(ds, FixedEpisodes.generate(ds, 4, 1, 2, 2, seed=5)))
    beats = [(t, text) for t, text in said if text.startswith("training:")]
    times = [start] + [t for t, _ in beats]
    assert len(beats) >= 2 and max(b - a for a, b in zip(times, times[1:], strict=False)) <= 10.0
    assert "/10 (" in beats[-1][1] and "s/step" in beats[-1][1] and "left" in beats[0][1]
    vals = [text for _, text in said if text.startswith("step ")]  # validation results as lines
    assert [v.split()[1] for v in vals] == ["5/10", "10/10"]
    assert "val_acc" in beats[-1][1]  # the latest values
    assert [r["step"] for r in result.history if "loss" in r] == [10]  # the last step, always


def test_the_heartbeat_thread_speaks_while_one_item_takes_long(monkeypatch):
    said = []
    monkeypatch.setattr(progress, "say", said.append)
    monkeypatch.setattr(progress, "_last_said", progress.clock())
    beat = progress.Heartbeat(total=3, desc="decoding images", unit="image", every=0.05)
    time.sleep(0.5)  # no update at all: the thread says it is still running
    beat.close()
    assert len(said) >= 2 and all(s.startswith("decoding images: 0/3 (0%)") for s in said)
    assert "the current one running for" in said[-1]


def test_off_a_terminal_bar_is_a_heartbeat_and_quiet_silences_it(lines, monkeypatch):
    clock, said = lines
    items = []
    for i in progress.bar(range(6), desc="decoding images", unit="image"):
        clock.now += 4.0  # each item takes 4 s: a line every third item
        items.append(i)
    assert items == list(range(6)) and len(said) == 2
    assert said[0][1].startswith("decoding images: 3/6 (50%), 4 s/image, 12 s left, 12 s in")
    monkeypatch.setattr(progress, "_enabled", False)
    assert not isinstance(progress.bar(range(3)), progress.Heartbeat)


def test_jobs_in_a_row_are_never_silent_for_more_than_10_s_together(lines):
    clock, said = lines
    for split in ("train", "val"):  # two splits decoded one after the other, 7.5 s each
        for _ in progress.bar(range(3), desc=f"decoding {split} images", unit="image"):
            clock.now += 2.5
    assert [(t - 1000, text.split(":")[0]) for t, text in said] == [(10, "decoding val images")]
    clock.now += 60  # after a minute of silence, a job of 4.5 s says nothing, one of 6 s once
    for seconds in (1.5, 2.0):
        for _ in progress.bar(range(3), desc="decoding images", unit="image"):
            clock.now += seconds
    assert [round(t - clock.now, 1) for t, _ in said[1:]] == [-0.0]


def test_eval_off_a_terminal_says_how_far_it_is(tiny_dataset, lines, monkeypatch):
    clock, said = lines
    ds = tiny_dataset(size=16)
    learner = build_learner(ModelSpec("protonet", "conv4", 1, 16))
    real = learner.head

    def slow(*args, **kwargs):  # scoring 2 episodes takes 11 s
        clock.now += 11.0
        return real(*args, **kwargs)

    monkeypatch.setattr(learner, "head", slow)
    episodes = FixedEpisodes.generate(ds, 4, 1, 2, 6, seed=1)
    quiet = evaluate(learner, episodes, ds, batch_size=2).accuracies
    assert not said
    monkeypatch.setattr(progress, "_last_said", clock.now)  # as if a line was just printed
    loud = evaluate(learner, episodes, ds, batch_size=2, progress=True).accuracies
    assert torch.equal(quiet, loud)
    assert [text.split(", ")[0].split(": ")[-1] for _, text in said] == ["2/6 (33%)", "4/6 (67%)",
                                                                         "6/6 (100%)"]
    assert said[0][1].startswith("eval")


# metrics.csv, TensorBoard, --log-every
def test_csv_holds_the_records_and_run_json_the_log_every(tmp_path: Path):
    tree = make_tree(tmp_path)
    out = tree / "run"
    main(["train", *data_args(tree), *QUICK, "--steps", "7", "--log-every", "3",
          "--val-every", "5", "--out", str(out)])
    records = jsonl(out)
    header, rows = csv_rows(out)
    assert header[:len(FIRST_COLUMNS)] == list(FIRST_COLUMNS) and header == csv_columns(records)
    assert [r["step"] for r in records if "loss" in r] == [3, 6, 7]  # and the last step
    assert [r["step"] for r in records if "val_acc" in r] == [5, 7]
    assert same_rows(records, rows)
    assert json.loads((out / "run.json").read_text())["args"]["log_every"] == 3


def test_log_every_is_checked_when_parsed(tmp_path: Path, capsys):
    tree = make_tree(tmp_path)
    line = fails(["train", *data_args(tree), *QUICK, "--log-every", "0", "--out",
                  str(tree / "x")], capsys)
    assert "--log-every" in line and ">= 1" in line and not (tree / "x").exists()


def test_a_resumed_run_records_each_step_once_as_an_uninterrupted_one(tiny_dataset, tmp_path,
                                                                      monkeypatch):
    ds = tiny_dataset(size=16)
    val = (ds, FixedEpisodes.generate(ds, 4, 1, 2, 2, seed=5))
    full = learn(ds, 7, tmp_path / "full", val=val, log_every=2, checkpoint_every=3)
    real, calls = train_module.accumulate, []

    def killed_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "accumulate", killed_at_step_5)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # last.pt at step 3 (step 3 not yet recorded), the
        learn(ds, 7, part, val=val, log_every=2, checkpoint_every=3)  # record of step 4 after it
    assert [r["step"] for r in jsonl(part)][-1] == 4 and csv_rows(part)[1][-1]["step"] == "4"
    monkeypatch.setattr(train_module, "accumulate", real)
    resumed = learn(ds, 7, part, resume=True, val=val, log_every=2, checkpoint_every=3)

    def values(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert values(resumed.history) == values(full.history)
    assert [r["step"] for r in full.history if "loss" in r] == [2, 4, 6, 7]
    assert jsonl(part) == resumed.history
    assert same_rows(resumed.history, csv_rows(part)[1])


def test_tensorboard_files_hold_each_record_once(tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ds = tiny_dataset(size=16)
    val = (ds, FixedEpisodes.generate(ds, 4, 1, 2, 2, seed=5))
    learn(ds, 5, tmp_path / "run", val=val, tensorboard=True)
    result = learn(ds, 7, tmp_path / "run", val=val, tensorboard=True, resume=True)
    board = tmp_path / "run" / TENSORBOARD_DIR
    assert list(board.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(board))
    events.Reload()
    for key in ("loss", "acc", "val_acc"):
        steps = [e.step for e in events.Scalars(key)]
        assert steps == [r["step"] for r in result.history if key in r], key


def test_tensorboard_without_the_package_is_one_line(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("fewshot.engine.logs.tensorboard_available", lambda: False)
    tree = make_tree(tmp_path)
    line = fails(["train", *data_args(tree), *QUICK, "--tensorboard", "--out",
                  str(tree / "x")], capsys)
    assert "pip install 'fewshot[tensorboard]'" in line and not (tree / "x").exists()


# fewshot plot
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    tree = make_tree(tmp_path_factory.mktemp("plot"))
    for name, steps in (("a", "4"), ("b", "2")):
        main(["train", *data_args(tree), *QUICK, "--steps", steps, "--log-every", "2",
              "--val-every", "2", "--out", str(tree / name)])
    return tree


def test_plot_draws_runs_into_a_png(two_runs: Path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = two_runs / "figs" / "curves.png"
    main(["plot", str(two_runs / "a"), str(two_runs / "b" / METRICS_FILE), "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.format == "PNG" and round(img.info["dpi"][0]) >= 150 and img.width > 1000
    main(["plot", str(two_runs / "a"), "--out", str(two_runs / "a" / "curves.svg")])
    assert (two_runs / "a" / "curves.svg").read_text().lstrip().startswith("<?xml")


def test_plot_refuses_an_output_that_is_an_input(two_runs: Path, capsys):
    pytest.importorskip("matplotlib")
    run = two_runs / "a"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    link = two_runs / "alias.png"
    link.symlink_to(run / "metrics.csv")
    assert "metrics.csv" in fails(["plot", str(run), "--out", str(link)], capsys)
    assert "give an image file name ending in .png" in fails(
        ["plot", str(run), "--out", str(run / METRICS_FILE)], capsys)
    assert "has no metrics.jsonl" in fails(["plot", str(two_runs / "nope"), "--out",
                                            str(two_runs / "n.png")], capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (two_runs / "n.png").exists()


def test_plot_without_matplotlib_is_one_line(two_runs: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = fails(["plot", str(two_runs / "a"), "--out", str(two_runs / "m.png")], capsys)
    assert "pip install 'fewshot[plot]'" in line and not (two_runs / "m.png").exists()


def test_plot_reads_a_running_trainings_file_and_refuses_a_broken_one(two_runs: Path, capsys):
    pytest.importorskip("matplotlib")
    run = two_runs / "live"
    run.mkdir()
    text = (two_runs / "a" / METRICS_FILE).read_text()
    (run / METRICS_FILE).write_text(text + '{"step": 8, "lo')  # a line being written
    main(["plot", str(run), "--out", str(two_runs / "live.png")])
    (run / METRICS_FILE).write_text(text + '{"step": 8, "loss": NaN}\n')
    assert "line" in fails(["plot", str(run), "--out", str(two_runs / "bad.png")], capsys)
