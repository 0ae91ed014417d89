"""``gpu_proof.py``'s Markdown and its preparation: :func:`markdown` turns a ``gpu-proof.json``
into the BENCHMARKS.md section (checks, peers, time to accuracy, grid; device, date, commit),
:func:`summary` into the README's lines, :func:`render` prints or splices them between the
markers ``gpu-proof`` (``gpu-proof-smoke`` for a ``--smoke`` run) and ``gpu-proof-summary``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import peers
from grid_render import curve_text, mean_ci, splice_blocks
from reproduce_protocols import protocols


def _memory(row: dict) -> str:
    if "peak_cuda_gb" in row:
        return f"{row['peak_cuda_gb']:.2f} GiB (CUDA)"
    return f"{row['peak_rss_gb']:.2f} GiB (RSS)" if "peak_rss_gb" in row else "-"


DETAILS = {"gpu_jpeg_cache": lambda r: f"{r['images']} JPEGs; GPU {r['seconds_gpu_decode']} s, CPU "
           f"{r['seconds_cpu_decode']} s; mean / max difference {r['mean_abs_diff']} / "
           f"{r['max_abs_diff']} levels",
           "nccl_group": lambda r: f"backend {r['backend']}; DDP gradient max difference "
           f"{r['ddp_grad_max_diff']:.1e}",
           "amp_steps": lambda r: f"{r['steps']} steps; loss after {r['loss_after']}; eval "
           f"accuracy {100 * r['eval_accuracy']:.1f} %",
           "bounded_eval": lambda r: f"{r['episodes']} episodes, budget {r['budget_gb']} GiB, "
           "same accuracies in 1 MiB chunks",
           "episodes_per_step_auto": lambda r: f"{r['episodes_per_step']} episodes per step "
           f"({r['bytes_per_episode'] / 2**20:.0f} MiB each), peak {_memory(r)}",
           "host_to_device": lambda r: f"{r['episodes_per_s']:,} episodes/s from host memory "
           "(not pinned)"}


def _maml_details(r: dict) -> str:
    diff = (f", {r['first_loss_rel_diff']:.1e} from eager's" if "first_loss_rel_diff" in r
            else "")
    return (f"meta-batch {r['batch']}, 1 inner step: {r['s_per_iter']:.4f} s/iteration (first "
            f"{r['first_iter_s']:.1f} s); first loss {r['first_loss']:.6f}{diff}; peak {_memory(r)}")


def checks_table(part: dict) -> list[str]:
    lines = ["| check | result | seconds | measured |", "|---|---|---|---|"]
    for name, r in part.get("checks", {}).items():
        detail = ""
        if r.get("status") == "pass" or "first_loss" in r:
            how = _maml_details if "first_loss" in r else DETAILS.get(name)
            detail = how(r) if how else ""
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '-')} | {detail} |")
    return lines


def tta_table(part: dict) -> list[str]:
    """Per model: its test-accuracy curve against training minutes, how it stopped, the final
    score on the whole episode set, the published figure."""
    cells = protocols()
    lines = ["| cell | curve: training minutes -> test accuracy % | trained | how it stopped | "
             "final test accuracy % (95%) | published % |", "|---|---|---|---|---|---|"]
    for name, c in part.get("cells", {}).items():
        model = part["models"].get(c["model"], {})
        curve = curve_text(model.get("curve", []), c["setting"])
        lines.append(f"| {name} | {curve or '-'} | {model.get('steps', 0):,} steps, "
                     f"{model.get('seconds', 0):.0f} s | {c['stopped']} | {mean_ci(c)} "
                     f"({c['episodes']} episodes) | "
                     f"{cells[name].published:.1f} |")
    return lines


def grid_table(part: dict) -> list[str]:
    lines = ["| model | steps | status |", "|---|---|---|"]
    for key, m in part.get("models", {}).items():
        lines.append(f"| {key} | {m.get('steps', 0):,} / {m.get('target_steps', 0):,} | "
                     f"{m.get('stopped') or m.get('status', '-')} |")
    lines += ["", "| cell | test accuracy % (95%) | episodes |", "|---|---|---|"]
    lines += [f"| {n} | {100 * c['mean']:.2f} +- {100 * c['ci95']:.2f} | {c['episodes']} |"
              for n, c in part.get("cells", {}).items()]
    return lines


def heading(result: dict) -> str:
    smoke = ("**SMOKE, NOT A RESULT: `--smoke` on the CPU** (tiny sizes, random images: the "
             "figures say that every part runs, not what a GPU does). " if result["smoke"] else "")
    return (f"{smoke}Device: {result['device']}; torch {result['torch']}; {result['date']}; "
            f"commit {result['commit']}; {result.get('wall_s', 0):.0f} s of wall time (deadline "
            f"{result['deadline_s']} s). Rendered by `python benchmarks/gpu_proof.py --render`.")


def markdown(result: dict) -> str:
    parts = result["parts"]
    out = [heading(result), ""]
    for name, title in (("checks", "1. CUDA-only paths"), ("peers", "2. Speed against the peers"),
                        ("time_to_accuracy", "3. Time to accuracy"), ("grid", "4. Grid")):
        part = parts.get(name)
        out.append(f"**{title}**: " + ("not reached" if part is None else
                                        f"{part['status']} ({part.get('seconds', 0):.0f} s)"))
        out.append("")
        if part is None:
            continue
        if name == "checks":
            out += checks_table(part)
        elif name == "peers":
            for key in ("metric", "maml"):
                if part.get(key, {}).get("rows"):
                    out += [peers.markdown(part[key]), ""]
            out.append(f"Ours in MAML: the fastest of part 1 ({part['ours_maml']['check']}).")
        elif name == "time_to_accuracy":
            out += tta_table(part)
        else:
            out += grid_table(part) if part.get("models") else []
        out.append("")
    return "\n".join(out).rstrip()


def _row(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())
                 and "skipped" not in r), None)


def summary(result: dict) -> str:
    """The README's lines: a few headline figures beside the peers'."""
    parts, lines = result["parts"], [heading(result), ""]
    passed = [n for n, r in parts.get("checks", {}).get("checks", {}).items()
              if r["status"] == "pass"]
    lines.append(f"- CUDA-only paths passing: {len(passed)} of "
                 f"{len(parts.get('checks', {}).get('checks', {}))}.")
    metric = parts.get("peers", {}).get("metric", {}).get("rows", [])
    for method in peers.METRIC_METHODS:
        ours, theirs = _row(metric, method=method, variant="fewshot-auto"), \
            _row(metric, method=method, variant="easyfsl")
        if ours:
            lines.append(f"- {method}: {ours['episodes_per_s']:,.0f} episodes/s (ours, "
                         f"{ours['episodes_per_step']} per step)" + (
                             f" against {theirs['episodes_per_s']:,.0f} (easyfsl)" if theirs else ""))
    maml = parts.get("peers", {}).get("maml", {}).get("rows", [])
    for steps in (1, 5):
        ours = next((r for r in maml if r["steps"] == steps and r["variant"].startswith("fewshot")
                     and "skipped" not in r), None)
        theirs = _row(maml, steps=steps, variant="higher")
        if ours:
            lines.append(f"- MAML, {steps} inner step(s): {ours['s_per_iter']:.4f} s/meta-iteration "
                         f"(ours)" + (f" against {theirs['s_per_iter']:.4f} (higher)" if theirs else ""))
    for name, c in parts.get("time_to_accuracy", {}).get("cells", {}).items():
        lines.append(f"- {name}: {100 * c['mean']:.2f} % ({c['stopped']})")
    return "\n".join(lines)


def render(path: Path, splice: list[Path] | None) -> None:
    """Print the Markdown of the result at ``path``, or write it into the ``splice`` files."""
    if not path.is_file():
        sys.exit(f"--render {path}: no such file; give the gpu-proof.json a run wrote")
    result = json.loads(path.read_text())
    blocks = ({"gpu-proof-smoke": markdown(result)} if result["smoke"] else
              {"gpu-proof": markdown(result), "gpu-proof-summary": summary(result)})
    if not splice:
        print("\n\n".join(blocks.values()))
        return
    done = {md: splice_blocks(md, blocks) for md in splice}
    if not any(done.values()):
        sys.exit(f"{', '.join(map(str, splice))}: none has the lines <!-- NAME:start --> and "
                 f"<!-- NAME:end --> for {' or '.join(blocks)}, around the text to rewrite")
    for md, names in done.items():
        print(f"{md}: " + (f"rewrote {', '.join(names)}" if names else "no markers for it")
              + f" from {path}")
