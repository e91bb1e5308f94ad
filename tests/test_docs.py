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
