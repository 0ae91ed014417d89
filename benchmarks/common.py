"""Helpers shared by the benchmark scripts: real data from ``shared/data``, fixed test episodes,
timing.

Importing it puts this checkout on ``sys.path``, so the scripts run from a checkout that is not
pip-installed. The data folder is ``shared/data`` inside the checkout when there is one (a device
call carries that folder, not the ``../shared`` beside the checkout), else ``../shared/data``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from datetime import date
from pathlib import Path

import torch

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))  # the checkout, when not pip-installed

from episodes import ClassDataset, FixedEpisodes, omniglot  # noqa: E402
from episodes.io import default_cache_dir  # noqa: E402
from episodes.omniglot import find_omniglot_root  # noqa: E402


def shared_data(checkout: Path = CHECKOUT) -> Path:
    """``checkout/shared/data`` if it exists, else ``checkout/../shared/data``."""
    inside = checkout / "shared" / "data"
    return inside if inside.is_dir() else checkout.parent / "shared" / "data"


SHARED = shared_data()


def omniglot_root(shared: Path = SHARED / "omniglot") -> Path:
    """The official Omniglot layout: ``$OMNIGLOT_ROOT`` if set, else written once from the npz
    files of ``shared/data/omniglot`` by its ``materialize.py`` into the cache folder
    (``$FEWSHOT_CACHE``, default ``~/.cache/fewshot``)."""
    if os.environ.get("OMNIGLOT_ROOT"):
        return Path(os.environ["OMNIGLOT_ROOT"])
    dest = default_cache_dir() / "omniglot-official"
    if find_omniglot_root(dest) is None:
        if not (shared / "materialize.py").is_file():
            sys.exit(f"Omniglot not found: expected {shared} (or set OMNIGLOT_ROOT)")
        subprocess.run([sys.executable, str(shared / "materialize.py"), str(dest)], check=True)
    return dest


def omniglot_splits(device: torch.device) -> dict[str, ClassDataset]:
    root = omniglot_root()
    return {s: omniglot(root, s).to(device) for s in ("train", "val", "test")}


def episodes_file(name: str, n_way: int, k_shot: int, q_query: int, count: int,
                  checkout: Path = CHECKOUT) -> Path:
    """Where :func:`test_episodes` keeps a set of fixed episodes in ``checkout``."""
    return checkout / "benchmarks" / "episodes" / f"{name}-{n_way}w{k_shot}s{q_query}q-{count}.pt"


def test_episodes(dataset: ClassDataset, n_way: int, k_shot: int, q_query: int, count: int,
                  name: str, seed: int = 2017) -> FixedEpisodes:
    """Fixed test episodes, saved under ``benchmarks/episodes/`` so every script and method is
    scored on the same ones (regenerated identically from the seed when the file is missing)."""
    path = episodes_file(name, n_way, k_shot, q_query, count)
    if path.is_file():
        eps = FixedEpisodes.load(path)
        eps.check(dataset)
        return eps
    eps = FixedEpisodes.generate(dataset, n_way, k_shot, q_query, count, seed)
    eps.save(path)
    return eps


def p_text(p: float, digits: int = 2) -> str:
    """A p-value for a table: ``digits`` significant digits, or ``< 1e-300`` where it underflowed
    to 0 (a difference of many standard errors over 1,000 episodes)."""
    return "< 1e-300" if p == 0 else f"{p:.{digits}g}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(step, device: torch.device, warmup: int = 3, iters: int = 20,
               max_seconds: float = float("inf")) -> list[float]:
    """Seconds of each of ``iters`` calls of ``step()`` after ``warmup`` calls, synchronising the
    device around each; fewer (but at least 2) once the timed calls took ``max_seconds``."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    while len(times) < iters and (sum(times) < max_seconds or len(times) < 2):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def take_turns(calls: dict, rounds: int) -> dict[object, list[float]]:
    """Call each of ``calls`` (name -> a function returning a figure) once per round, in turn,
    for ``rounds`` rounds, so a load that changes slows them alike; the figures by name."""
    out: dict[object, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            out[name].append(call())
    return out


def median(times: list[float]) -> float:
    """The middle value (the upper one of the two middle values for an even count)."""
    return sorted(times)[len(times) // 2]


def median_step_time(step, device: torch.device, warmup: int = 3, iters: int = 20) -> float:
    """Median seconds of ``step()`` after ``warmup`` calls, synchronising the device."""
    return median(step_times(step, device, warmup, iters))


def environment(device: torch.device) -> dict:
    """Where and when a benchmark ran: device name (CPU: model, cores, threads), torch, date,
    command line."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads)")
    return {"device": name, "torch": torch.__version__, "date": str(date.today()),
            "command": " ".join(sys.argv)}


def peak_rss_gb() -> float:
    """This process's own peak resident set in GiB: ``VmHWM`` of ``/proc/self/status`` on Linux,
    which starts afresh at ``exec``; elsewhere ``ru_maxrss``, which on Linux a child started by
    ``subprocess`` inherits from its parent (a 3 GB parent would make every child read >= 3 GB)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 3)  # kB
    import resource
    scale = 2**30 if sys.platform == "darwin" else 2**20  # bytes on macOS, KiB elsewhere
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 3)


def peak_memory(device: torch.device | str = "cpu") -> dict:
    """This process's peak memory so far: resident set (GiB, :func:`peak_rss_gb`) and, on a GPU,
    ``torch.cuda.max_memory_allocated`` (GiB). Every benchmark reports it beside its times."""
    out = {"peak_rss_gb": peak_rss_gb()}
    if torch.device(device).type == "cuda":
        out["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Write ``obj`` as JSON atomically (a run killed mid-write keeps the previous file), with
    the process's peak memory so far (:func:`peak_memory`) under ``"peak_memory"``."""
    obj = {**obj, "peak_memory": peak_memory("cuda" if torch.cuda.is_available() else "cpu")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def pack_folder(folder: Path, dest: Path, max_mb: float) -> None:
    """Write ``folder`` into the tar file ``dest`` (paths relative to its parent): a file named
    ``results.json`` first, then the others smallest first, leaving out (and naming) what would
    take the tar over ``max_mb`` MiB, the most a file brought back from a device call may be."""
    files = sorted((f for f in folder.rglob("*") if f.is_file()),
                   key=lambda f: (f.name != "results.json", f.stat().st_size))
    total, left = 0, []
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as tar:
        for f in files:
            if total + f.stat().st_size > max_mb * 2**20:
                left.append(str(f.relative_to(folder)))
                continue
            total += f.stat().st_size
            tar.add(f, arcname=str(f.relative_to(folder.parent)))
    print(f"packed {folder} into {dest} ({total / 2**20:.1f} MiB)"
          + (f"; left out (too large to carry): {', '.join(left)}" if left else ""), flush=True)
