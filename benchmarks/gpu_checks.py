"""The library's CUDA-only code paths, each run once and checked: part 1 of ``gpu_proof.py``.

    python benchmarks/gpu_checks.py --device cuda --progress FILE [NAME ...]

Each check runs in this process, one after the other, and appends one JSON line to ``--progress``
when it starts and one with its result when it ends (``pass``, ``fail: ...`` with the error, or
``skipped: ...``), so the caller can cap each check's time and keeps what finished if this process
is killed. After a failed check the process stops (exit code 3): a CUDA error can leave the
context unusable, so the caller starts a fresh process for the checks left. The MAML checks time
meta-iterations through ``peers.worker`` and report their first meta-loss, which the caller
compares across the variants (same weights, same batch).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import common
import numpy as np
import peers
import torch
from PIL import Image

from episodes import EpisodeSampler, FixedEpisodes, ImagePipeline
from episodes.cache import cached_class_dataset
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, train
from fewshot.engine import distributed as fd
from fewshot.engine.memory import memory_budget
from fewshot.engine.step_size import auto_episodes, training_bytes_per_episode

NO_CUDA = "skipped: no CUDA"
# check -> (peers' MAML variant, its vmap option); the first meta-losses must agree
MAML = {"maml_eager": ("fewshot", "false"), "maml_vmap": ("fewshot", "true"),
        "maml_cudagraph": ("fewshot-cudagraph", "true"), "maml_compile": ("fewshot-compile", "auto")}


def compare_maml(results: dict) -> None:
    """Every MAML variant's first meta-loss against the eager one's (same weights and batch)."""
    ref = results.get("maml_eager", {}).get("first_loss")
    for name in MAML:
        r = results.get(name, {})
        if ref is None or "first_loss" not in r or name == "maml_eager":
            continue
        r["first_loss_rel_diff"] = diff = abs(r["first_loss"] - ref) / abs(ref)
        if diff > 5e-3 and r["status"] == "pass":
            r["status"] = f"fail: first meta-loss {r['first_loss']:.6f}, eager's {ref:.6f}"


def fastest_maml(results: dict) -> str:
    """The MAML check (variant) with the least seconds per meta-iteration; eager if none ran."""
    timed = {n: r["s_per_iter"] for n, r in results.items()
             if n in MAML and r.get("status") == "pass"}
    return min(timed, key=timed.get) if timed else "maml_eager"


def protonet(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_learner(ModelSpec("protonet", "conv4", 1, 28, {})).to(device)


def gpu_jpeg_cache(device: torch.device, smoke: bool) -> dict:
    """JPEGs (generated: smooth colour fields with noise, sizes like ImageNet's, RGB and
    grayscale) decoded on the GPU into the decoded-image cache, against the CPU decoder."""
    if device.type != "cuda":
        return {"status": NO_CUDA}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root, files = Path(tmp) / "jpegs", {}
        for c in range(4):
            files[f"class{c}"] = []
            for i in range(16):
                h, w = (375, 500) if i % 2 else (84, 84)
                yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
                img = np.stack([np.sin(6 * xx + c), np.cos(5 * yy + i), xx * yy], -1)
                img = ((img + 1) * 110 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
                path = root / f"class{c}" / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                (Image.fromarray(img).convert("L") if i % 4 == 3 else Image.fromarray(img)
                 ).save(path, quality=90)
                files[f"class{c}"].append(path)
        pipe, out = ImagePipeline(3, 84), {}
        for decoder in ("cuda", "threads", "cuda"):  # the second cuda call reads the cache
            t = time.perf_counter()
            ds = cached_class_dataset(files, root, pipe, f"gp-{decoder}", Path(tmp) / "cache",
                                      decoder=decoder)
            out.setdefault(decoder, ds.images.clone())
            out[f"{decoder}_s"] = round(time.perf_counter() - t, 3)
    diff = (out["cuda"].int() - out["threads"].int()).abs().float()
    result = {"images": len(diff), "mean_abs_diff": round(diff.mean().item(), 3),
              "max_abs_diff": int(diff.max()), "seconds_gpu_decode": out["cuda_s"],
              "seconds_cpu_decode": out["threads_s"]}
    ok = diff.mean() < 3.0  # the decoders round differently; a wrong image differs by tens
    return {"status": "pass" if ok else "fail: GPU-decoded images differ from the CPU's", **result}


def nccl_group(device: torch.device, smoke: bool) -> dict:
    """A one-process group (NCCL on a GPU, gloo on a CPU) through the library's distributed
    code: a DDP step of ``GradientSync`` equals the plain step, and the collectives that
    training and evaluation use (``all_reduce_``, ``gather_shards``, ``gather_objects``,
    ``any_rank``, ``broadcast_module``) give a single process's values."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=0, world_size=1,
                                         device_id=device if device.type == "cuda" else None)
    try:
        data = peers.pmet.synthetic_dataset(device)
        batch = EpisodeSampler(data, 5, 1, 15, episodes_per_batch=2, seed=0).sample().to(device)
        grads = []
        for ctx in (fd.Context(), SimpleNamespace(active=True, world_size=1)):
            learner = protonet(device)
            sync = fd.GradientSync(learner, ctx, 1.0, device)
            loss, _ = sync.forward(batch)
            (loss * sync.loss_weight).backward()
            sync.finish()
            grads.append(torch.cat([p.grad.flatten() for p in learner.parameters()]))
        t = torch.arange(6.0, device=device)
        fd.all_reduce_([t], 0.5)
        shards = fd.gather_shards(torch.arange(5.0, device=device), 5)
        ok = (torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
              and torch.equal(t.cpu(), torch.arange(6.0) * 0.5)
              and torch.equal(shards.cpu(), torch.arange(5.0))
              and fd.gather_objects({"a": 1}) == [{"a": 1}] and fd.any_rank(True))
        fd.broadcast_module(learner)
        return {"status": "pass" if ok else "fail: a collective changed a value", "backend": backend,
                "ddp_grad_max_diff": float((grads[0] - grads[1]).abs().max())}
    finally:
        fd.shutdown()


def amp_steps(device: torch.device, smoke: bool) -> dict:
    """ProtoNet training steps and evaluation under bfloat16 autocast (``--precision bf16``)."""
    data, learner = peers.pmet.synthetic_dataset(device), protonet(device)
    before = [p.detach().clone() for p in learner.parameters()]
    sampler = EpisodeSampler(data, 5, 1, 15, seed=0)
    res = train(learner, None, sampler, TrainConfig(steps=3 if smoke else 20, precision="bf16",
                                                    progress=False), device=device)
    moved = any(not torch.equal(a, b) for a, b in zip(before, learner.parameters(), strict=True))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = float(learner.batch_loss(sampler.sample().to(device))[0].detach())
    episodes = FixedEpisodes.generate(data, 5, 1, 15, 4 if smoke else 100, seed=1)
    acc = evaluate(learner, episodes, data, device=device, precision="bf16")
    ok = moved and np.isfinite(loss) and 0 <= acc.mean <= 1
    return {"status": "pass" if ok else "fail: non-finite loss or no update", "steps": res.steps,
            "loss_after": round(loss, 4), "eval_accuracy": round(acc.mean, 4)}


def bounded_eval(device: torch.device, smoke: bool) -> dict:
    """Evaluation within the memory budget sized from the device's free memory, against the
    same evaluation forced into small chunks: equal accuracies."""
    data, learner = peers.pmet.synthetic_dataset(device), protonet(device)
    episodes = FixedEpisodes.generate(data, 5, 1, 15, 8 if smoke else 1000, seed=1)
    budget = memory_budget(device)
    sized = evaluate(learner, episodes, data, device=device)
    small = evaluate(learner, episodes, data, device=device, max_memory=8 << 20)  # in chunks
    same = torch.equal(sized.accuracies, small.accuracies)
    return {"status": "pass" if same else "fail: chunked evaluation differs",
            "budget_gb": round(budget / 2**30, 2), "episodes": len(episodes)}


def episodes_per_step_auto(device: torch.device, smoke: bool) -> dict:
    """``--episodes-per-step auto`` for ProtoNet 5-way 1-shot 15-query on this device, and two
    training steps of that size."""
    data, learner = peers.pmet.synthetic_dataset(device), protonet(device)
    per_step = auto_episodes(learner, 5, 1, 15, (1, 28, 28), device)
    per_episode = training_bytes_per_episode(learner, 5, 1, 15, (1, 28, 28), device)
    sampler = EpisodeSampler(data, 5, 1, 15, episodes_per_batch=per_step, seed=0)
    res = train(learner, None, sampler, TrainConfig(steps=2, progress=False), device=device)
    ok = res.episodes == 2 * per_step and (per_step > 1) == (device.type == "cuda")
    return {"status": "pass" if ok else "fail: unexpected episodes per step",
            "episodes_per_step": per_step, "bytes_per_episode": per_episode,
            **common.peak_memory(device)}


def host_to_device(device: torch.device, smoke: bool) -> dict:
    """Episodes drawn from images held in host memory onto the GPU (``non_blocking`` copies
    from pageable memory; the library pins nothing) equal those drawn on the host."""
    if device.type != "cuda":
        return {"status": NO_CUDA}
    host = peers.pmet.synthetic_dataset(torch.device("cpu"))
    a = EpisodeSampler(host, 5, 1, 15, episodes_per_batch=64, seed=3, device=device)
    b = EpisodeSampler(host, 5, 1, 15, episodes_per_batch=64, seed=3)
    t = time.perf_counter()
    eps = [a.sample() for _ in range(20)]
    common.sync(device)
    rate = 20 * 64 / (time.perf_counter() - t)
    same = all(torch.equal(x.query_x.cpu(), b.sample().query_x) for x in eps)
    return {"status": "pass" if same else "fail: episodes differ after the copy",
            "episodes_per_s": round(rate), "pinned": False}


def maml_check(name: str):
    variant, vmap = MAML[name]

    def check(device: torch.device, smoke: bool) -> dict:
        if variant == "fewshot-cudagraph" and device.type != "cuda":
            return {"status": NO_CUDA}
        if variant == "fewshot-compile" and device.type != "cuda" and smoke:
            return {"status": "skipped: --smoke on a CPU (compiling takes minutes there)"}
        cfg = {"part": "maml", "device": str(device), "threads": None, "variant": variant,
               "vmap": vmap, "steps": 1, "batch": 2 if smoke else 32, "hidden": 8 if smoke else 64,
               "warmup": 1 if smoke else 3, "iters": 1 if smoke else 10, "max_seconds": 10.0}
        return {"status": "pass", "batch": cfg["batch"], "inner_steps": 1, **peers.worker(cfg)}
    check.__doc__ = f"MAML meta-iterations, peers' variant {variant} with vmap {vmap}."
    return check


CHECKS = {"gpu_jpeg_cache": gpu_jpeg_cache, "nccl_group": nccl_group, "amp_steps": amp_steps,
          **{name: maml_check(name) for name in MAML}, "bounded_eval": bounded_eval,
          "episodes_per_step_auto": episodes_per_step_auto, "host_to_device": host_to_device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"checks to run, of {', '.join(CHECKS)} (default: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test suite)")
    ap.add_argument("--progress", type=Path, required=True, help="JSON lines are appended here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if bad := [n for n in args.names if n not in CHECKS]:
        ap.error(f"unknown check(s) {', '.join(bad)}: the checks are {', '.join(CHECKS)}")
    for name in args.names or list(CHECKS):
        with args.progress.open("a") as f:
            f.write(json.dumps({"start": name, "time": time.time()}) + "\n")
        t = time.perf_counter()
        try:
            result = CHECKS[name](device, args.smoke)
        except Exception as e:  # noqa: BLE001 - recorded with its error, the caller goes on
            traceback.print_exc()
            result = {"status": f"fail: {type(e).__name__}: {e}"[:500]}
        result = {"name": name, **result, "seconds": round(time.perf_counter() - t, 2)}
        with args.progress.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{name}: {result['status']} ({result['seconds']} s)", flush=True)
        if result["status"].startswith("fail"):
            raise SystemExit(3)


if __name__ == "__main__":
    main()
