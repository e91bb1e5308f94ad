"""Every public function has a numpy-style docstring and is listed in the docs' API page."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import sctbr

API = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
MODULES = ["pp", "tl", "pl", "model", "datasets", "metrics", "experiments"]


def _public():
    for mod in MODULES:
        module = getattr(sctbr, mod)
        for name in module.__all__:
            yield f"sctbr.{mod}.{name}", getattr(module, name)
    yield "sctbr.EnvironmentTree", sctbr.EnvironmentTree


@pytest.mark.parametrize(("qualname", "obj"), list(_public()), ids=lambda x: x if isinstance(x, str) else "")
def test_public_object_is_documented(qualname, obj):
    assert qualname in API, f"{qualname} is missing from docs/api.md"
    doc = inspect.getdoc(obj) or ""
    assert len(doc.splitlines()) >= 3, f"{qualname} needs a numpy-style docstring"
    if inspect.isfunction(obj) and len(inspect.signature(obj).parameters) > 0:
        assert "Parameters\n----------" in doc, f"{qualname}'s docstring has no Parameters section"


def test_docstring_snippets_are_filled_with_the_placeholders_indent():
    from sctbr._docs import SNIPPETS, fill

    doc = "Title.\n\n    Parameters\n    ----------\n    {pl_show}\n    key\n        ``X_{key_added}`` stays.\n"
    filled = fill(doc, ("pl_show",))
    assert "    show\n        Show the figure (``plt.show()``); ``None`` follows" in filled
    assert "\n    save\n        Save the figure" in filled
    assert "\n    return_fig\n        Return the Figure" in filled
    assert "``X_{key_added}`` stays." in filled
    assert all("{" + name + "}" not in inspect.getdoc(sctbr.tl.tbr) for name in SNIPPETS)
    with pytest.raises(KeyError, match="Unknown docstring snippet"):
        fill(doc, ("no_such_block",))
    with pytest.raises(ValueError, match="no placeholder"):
        fill(doc, ("pl_ax",))
