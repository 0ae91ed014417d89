"""The GPU proof in one run: every CUDA-only path, speed against the peers, time to accuracy,
then the first cells of the reproduction grid, within one deadline (8 minutes by default).

    python benchmarks/gpu_proof.py --prepare                 # here, once: data and wheels into shared/
    python benchmarks/gpu_proof.py --out $OUT --wheels shared/wheels     # on the GPU machine
    python benchmarks/gpu_proof.py --smoke --out /tmp/gp     # CPU, tiny caps (the test suite)
    python benchmarks/gpu_proof.py --render $OUT/gpu-proof.json [--splice BENCHMARKS.md README.md]

Parts, in order, each with its own time cap, the JSON (``OUT/gpu-proof.json``) written after each
(so a run cut short keeps what finished); a part that fails or runs out of time is recorded with
its error and the next one runs:

1. ``checks``: every CUDA-only path once (:mod:`gpu_checks`), each check with its own cap;
2. ``peers``: ``peers.py metric`` and ``peers.py maml`` (steps 1 and 5; ours in the variant that
   part 1 timed fastest, ``higher``, parallel-metalearn), each variant in its own process;
3. ``time_to_accuracy``: ``reproduce.py`` time-to-accuracy runs of ProtoNet and first-order MAML
   on Omniglot 5-way 1-shot (test accuracy on fixed episodes at fixed marks of training time, until
   the published figure or the cap);
4. ``grid``: with the time left, ``reproduce.py`` on the first cells of the grid, resumable from
   ``benchmarks/out/reproduce`` (packed into ``OUT/reproduce.tar`` to carry to the next call).

``--smoke`` runs the same parts on the CPU with tiny sizes and random images of Omniglot's shape
(the CUDA-only checks say "skipped: no CUDA"); BENCHMARKS.md ("The GPU proof") gives the device
command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import common
import gpu_checks
import gpu_proof_render
import gpu_proof_setup as setup
import grid
import torch

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "out" / "gpu-proof"  # the children's own files (not brought back)
GRID_DIR = BENCH / "out" / "reproduce"  # the reproduction grid's folder, carried between calls
PEERS = ["easyfsl==1.5.0", "higher==0.2.1", "parallel-metalearn==0.5.6"]  # pure-Python wheels
TTA_CELLS = ["protonet/omniglot-5w1s", "maml_fo/omniglot-5w1s"]
# seconds: the whole run, each part, each check; the grid runs only with GRID_MIN_S left
GPU = {"deadline": 480, "checks": 100, "check": 30, "maml_compile": 90, "peers_metric": 100,
       "peers_maml": 80, "tta_model": 72, "grid_min": 90}
SMOKE = {"deadline": 240, "checks": 80, "check": 30, "maml_compile": 30, "peers_metric": 40,
         "peers_maml": 40, "tta_model": 30, "grid_min": 10}


class Run:
    """One proof run: the results dict, its deadline, where its output goes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.caps = args, SMOKE if args.smoke else GPU
        self.start = time.monotonic()
        self.deadline = self.start + self.caps["deadline"]
        self.device = "cpu" if args.smoke else args.device
        self.work = args.work
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(common.CHECKOUT), str(BENCH)]
                                                  + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
        self.log = (args.out / "gpu-proof.log").open("a")
        self.result = {"kind": "gpu proof", "smoke": args.smoke, "deadline_s": self.caps["deadline"],
                       **common.environment(torch.device(self.device)), "commit": setup.commit(),
                       "parts": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.result["wall_s"] = round(time.monotonic() - self.start, 1)
        common.write_json(self.result, self.args.out / "gpu-proof.json")

    def command(self, cmd: list[str], cap: float) -> dict:
        """Run ``cmd`` (its output into the log) for at most ``cap`` seconds (and the deadline);
        on time, it and every process it started are killed."""
        cap = max(1.0, min(cap, self.left()))
        t, own = time.monotonic(), self.work / "command.log"
        with own.open("w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=common.CHECKOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=cap)
            except subprocess.TimeoutExpired:
                kill(proc)
                rc = None
        text = own.read_text(errors="replace")
        self.log.write(f"\n$ {' '.join(cmd)}\n{text}")
        self.log.flush()
        res = {"rc": rc, "seconds": round(time.monotonic() - t, 1), "cap_s": round(cap)}
        if rc:  # its error: the last line it printed
            res["error"] = (text.strip().splitlines() or ["(no output)"])[-1][:300]
        return res

    def part(self, name: str, fn) -> None:
        """Run part ``fn`` (which fills its dict), catching its failure; save afterwards."""
        rec = self.result["parts"][name] = {"status": "running"}
        t = time.monotonic()
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        try:
            rec["status"] = fn(rec) or "done"
        except Exception as e:  # noqa: BLE001 - recorded, the next part runs
            rec["status"] = f"error: {type(e).__name__}: {e}"[:500]
        rec["seconds"] = round(time.monotonic() - t, 1)
        print(f"   {name}: {rec['status']} ({rec['seconds']} s)", flush=True)
        self.save()


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process of its session (it was started in a new one)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------- the parts
def checks(run: Run, rec: dict) -> str | None:
    """Part 1: :mod:`gpu_checks` in a child process, each check capped; after a failure, a
    timeout or a crash, a fresh process for the checks left."""
    names, results = list(gpu_checks.CHECKS), rec.setdefault("checks", {})
    progress = run.work / "checks.jsonl"
    part_end = time.monotonic() + min(run.caps["checks"], run.left())
    while (todo := [n for n in names if n not in results]) and time.monotonic() < part_end:
        progress.unlink(missing_ok=True)
        cmd = [sys.executable, str(BENCH / "gpu_checks.py"), "--device", run.device,
               "--progress", str(progress), *(["--smoke"] if run.args.smoke else []), *todo]
        proc = subprocess.Popen(cmd, stdout=run.log, stderr=subprocess.STDOUT, env=run.env,
                                cwd=common.CHECKOUT, start_new_session=True)
        current, started = None, time.monotonic()
        while proc.poll() is None:
            lines = [json.loads(x) for x in progress.read_text().splitlines()] if progress.is_file() else []
            for line in lines:
                if "start" in line and line["start"] != current:
                    current, started = line["start"], time.monotonic()
                elif "name" in line:
                    results[line.pop("name")] = line
            cap = run.caps.get(current, run.caps["check"])
            if current not in results and current and (time.monotonic() - started > cap
                                                       or time.monotonic() > part_end):
                kill(proc)
                results[current] = {"status": f"timeout: not done after {time.monotonic() - started:.0f} s"
                                    f" (its cap: {min(cap, part_end - started):.0f} s)"}
                break
            time.sleep(0.2)
        for line in (json.loads(x) for x in progress.read_text().splitlines()):
            if "name" in line:
                results[line.pop("name")] = line
        if current and current not in results:
            results[current] = {"status": f"fail: the process ended (exit code {proc.returncode})"}
        run.save()
    for name in names:
        results.setdefault(name, {"status": "not reached: part 1's time cap"})
    gpu_checks.compare_maml(results)
    return None if len(results) == len(names) else "cut at its time cap"


def peers_part(run: Run, rec: dict) -> str | None:
    """Part 2: the peers benchmark's two parts, each variant in its own process."""
    fastest = gpu_checks.fastest_maml(run.result["parts"].get("checks", {}).get("checks", {}))
    variant, vmap = gpu_checks.MAML[fastest]
    rec["ours_maml"] = {"check": fastest, "variant": variant, "vmap": vmap}
    smoke = run.args.smoke
    jobs = {"metric": ["metric", *(["--quick", "--methods", "protonet", "--variants", "fewshot-auto",
                                    "--episodes", "2", "--rounds", "1"] if smoke else
                                   ["--rounds", "3", "--episodes", "1000", "--warmup-episodes",
                                    "100", "--round-seconds", "2"])],
            "maml": ["maml", "--vmap", vmap, *(["--quick", "--steps", "1", "--variants", variant,
                                                 "--iters", "1", "--batch", "2",
                                                 "--hidden", "8"] if smoke else
                                                ["--steps", "1", "5", "--variants", variant,
                                                 "higher", "metalearn-vmap", "--warmup", "2",
                                                 "--iters", "10", "--max-seconds", "5"])]}
    cut = []
    for key, argv in jobs.items():
        out = run.work / f"peers-{key}.json"
        out.unlink(missing_ok=True)
        res = run.command([sys.executable, str(BENCH / "peers.py"), *argv, "--device", run.device,
                           "--out", str(out)], run.caps[f"peers_{key}"])
        rec[key] = {**(json.loads(out.read_text()) if out.is_file() else {}), "process": res}
        if res["rc"] != 0:
            cut.append(f"{key}: {ended(res)}")
        run.save()
    return "; ".join(cut) or None


def reproduce_cmd(run: Run, out_dir: Path, cells: str, budget_s: float) -> list[str]:
    smoke = ["--synthetic", "--threads", "1", "--steps", "2", "--test-episodes", "4"]
    return [sys.executable, str(BENCH / "reproduce.py"), "--device", run.device, "--cells", cells,
            "--out-dir", str(out_dir), "--budget-minutes", f"{budget_s / 60:.3f}",
            *(smoke if run.args.smoke else [])]


def tta_part(run: Run, rec: dict) -> str | None:
    """Part 3: time to accuracy, one model after the other, each capped."""
    out_dir = run.work / "time-to-accuracy"
    shutil.rmtree(out_dir, ignore_errors=True)
    episodes = "4" if run.args.smoke else "1000"
    for cell in TTA_CELLS:
        budget = min(run.caps["tta_model"], run.left() - 20)
        if budget < 10:
            rec.setdefault("not_run", []).append(cell)
            continue
        cmd = reproduce_cmd(run, out_dir, cell, budget) + [
            "--curve-minutes", "0.01" if run.args.smoke else "0.25", "--curve-episodes", episodes,
            "--cap-minutes", "1", "--until-published", "--reserve-seconds", "0" if run.args.smoke
            else "10"] + ([] if run.args.smoke else ["--test-episodes", episodes])
        rec.setdefault("process", {})[cell] = run.command(cmd, budget + 45)
        rec.update(grid.digest(out_dir / "results.json"))
        run.save()
    bad = [f"{cell}: {ended(res)}" for cell, res in rec.get("process", {}).items() if res["rc"]]
    bad += [f"{cell}: not run (time)" for cell in rec.get("not_run", [])]
    return "; ".join(bad) or None


def grid_part(run: Run, rec: dict) -> str | None:
    """Part 4: the first cells of the reproduction grid with the time left (resumable)."""
    left = run.left() - 15
    if left < run.caps["grid_min"]:
        return f"skipped: {max(left, 0):.0f} s left (needs {run.caps['grid_min']})"
    out_dir = run.work / "reproduce-smoke" if run.args.smoke else GRID_DIR
    if run.args.smoke:
        shutil.rmtree(out_dir, ignore_errors=True)
    cells = TTA_CELLS[0] if run.args.smoke else run.args.grid_cells  # smoke: the first cell
    cmd = reproduce_cmd(run, out_dir, cells, left - 15) + [
        "--prune", "--pack", str(run.args.out / "reproduce.tar"), "--reserve-seconds", "20"]
    rec["process"] = run.command(cmd, left)
    rec.update(grid.digest(out_dir / "results.json"), out_dir=str(out_dir))
    if rec["process"]["rc"] != 0:
        return ended(rec["process"])
    return None if rec.get("cells") else f"no cell scored in the {left:.0f} s left"


def ended(res: dict) -> str:
    """How a command that did not succeed ended."""
    return ("cut at its time cap" if res["rc"] is None
            else f"error: exit code {res['rc']}: {res.get('error')}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for gpu-proof.json, its log and reproduce.tar")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes and caps, random images")
    ap.add_argument("--wheels", type=Path, help="install these peers' wheels first (no network)")
    ap.add_argument("--work", type=Path, default=WORK, help=f"children's files (default {WORK})")
    ap.add_argument("--grid-cells", default="protonet/*", help="part 4's cells (reproduce.py --cells)")
    ap.add_argument("--prepare", action="store_true", help="put the data and the peers' wheels "
                    "into shared/ (git-ignored), where a device call carries them")
    ap.add_argument("--render", type=Path, metavar="JSON", help="print the Markdown of a result")
    ap.add_argument("--splice", type=Path, nargs="+", metavar="MD",
                    help="with --render: write it into these files between their markers")
    args = ap.parse_args(argv)
    if args.render:
        gpu_proof_render.render(args.render, args.splice)
        return
    if args.prepare:
        setup.prepare(PEERS)
        return
    if args.out is None:
        ap.error("give --out DIR (or --prepare, or --render JSON)")
    if not args.smoke and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA device here; on a CPU run --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    if args.wheels:
        setup.install_wheels(run, args.wheels)
    run.save()
    warm = setup.warm_data(run)
    run.part("checks", lambda rec: checks(run, rec))
    if warm is not None:
        t = time.monotonic()
        try:
            warm.wait(timeout=max(1.0, min(120.0, run.left() - 60)))
        except subprocess.TimeoutExpired:
            kill(warm)
        run.result["data_wait_s"] = round(time.monotonic() - t, 1)
    run.part("peers", lambda rec: peers_part(run, rec))
    run.part("time_to_accuracy", lambda rec: tta_part(run, rec))
    run.part("grid", lambda rec: grid_part(run, rec))
    print(f"wall {time.monotonic() - run.start:.0f} s; {args.out / 'gpu-proof.json'}", flush=True)


if __name__ == "__main__":
    main()
