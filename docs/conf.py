"""Sphinx configuration (scverse conventions: myst-nb, autosummary, numpy-style docstrings via napoleon).

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``): warnings are errors.
The tutorials live in ``tutorials/`` at the repository root; they are copied into ``docs/notebooks/`` (ignored by
git) at every build and rendered with the outputs committed in them (``nb_execution_mode = "off"``: the test suite
executes them, ``tests/test_tutorials.py``).
"""

import shutil
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "sctbr"
author = "sctbr developers"
copyright = "sctbr developers"
try:
    release = _version("sctbr")
except Exception:  # noqa: BLE001
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# -- API reference -----------------------------------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # methods inherited from Lightning/scvi-tools carry their own (foreign) markup
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True

# -- MyST and notebooks --------------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the outputs committed in the notebooks
nb_merge_streams = True
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst first: autosummary stubs
# reproducing/*.md are inputs of make_reproducing.py (pasted into reproducing.md), not pages of their own
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "reproducing/*.md"]

# -- HTML ----------------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "sctbr"
html_static_path = ["_static"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "path_to_docs": "docs/",
}

# No intersphinx: the build reads nothing from the network, so it cannot fail on a network hiccup (-W).


def _copy_tutorials() -> None:
    """Copy ``tutorials/*.ipynb`` into ``docs/notebooks/`` so Sphinx (which reads only ``docs/``) renders them."""
    target = HERE / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


_copy_tutorials()
