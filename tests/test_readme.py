"""The README's code runs as written, and its claims hold: TBR identifies the simulated latents, the baseline not."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in a Markdown text, in order."""
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.MULTILINE | re.DOTALL)


def test_code_blocks_are_found():
    text = "intro\n```python\nx = 1\n```\n```bash\nmake test\n```\n```python\ny = 2\n\nz = 3\n```\n"
    assert code_blocks(text, "python") == ["x = 1\n", "y = 2\n\nz = 3\n"]
    assert code_blocks(text, "bash") == ["make test\n"]


def test_readme_quick_start_commands_are_make_targets():
    text = README.read_text()
    commands = "".join(code_blocks(text, "bash"))
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "install"):
        assert f"make {target}" in commands
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"README uses `make {target}`"
    assert "make docs" in text
    assert re.search(r"^docs:", makefile, flags=re.MULTILINE)


def test_readme_links_point_to_files():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links the figure and the tutorials"
    for target in local:
        assert (ROOT / target).exists(), f"README links to missing {target}"


@pytest.mark.slow
def test_readme_python_examples_run_and_show_identification(tmp_path, monkeypatch):
    blocks = code_blocks(README.read_text(), "python")
    assert len(blocks) == 2, "the README has the simulation example and the real-cells example"
    monkeypatch.chdir(tmp_path)
    # Scanpy's neighbors (numba) raises torch's thread count in the process; each block is a separate example, so
    # restore it before the next one (a shared 2-core machine runs small fits much slower on 2 threads).
    n_threads = torch.get_num_threads()
    namespaces = []
    for i, block in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{i}"}
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
        finally:
            plt.close("all")
            torch.set_num_threads(n_threads)
        namespaces.append(namespace)

    # the simulation: TBR's latents match the truth, the baseline's do not (the README's comments say so)
    sim = namespaces[0]
    adata = sim["adata"]
    assert adata.obsm["X_tbr"].shape == (adata.n_obs, 5)
    assert sim["mcc_tbr"] > 0.75
    assert sim["mcc_tbr"] > sim["mcc_baseline"] + 0.2
    assert "connectivities" in adata.obsp

    # real cells: the fit wrote its latents for every cell and one head per node of the cell-type tree
    semi = namespaces[1]["semi"]
    n_latent = semi.obsm["Z_true"].shape[1]
    assert semi.obsm["X_tbr"].shape == (semi.n_obs, n_latent)
    assert semi.obs["cell_type"].value_counts().max() <= 200
    assert semi.uns["tbr"]["environment_weights"].shape[1] == n_latent
