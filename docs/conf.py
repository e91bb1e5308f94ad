"""Sphinx configuration (scverse conventions: myst, autosummary, numpydoc-style docstrings via napoleon)."""

from importlib.metadata import version as _version

project = "sctbr"
author = "sctbr developers"
try:
    release = _version("sctbr")
except Exception:  # noqa: BLE001
    release = "0.0.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
autosummary_generate = True
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
intersphinx_mapping = {}
