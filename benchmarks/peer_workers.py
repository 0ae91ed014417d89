"""What ``benchmarks/peers.py`` runs in its subprocesses: one variant's timing (a metric
learner's training rounds or a MAML meta-iteration), or all variants taking turns in one process
(``--together``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import common
import peer_maml as pm
import peer_metric as pmet
import torch
from torch import Tensor


def worker(cfg: dict) -> dict | list[dict]:
    """Time one variant in this (fresh) process, or all of ``cfg["jobs"]`` taking turns."""
    device = torch.device(cfg["device"])  # torch's default precision settings (cuDNN TF32 on)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    if "jobs" in cfg:
        return together_worker(cfg, device)
    return (metric_worker if cfg["part"] == "metric" else maml_worker)(cfg, device)


def metric_run(cfg: dict, device: torch.device, data) -> tuple[pmet.Round, dict]:
    """The timed round of ``cfg``'s variant and method, and what it is."""
    variant, method = cfg["variant"], cfg["method"]
    if variant.startswith("fewshot-"):  # fewshot-<per step>[-<precision>][-nchw]
        per_step, *rest = variant.split("-")[1:]
        return pmet.fewshot_metric(
            method, data, device, "auto" if per_step == "auto" else int(per_step),
            cfg["round_seconds"], precision=next((r for r in rest if r != "nchw"), "auto"),
            channels_last=False if "nchw" in rest else None)
    if variant == "plain":
        return pmet.plain_protonet(data, device, cfg["round_seconds"])
    return pmet.easyfsl_metric(method, data, device, cfg["round_seconds"])


def metric_worker(cfg: dict, device: torch.device) -> dict:
    run, info = metric_run(cfg, device, pmet.synthetic_dataset(device))
    rss = common.peak_memory("cpu")["peak_rss_gb"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run(cfg["warmup_episodes"])
    rates = [n / s for n, s in (run(cfg["episodes"]) for _ in range(cfg["rounds"]))]
    return {**info, "episodes_per_s": statistics.median(rates), "rounds": rates,
            "rss_after_setup_gb": rss, **common.peak_memory(device)}


def maml_step(cfg: dict, device: torch.device) -> Callable[[], Tensor]:
    """One meta-iteration of ``cfg``'s variant (forward, backward, Adam) as a function."""
    batch = pm.maml_batch(cfg["batch"], device)
    variant = cfg["variant"]
    learner = pm.our_maml(cfg["steps"], device, cfg["hidden"],
                          {"auto": None, "true": True, "false": False}[cfg["vmap"]],
                          compile=variant == "fewshot-compile")
    if variant.startswith("fewshot"):
        return pm.fewshot_maml_step(learner, batch, cuda_graph=variant == "fewshot-cudagraph",
                                    precision="bf16" if variant == "fewshot-bf16" else "fp32")
    if variant in ("plain", "higher"):
        fn = pm.plain_meta_loss if variant == "plain" else pm.higher_meta_loss
        return pm.plain_step(fn, learner.net, batch, cfg["steps"])
    return pm.metalearn_step(learner.net, batch, cfg["steps"], variant.split("-")[1], device)


def maml_worker(cfg: dict, device: torch.device) -> dict:
    step = maml_step(cfg, device)
    rss = common.peak_memory("cpu")["peak_rss_gb"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    first_loss = float(torch.as_tensor(step()).detach())  # same weights in every variant
    compile_s = time.perf_counter() - start  # with torch.compile: the compilation
    times = common.step_times(step, device, cfg["warmup"] - 1, cfg["iters"], cfg["max_seconds"])
    return {"s_per_iter": statistics.median(times), "times": times, "first_loss": first_loss,
            "first_iter_s": compile_s, "rss_after_setup_gb": rss, **common.peak_memory(device)}


def together_worker(cfg: dict, device: torch.device) -> list[dict]:
    """Every job of ``cfg["jobs"]`` in this one process, taking turns: per round, each metric
    variant's ``episodes`` or each MAML variant's one iteration (after their warm-up). Peak
    memory is the process's, for all of them together."""
    calls, infos = {}, []
    data = pmet.synthetic_dataset(device) if cfg["part"] == "metric" else None
    for i, job in enumerate(cfg["jobs"]):
        if cfg["part"] == "metric":
            run, info = metric_run({**cfg, **job}, device, data)
            run(cfg["warmup_episodes"])
            calls[i] = lambda run=run: (lambda n, s: n / s)(*run(cfg["episodes"]))
        else:
            step = maml_step({**cfg, **job}, device)
            info = {"first_loss": float(torch.as_tensor(step()).detach())}
            for _ in range(cfg["warmup"] - 1):
                step()
            calls[i] = lambda step=step: common.step_times(step, device, 0, 1)[0]
        infos.append(info)
    turns = common.take_turns(calls, cfg["rounds"] if cfg["part"] == "metric" else cfg["iters"])
    key, per = (("episodes_per_s", "rounds") if cfg["part"] == "metric"
                else ("s_per_iter", "times"))
    return [{**info, key: statistics.median(turns[i]), per: turns[i], "together": True,
             **common.peak_memory(device)}
            for i, info in enumerate(infos)]
