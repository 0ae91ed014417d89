"""benchmarks/gpu_proof.py: the whole ``--smoke`` run on the CPU (every part, the CUDA-only
checks skipped), the JSON written after every part (a run stopped mid-way keeps what finished, a
failing part is recorded and the next runs), and the Markdown spliced into BENCHMARKS/README."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_checks  # noqa: E402
import gpu_proof  # noqa: E402
import gpu_proof_render  # noqa: E402

CUDA_ONLY = {"gpu_jpeg_cache", "maml_cudagraph", "host_to_device"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, float]:
    """One ``--smoke`` run in a child process (killed with its children if it overruns)."""
    tmp = tmp_path_factory.mktemp("gpu-proof")
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(BENCH / "gpu_proof.py"), "--smoke", "--out",
                             str(tmp / "out"), "--work", str(tmp / "work")], start_new_session=True)
    try:
        proc.wait(timeout=gpu_proof.SMOKE["deadline"] + 60)
    except subprocess.TimeoutExpired:
        gpu_proof.kill(proc)
        pytest.fail("gpu_proof.py --smoke overran its deadline")
    assert proc.returncode == 0
    return json.loads((tmp / "out" / "gpu-proof.json").read_text()), tmp, time.monotonic() - t


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU smoke run")
def test_smoke_runs_every_part(smoke: tuple[dict, Path, float]) -> None:
    result, tmp, seconds = smoke
    assert result["smoke"] and seconds < gpu_proof.SMOKE["deadline"] + 30
    parts = result["parts"]
    assert list(parts) == ["checks", "peers", "time_to_accuracy", "grid"]
    assert all(p["status"] == "done" for p in parts.values()), parts
    checks = parts["checks"]["checks"]
    assert set(checks) == set(gpu_checks.CHECKS)
    for name, r in checks.items():
        if name in CUDA_ONLY:
            assert r["status"] == gpu_checks.NO_CUDA
        elif name != "maml_compile":
            assert r["status"] == "pass", (name, r)
    assert checks["maml_vmap"]["first_loss_rel_diff"] < 1e-5  # same weights, same meta-loss
    assert checks["nccl_group"]["backend"] == "gloo"
    peers = parts["peers"]
    assert peers["metric"]["rows"][0]["episodes_per_s"] > 0
    assert peers["maml"]["rows"][0]["variant"] == gpu_checks.MAML[peers["ours_maml"]["check"]][0]
    tta = parts["time_to_accuracy"]
    assert set(tta["cells"]) == set(gpu_proof.TTA_CELLS)
    assert all(m["curve"] for m in tta["models"].values())
    assert parts["grid"]["cells"] and (tmp / "out" / "reproduce.tar").is_file()


def test_parts_saved_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON holds each part as soon as it ends: a failing part is recorded with its error
    and the next runs; a run stopped during a part keeps the parts before it."""
    def fake_checks(run, rec):
        rec["checks"] = {"maml_eager": {"status": "pass", "s_per_iter": 1.0}}

    def failing(run, rec):
        raise RuntimeError("boom")

    def stopped(run, rec):
        saved = json.loads((tmp_path / "out" / "gpu-proof.json").read_text())
        assert saved["parts"]["peers"]["status"] == "error: RuntimeError: boom"
        raise KeyboardInterrupt  # as a kill during this part

    monkeypatch.setattr(gpu_proof, "checks", fake_checks)
    monkeypatch.setattr(gpu_proof, "peers_part", failing)
    monkeypatch.setattr(gpu_proof, "tta_part", stopped)
    with pytest.raises(KeyboardInterrupt):
        gpu_proof.main(["--smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")])
    parts = json.loads((tmp_path / "out" / "gpu-proof.json").read_text())["parts"]
    assert parts["checks"]["status"] == "done" and "time_to_accuracy" not in parts
    assert parts["checks"]["checks"]["maml_eager"]["s_per_iter"] == 1.0


def test_render_and_splice(smoke: tuple[dict, Path, float], tmp_path: Path) -> None:
    result, _, _ = smoke
    gpu_like = {**result, "smoke": False, "device": "NVIDIA H100 80GB HBM3"}
    for res, name in ((result, "smoke.json"), (gpu_like, "gpu.json")):
        (tmp_path / name).write_text(json.dumps(res))
    bench, readme = tmp_path / "B.md", tmp_path / "R.md"
    bench.write_text("# B\n<!-- gpu-proof:start -->\nold\n<!-- gpu-proof:end -->\n"
                     "<!-- gpu-proof-smoke:start -->\nold\n<!-- gpu-proof-smoke:end -->\ntail\n")
    readme.write_text("intro\n<!-- gpu-proof-summary:start -->\n<!-- gpu-proof-summary:end -->\n")
    gpu_proof.main(["--render", str(tmp_path / "smoke.json"), "--splice", str(bench)])
    text = bench.read_text()
    assert "SMOKE, NOT A RESULT" in text and text.count("old") == 1 and text.endswith("tail\n")
    assert "| nccl_group | pass |" in text and "| maml_cudagraph | skipped: no CUDA |" in text
    gpu_proof.main(["--render", str(tmp_path / "gpu.json"), "--splice", str(bench), str(readme)])
    text, summary = bench.read_text(), readme.read_text()
    assert "old" not in text and "NVIDIA H100 80GB HBM3" in text and result["commit"] in text
    assert "protonet: " in summary and "CUDA-only paths passing: " in summary
    assert gpu_proof_render.markdown(gpu_like) in text


def test_render_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        gpu_proof.main(["--render", str(tmp_path / "missing.json")])
    (tmp_path / "r.json").write_text(json.dumps({"smoke": True, "parts": {}, "device": "cpu",
                                                 "torch": "x", "date": "d", "commit": "c",
                                                 "deadline_s": 1}))
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="none has the lines"):
        gpu_proof.main(["--render", str(tmp_path / "r.json"), "--splice", str(tmp_path / "plain.md")])
