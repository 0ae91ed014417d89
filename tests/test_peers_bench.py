"""benchmarks/peers.py at its smallest: every variant of ours runs, the peers' when installed, and
all MAML variants start from the same function (equal first meta-losses)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402

METRIC = {"part": "metric", "device": "cpu", "threads": None, "rounds": 1, "episodes": 2,
          "warmup_episodes": 1, "round_seconds": 60.0}
MAML = {"part": "maml", "device": "cpu", "threads": None, "batch": 2, "hidden": 8, "steps": 1,
        "vmap": "auto", "warmup": 1, "iters": 1, "max_seconds": 60.0}


def metric_row(variant: str, method: str) -> dict:
    row = peers.worker({**METRIC, "variant": variant, "method": method})
    assert row["episodes_per_s"] > 0 and len(row["rounds"]) == 1 and row["peak_rss_gb"] > 0
    return row


@pytest.mark.parametrize("method", peers.METRIC_METHODS)
def test_our_metric_learners(method):
    assert metric_row("fewshot-1", method)["episodes_per_step"] == 1


@pytest.mark.parametrize("variant, precision, channels_last", [
    ("fewshot-1-fp32-nchw", "fp32", False), ("fewshot-1-bf16", "bf16", True)])
def test_metric_variants_set_precision_and_layout(variant, precision, channels_last):
    row = metric_row(variant, "protonet")
    assert (row["precision"], row["channels_last"]) == (precision, channels_last)


def test_auto_episodes_per_step():
    assert metric_row("fewshot-auto", "protonet")["episodes_per_step"] == 1  # on a CPU


def test_plain_protonet():
    metric_row("plain", "protonet")


@pytest.mark.parametrize("method", peers.METRIC_METHODS)
def test_easyfsl(method):
    pytest.importorskip("easyfsl")
    metric_row("easyfsl", method)


@pytest.fixture(scope="module")
def our_first_loss() -> float:
    row = peers.worker({**MAML, "variant": "fewshot"})
    assert row["s_per_iter"] > 0 and row["peak_rss_gb"] > 0
    return row["first_loss"]


@pytest.mark.parametrize("variant, module", [("plain", None), ("higher", "higher"),
                                             ("metalearn-vmap", "metalearn"),
                                             ("metalearn-seq", "metalearn")])
def test_maml_variants_compute_our_meta_loss(variant, module, our_first_loss):
    if module:
        pytest.importorskip(module)
    row = peers.worker({**MAML, "variant": variant})
    assert row["first_loss"] == pytest.approx(our_first_loss, rel=1e-5)


@pytest.mark.gpu
def test_cuda_graph_replay_computes_our_meta_loss():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rows = [peers.worker({**MAML, "device": "cuda", "variant": v, "iters": 3})
            for v in ("fewshot", "fewshot-cudagraph")]
    assert rows[1]["first_loss"] == pytest.approx(rows[0]["first_loss"], rel=1e-3)


def test_skips():
    assert peers.skip_reason("fewshot-cudagraph", "cpu") == "skipped: needs CUDA"
    assert peers.skip_reason("fewshot", "cpu") is None


def run_here(cfg: dict) -> subprocess.CompletedProcess:
    """A variant's subprocess replaced by a call in this process."""
    out = json.dumps(peers.worker(cfg))
    return subprocess.CompletedProcess([], 0, stdout=out + "\n", stderr="")


def test_run_writes_json_and_table(tmp_path, monkeypatch, capsys):
    """The driver, with each variant's subprocess replaced by a call in this process."""
    monkeypatch.setattr(peers, "launch", run_here)
    out = tmp_path / "peers.json"
    peers.main(["metric", "--quick", "--methods", "protonet", "--variants", "fewshot-1",
                "--episodes", "2", "--rounds", "1", "--repeat", "2", "--out", str(out)])
    assert re.search(r"\| protonet \| fewshot-1 \| (fp32|bf16), NHWC \| 1 \|",
                     capsys.readouterr().out)
    result = json.loads(out.read_text())
    assert result["settings"]["episodes"] == 2 and result["settings"]["rounds"] == 1
    assert result["rows"][0]["rounds"] and result["mode"] == "reduced CPU run (--quick)"
    row = result["rows"][0]
    assert len(row["repeats"]) == 2 and row["episodes_per_s"] == sum(row["repeats"]) / 2


@pytest.mark.slow
def test_one_run_in_subprocesses(tmp_path):
    out = tmp_path / "peers.json"
    subprocess.run([sys.executable, str(BENCH / "peers.py"), "maml", "--quick", "--steps", "1",
                    "--batch", "2", "--hidden", "8", "--variants", "fewshot", "fewshot-cudagraph",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["fewshot", "fewshot-cudagraph"]
    assert result["rows"][0]["s_per_iter"] > 0
    assert result["rows"][1]["skipped"] == "skipped: needs CUDA"
    assert "| 1 | fewshot |" in peers.markdown(result)


def test_bad_variant_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        peers.main(["maml", "--variants", "easyfsl"])
    assert exc.value.code == 2
    assert "maml variants are fewshot" in capsys.readouterr().err


@pytest.mark.parametrize("part, variants", [("metric", ["fewshot-1-fp32", "fewshot-1-bf16"]),
                                            ("maml", ["fewshot", "fewshot-cudagraph",
                                                      "fewshot-bf16"])])
def test_together_takes_turns_in_one_process(part, variants, monkeypatch, tmp_path):
    launched = []
    monkeypatch.setattr(peers, "launch", lambda cfg: launched.append(cfg) or run_here(cfg))
    settings = (["--steps", "1", "--iters", "2", "--batch", "2", "--hidden", "8"] if part == "maml"
                else ["--methods", "protonet", "--rounds", "2", "--episodes", "2"])
    out = tmp_path / "peers.json"
    peers.main([part, "--quick", "--variants", *variants, "--together", *settings,
                "--out", str(out)])
    assert len(launched) == 1 and len(launched[0]["jobs"]) == 2  # the CUDA variant is skipped
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == variants
    timed = [r for r in rows if "skipped" not in r]
    assert len(timed) == 2 and all(r["together"] for r in timed)
    assert all(len(r["rounds" if part == "metric" else "times"]) == 2 for r in timed)
