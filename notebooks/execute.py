"""Execute the teaching notebooks in place and stamp them, or check the committed ones.

    python notebooks/execute.py                  # run every notebook top to bottom, write outputs
    python notebooks/execute.py 05_maml.ipynb    # only these
    python notebooks/execute.py --check          # what tests/test_notebooks.py checks, no execution

Each notebook runs in a fresh kernel with its default settings (``FEWSHOT_NOTEBOOK_QUICK`` unset),
from ``notebooks/``, importing the library of this checkout. Its metadata then records, under
``"fewshot"``: the hash of its code cells (``code_hash``), the library version, the hash of the
library's source (``library_hash``), torch's version, the seconds it took and the date.

A committed notebook is *current* when every code cell ran, in order, in one default-settings run
without errors, at least one figure (PNG) is embedded, the file is under 1 MB, its code is the code
that ran (``code_hash``) and the library version is the one it ran with. The library's source hash
is recorded but not enforced: it changes with every commit to ``fewshot/`` or ``episodes/``, and
``--check`` only reports the notebooks run with other library source. Edited a notebook's code or
bumped the version? Run this script and commit the notebooks.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_BYTES = 1_000_000
QUICK_ENV = "FEWSHOT_NOTEBOOK_QUICK"


def notebooks() -> list[Path]:
    """The teaching notebooks, in order."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def code_hash(nb) -> str:
    """Hash of the sources of the code cells (prose edits do not make outputs stale)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.strip().encode() + b"\0")
    return h.hexdigest()[:16]


def library_hash() -> str:
    """Hash of every ``.py`` file of ``fewshot/`` and ``episodes/`` (path and content)."""
    h = hashlib.sha256()
    for path in sorted([*ROOT.glob("fewshot/**/*.py"), *ROOT.glob("episodes/**/*.py")]):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def library_version() -> str:
    sys.path.insert(0, str(ROOT))
    from fewshot.engine.runs import library_version as version

    return version()


def kernel_env(quick: bool) -> dict[str, str]:
    """The environment the kernel runs in: this checkout first on the path, quick mode or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(QUICK_ENV, None)
    if quick:
        env[QUICK_ENV] = "1"
    return env


def run(nb, quick: bool = False, timeout: int = 900) -> float:
    """Execute ``nb`` (a ``nbformat`` notebook) top to bottom in a fresh kernel; returns seconds."""
    import nbclient

    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}}).execute(
        env=kernel_env(quick))
    return time.perf_counter() - start


def stamp(nb, seconds: float) -> None:
    import torch

    nb.metadata["fewshot"] = {
        "code_hash": code_hash(nb), "version": library_version(), "library_hash": library_hash(),
        "torch": torch.__version__.split("+")[0], "seconds": round(seconds),
        "executed": datetime.date.today().isoformat(), "quick": False}


def problems(path: Path) -> list[str]:
    """Why the committed notebook ``path`` is not current (empty: it is)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = []
    if path.stat().st_size >= MAX_BYTES:
        found.append(f"{path.stat().st_size} bytes, over {MAX_BYTES}: shrink its figures")
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        found.append(f"code cells not executed once each, in order, in one run (execution counts "
                     f"{counts})")
    outputs = [o for c in code for o in c.get("outputs", [])]
    if not outputs:
        found.append("no outputs")
    if any(o.get("output_type") == "error" for o in outputs):
        found.append("an output is an error")
    if not any("image/png" in o.get("data", {}) for o in outputs):
        found.append("no PNG figure in the outputs")
    stamped = nb.metadata.get("fewshot")
    if not stamped:
        found.append("not stamped by notebooks/execute.py")
        return found
    if stamped.get("code_hash") != code_hash(nb):
        found.append("stale: its code changed since it was executed")
    if stamped.get("version") != library_version():
        found.append(f"stale: executed with fewshot {stamped.get('version')}, the library is "
                     f"{library_version()}")
    if stamped.get("quick", True):
        found.append(f"executed in quick mode ({QUICK_ENV}=1), not with its default settings")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--check", action="store_true", help="check the committed notebooks only")
    args = parser.parse_args(argv)
    paths = [HERE / Path(n).name for n in args.names] or notebooks()
    if args.check:
        bad = 0
        for path in paths:
            found = problems(path)
            bad += bool(found)
            print(f"{path.name}: {'; '.join(found) or 'current'}")
        import nbformat

        other = [p.name for p in paths if nbformat.read(p, as_version=4).metadata.get(
            "fewshot", {}).get("library_hash") != library_hash()]
        if other:
            print(f"note: executed with other library source (not an error): {', '.join(other)}")
        return 1 if bad else 0
    import nbformat

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        seconds = run(nb)
        stamp(nb, seconds)
        nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.0f} s, {path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
