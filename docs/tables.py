"""The tables the README and the documentation show of the registries, generated from them: the
methods (``fewshot.registry.METHODS``), the heads (``fewshot.heads.HEADS``) and the datasets
(``episodes.registry.DATASETS``). ``tests/test_docs.py`` fails when a committed table differs.

    python docs/tables.py          # rewrite the tables between their markers
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from episodes.registry import DATASETS  # noqa: E402
from fewshot.heads import HEAD_KINDS, HEADS  # noqa: E402
from fewshot.registry import KINDS, METHODS  # noqa: E402

COMMAND = {"episodic": "`fewshot train --method`", "supervised": "`fewshot pretrain --method "
           "supervised`", "self-supervised": "`fewshot pretrain --method`",
           "semi-supervised": "`fewshot pretrain --method`"}


def options(config: type) -> str:
    names = [f.name for f in dataclasses.fields(config) if f.init
             and "from_data" not in f.metadata]
    return ", ".join(f"`{n}`" for n in names) or "-"


def summary_table() -> str:
    """The README's table: one row per kind of method, and the heads."""
    rows = ["| kind | command | names |", "| --- | --- | --- |"]
    for kind, what in KINDS.items():
        names = ", ".join(f"`{n}`" for n in METHODS.names(kind))
        rows.append(f"| {what.split(' (')[0]} | {COMMAND[kind]} | {names} |")
    heads = ", ".join(f"`{n}`" for n in HEADS.names())
    rows.append(f"| heads fitted on each episode's support set | `fewshot eval --head` | {heads} |")
    return "\n".join(rows) + "\n"


def reference_table() -> str:
    """The documentation's table: every method, head and dataset with its summary and options."""
    rows = ["| name | kind | what | options |", "| --- | --- | --- | --- |"]
    for kind in KINDS:
        for n in METHODS.names(kind):
            e = METHODS.get(n)
            rows.append(f"| `--method {n}` | {kind} | {e.summary} | {options(e.config)} |")
    for n in HEADS.names():
        e = HEADS.get(n)
        rows.append(f"| `--head {n}` | {HEAD_KINDS[e.kind]} | {e.summary} | "
                    f"{options(e.config)} |")
    for n in DATASETS.names():
        e = DATASETS.get(n)
        rows.append(f"| `--dataset {n}` | {e.kind} | {e.summary} | {options(e.config)} |")
    return "\n".join(rows) + "\n"


TABLES = {"README.md": ("methods-summary", summary_table),
          "docs/methods/index.md": ("registry-reference", reference_table)}


def splice(text: str, marker: str, table: str) -> str:
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"markers {start.strip()} ... {end} not found")
    head, rest = text.split(start, 1)
    return head + start + table + end + rest.split(end, 1)[1]


def stale() -> list[str]:
    """The files whose tables differ from the registries."""
    return [name for name, (marker, make) in TABLES.items()
            if splice((ROOT / name).read_text(), marker, make()) != (ROOT / name).read_text()]


def main() -> None:
    for name, (marker, make) in TABLES.items():
        path = ROOT / name
        path.write_text(splice(path.read_text(), marker, make()))
        print(f"{name}: {marker} table written")


if __name__ == "__main__":
    main()
