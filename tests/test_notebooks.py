"""The teaching notebooks: each runs top to bottom (in its quick mode, to keep the suite fast), and
each is committed with current outputs of a default-settings run (``notebooks/execute.py``)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "notebooks"
spec = importlib.util.spec_from_file_location("notebooks_execute", HERE / "execute.py")
execute = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute)
NOTEBOOKS = execute.notebooks()
IDS = [p.name for p in NOTEBOOKS]


def test_the_notebooks_of_the_course_are_there():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path: Path):
    """Executed in a fresh kernel in quick mode (``FEWSHOT_NOTEBOOK_QUICK=1``): no cell fails."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    nb = nbformat.read(path, as_version=4)
    execute.run(nb, quick=True, timeout=600)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])), "the notebook draws no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_has_current_outputs(path: Path):
    """Outputs present, from one default-settings run of this code with this library version,
    with figures, under 1 MB. Fix: ``python notebooks/execute.py NAME`` and commit."""
    pytest.importorskip("nbformat")
    assert execute.problems(path) == []


def test_the_staleness_check_catches_edits_and_missing_outputs(tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    original = nbformat.read(NOTEBOOKS[0], as_version=4)

    def problems_of(nb) -> list[str]:
        path = tmp_path / "nb.ipynb"
        nbformat.write(nb, path)
        return execute.problems(path)

    assert problems_of(original) == []
    edited = copy.deepcopy(original)
    code = next(c for c in edited.cells if c.cell_type == "code")
    code.source += "\nprint('edited')"
    assert any("its code changed" in p for p in problems_of(edited))
    prose = copy.deepcopy(original)
    next(c for c in prose.cells if c.cell_type == "markdown").source += " More prose."
    assert problems_of(prose) == []  # prose edits do not make outputs stale
    cleared = copy.deepcopy(original)
    for c in cleared.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    found = problems_of(cleared)
    assert any("no outputs" in p for p in found) and any("not executed" in p for p in found)
    unstamped = copy.deepcopy(original)
    del unstamped.metadata["fewshot"]
    assert any("not stamped" in p for p in problems_of(unstamped))
    quick = copy.deepcopy(original)
    quick.metadata["fewshot"]["quick"] = True
    assert any("quick mode" in p for p in problems_of(quick))
    monkeypatch.setattr(execute, "library_version", lambda: "99.0")
    assert any("stale: executed with fewshot" in p for p in problems_of(original))
