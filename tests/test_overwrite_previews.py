"""Preview images (``preview-step*.png``, written by the generative pre-training methods at each
validation) belong to their run: ``--overwrite`` moves them aside with the other run files and
deletes them only once the new run has a checkpoint, puts them back when the new run fails first,
and leaves none of the old run's beside the new run's."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewshot.cli import main
from fewshot.engine.logs import preview_file
from fewshot.engine.runs import check_run_folder, run_files

from .test_nothing_lost import fails, snapshot

AUTOENCODER = ["pretrain", "--dataset", "embedded", "--image-size", "16", "--device", "cpu",
               "--method", "autoencoder", "--batch-size", "8", "--val-episodes", "2",
               "--val-way", "2", "--val-query", "2", "--quiet", "--knn-k", "0",
               "--option", "hidden=8", "--option", "decoder_width=8"]


def previews(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("preview-*.png"))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """An autoencoder run of 4 steps with previews at steps 2 and 4."""
    out = tmp_path / "ae"
    main([*AUTOENCODER, "--steps", "4", "--val-every", "2", "--out", str(out)])
    assert previews(out) == [preview_file(2), preview_file(4)]
    return out


def test_run_files_name_the_previews(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    for step in (3, 1):
        (tmp_path / preview_file(step)).write_bytes(b"png")
    (tmp_path / "preview-notes.png").write_bytes(b"a user's own image")  # not a run's preview
    assert run_files(tmp_path) == ["run.json", preview_file(1), preview_file(3)]
    with pytest.raises(ValueError, match=r"already holds a run \(run.json, 2 preview-step\*.png\)"):
        check_run_folder(tmp_path, resume=False, overwrite=False)


def test_overwrite_leaves_no_old_preview(run: Path) -> None:
    main([*AUTOENCODER, "--steps", "3", "--val-every", "3", "--out", str(run), "--overwrite"])
    assert previews(run) == [preview_file(3)]  # not the old run's steps 2 and 4
    assert not (run / ".replaced").exists()


def test_a_failed_overwrite_puts_the_previews_back(run: Path, capsys, monkeypatch) -> None:
    import fewshot.cli.recipe as recipe

    before = snapshot(run)
    written = []

    def fails_after_a_preview(learner, spec, sampler, config, val=None, device=None,
                              monitors=()):
        (run / preview_file(1)).write_bytes(b"the new run's")  # as its first validation would
        written.append(previews(run))
        raise ValueError("the second step failed")

    monkeypatch.setattr(recipe, "train", fails_after_a_preview)
    fails([*AUTOENCODER, "--steps", "3", "--val-every", "1", "--out", str(run), "--overwrite"],
          capsys)
    assert written == [[preview_file(1)]]  # the old previews were aside while the new run ran
    assert snapshot(run) == before  # the new run's preview removed, the old ones back


def test_a_refused_overwrite_moves_nothing(run: Path, capsys) -> None:
    before = snapshot(run)
    line = fails([*AUTOENCODER, "--steps", "3", "--out", str(run), "--overwrite", "--lr", "nan"],
                 capsys)
    assert "--lr" in line
    assert snapshot(run) == before
