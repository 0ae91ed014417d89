"""The documentation site (mkdocs.yml, docs/) builds with warnings as errors: a broken link or
anchor, a page missing from the navigation, an API reference to an object that does not exist, or a
docstring griffe cannot parse fails the build."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra: pip install '.[docs]'")
    if not (ROOT / "mkdocs.yml").exists():
        pytest.skip("no mkdocs.yml (installed package, not a checkout)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    log = out.stdout + out.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert out.returncode == 0 and not warnings, log[-4000:]
    for page in ("index.html", "api/episodes/index.html", "notebooks/01_episodes/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    shutil.rmtree(tmp_path / "site")


def test_the_registry_tables_are_current():
    """The README's and the docs' tables of methods, heads and datasets are those the registries
    generate (``python docs/tables.py`` rewrites them)."""
    sys.path.insert(0, str(ROOT / "docs"))
    import tables

    assert tables.stale() == [], "run python docs/tables.py and commit the result"

