"""Every public object has a numpy-style docstring with an Examples section, and the examples run.

Examples that fit a model are marked ``# doctest: +SKIP`` in the docstrings (the tutorials and the README test run
those workflows); everything else is executed here, like ``pytest --doctest-modules sctbr``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import sctbr  # noqa: E402

PUBLIC_MODULES = ["sctbr", "sctbr.pp", "sctbr.tl", "sctbr.pl", "sctbr.model", "sctbr.datasets", "sctbr.metrics"]
#: Modules whose import runs a command line.
NOT_IMPORTED = {"sctbr.experiments.__main__"}


def public_objects() -> list[tuple[str, object]]:
    out = []
    for name in [*PUBLIC_MODULES, "sctbr.experiments"]:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                out.append((f"{name}.{attr}", obj))
    return out


def all_modules() -> list[str]:
    names = ["sctbr"]
    for info in pkgutil.walk_packages(sctbr.__path__, prefix="sctbr."):
        if info.name not in NOT_IMPORTED:
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize(("name", "obj"), public_objects(), ids=[n for n, _ in public_objects()])
def test_public_object_has_a_numpy_docstring_with_examples(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    assert "Examples\n--------" in doc, f"{name}: add an Examples section (numpy style) to its docstring"
    assert ">>> " in doc.split("Examples\n--------", 1)[1], f"{name}: its Examples section has no example"


@pytest.mark.parametrize("module_name", all_modules())
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        if test.examples and test.name.startswith(module_name):
            runner.run(test, out=lambda _: None)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, (
        f"{results.failed} docstring example(s) of {module_name} failed: run "
        f"`python -m pytest --doctest-modules {module.__file__}` to see them"
    )
