"""The tutorials run from top to bottom with the current code, and are committed with their outputs.

Each notebook in ``tutorials/`` is executed in a fresh kernel (a copy, in a temporary folder: the committed file is
not touched) with a time limit per cell. The docs render the committed outputs (``nb_execution_mode = "off"``), so a
second test checks that those are complete: every code cell ran, in order, without an error.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
#: Seconds any one cell may run; a whole notebook takes a few minutes on two CPU cores.
CELL_TIMEOUT = 600


def test_tutorials_exist_and_are_listed_in_the_docs():
    names = [nb.stem for nb in NOTEBOOKS]
    assert {"01_quickstart", "02_real_cells", "03_using_latents"} <= set(names)
    toc = (ROOT / "docs" / "tutorials.md").read_text()
    for name in names:
        assert f"notebooks/{name}" in toc, f"docs/tutorials.md does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_committed_notebook_has_complete_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    assert code, f"{path.name} has no code"
    counts = [cell.execution_count for cell in code]
    assert None not in counts, f"{path.name}: run every cell before committing (jupyter nbconvert --execute)"
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom in one kernel"
    for cell in code:
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"{path.name}, cell {cell.execution_count}: {errors[0].ename}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    copy = tmp_path / path.name
    shutil.copy2(path, copy)
    nb = nbformat.read(copy, as_version=4)
    # the kernel inherits the environment: draw figures into the notebook as a reader's kernel would
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.0f} s")
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    assert images > 0, f"{path.name} drew no figure"
