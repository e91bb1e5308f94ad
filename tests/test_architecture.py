"""The package's architecture, checked on the source (AST) of every module of ``sctbr/``.

Layers, from top to bottom; a module imports its own subpackage, any lower layer and the shared modules, never a
higher layer or a peer subpackage of its own layer:

    experiments -> pl -> tl -> model | datasets | pp -> metrics -> shared (sctbr._tree, _utils, _constants, _validation,
    _docs, _logging, _heads_lasso)

``sctbr/__init__.py`` imports everything and ``sctbr/demo.py`` is a script on top of the public API; both are exempt.

A module of ``tl``, ``pl`` or ``experiments`` imports only public names of another subpackage: nothing from
``sctbr.<subpackage>._module`` and no name starting with ``_``. What they share goes into a shared module or is exported
by the owning subpackage's ``__init__``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sctbr"

#: Rank of each layer: a module may import a strictly lower rank (and its own subpackage).
RANKS = {
    "shared": 0,
    "metrics": 1,
    "model": 2,
    "datasets": 2,
    "pp": 2,
    "tl": 3,
    "pl": 4,
    "experiments": 5,
}
SUBPACKAGES = frozenset(RANKS) - {"shared"}
#: Top-level modules every layer may import (the lowest layer).
SHARED = frozenset({"_tree", "_utils", "_constants", "_validation", "_docs", "_logging", "_heads_lasso"})
#: Subpackages whose modules may import only public names of other subpackages.
PUBLIC_ONLY = frozenset({"tl", "pl", "experiments"})
#: Modules outside the layering: the package's ``__init__`` (imports every subpackage) and the demo script.
EXEMPT = frozenset({"sctbr", "sctbr.demo"})


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # absolute, e.g. "sctbr.model._model"
    names: tuple[str, ...]  # imported names ("from m import a, b"); empty for "import m"
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: `{self.text}`"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str | None:
    """``"shared"``, a subpackage name, ``"root"`` for ``sctbr`` itself, or None for a module of no known layer."""
    parts = module.split(".")
    if parts[0] != "sctbr":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] in SHARED:
        return "shared"
    return None


def sctbr_imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import of ``sctbr`` in ``source`` (also inside functions and ``if TYPE_CHECKING``), resolved."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sctbr" or alias.name.startswith("sctbr."):
                    out.append(Import(node.lineno, alias.name, (), f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names)
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "sctbr" and not target.startswith("sctbr."):
                continue
            text = f"from {'.' * node.level}{node.module or ''} import {', '.join(names)}"
            if target == "sctbr":
                # "from sctbr import tl" imports a subpackage; "from sctbr import EnvironmentTree" the root package
                for name in names:
                    if name in SUBPACKAGES or name in SHARED:
                        out.append(Import(node.lineno, f"sctbr.{name}", (), text))
                    else:
                        out.append(Import(node.lineno, "sctbr", (name,), text))
            else:
                out.append(Import(node.lineno, target, names, text))
    return sorted(out, key=lambda i: i.line)


def private_import_problems(module: str, imports: list[Import]) -> list[str]:
    """Imports of a private module or name of another subpackage by a ``tl``/``pl``/``experiments`` module."""
    own = layer(module)
    if own not in PUBLIC_ONLY:
        return []
    problems = []
    for imp in imports:
        other = layer(imp.module)
        if other not in SUBPACKAGES or other == own:
            continue
        private_parts = [p for p in imp.module.split(".")[2:] if p.startswith("_")]
        private_names = [n for n in imp.names if n.startswith("_")]
        if private_parts or private_names:
            what = f"module {imp.module}" if private_parts else f"name(s) {', '.join(private_names)}"
            problems.append(
                f"{module} {imp} imports the private {what} of sctbr.{other}; import a public name of "
                f"sctbr.{other} (export it from sctbr/{other}/__init__.py) or move the helper to a shared module "
                f"({', '.join(f'sctbr.{s}' for s in sorted(SHARED))})"
            )
    return problems


def layering_problems(module: str, imports: list[Import]) -> list[str]:
    """Imports that go up the layers, across peer subpackages, or to the root package."""
    if module in EXEMPT:
        return []
    own = layer(module)
    if own is None:
        return [f"{module} belongs to no layer: add it to RANKS/SHARED/EXEMPT in tests/test_architecture.py"]
    problems = []
    for imp in imports:
        target = layer(imp.module)
        if target == "root":
            problems.append(
                f"{module} {imp} imports the root package sctbr, which imports every subpackage; import from "
                "the subpackage or the shared module that defines the name"
            )
        elif target is None:
            problems.append(f"{module} {imp} imports {imp.module}, which belongs to no layer")
        elif target == own or target == "shared":
            continue
        elif RANKS[target] == RANKS[own]:
            problems.append(
                f"{module} {imp} imports its peer sctbr.{target}: {own} and {target} share a layer and stay "
                "independent; move what both need to a lower layer or a shared module"
            )
        elif RANKS[target] > RANKS[own]:
            problems.append(
                f"{module} {imp} imports sctbr.{target}, a higher layer than {own if own != 'shared' else 'the shared modules'} "
                "(experiments -> pl -> tl -> model/datasets/pp -> metrics -> shared)"
            )
    return problems


def check(module: str, source: str, is_package: bool = False) -> list[str]:
    imports = sctbr_imports(source, module, is_package)
    return private_import_problems(module, imports) + layering_problems(module, imports)


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_module_is_found():
    names = {module_name(p) for p in SOURCES}
    assert {"sctbr", "sctbr.tl._tbr", "sctbr.model._model", "sctbr._tree._structure", "sctbr._constants"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_module_respects_the_architecture(path):
    module = module_name(path)
    problems = check(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("sctbr.tl._tbr", "from sctbr.model._model import TBR\n", "private module sctbr.model._model"),
        ("sctbr.tl._tbr", "from sctbr.model import _checkpoint\n", "private name(s) _checkpoint"),
        ("sctbr.pl._causal", "from sctbr.tl._causal import COLUMNS\n", "private module sctbr.tl._causal"),
        ("sctbr.experiments._real", "def f():\n    import sctbr.datasets._simulate\n", "sctbr.datasets._simulate"),
        ("sctbr.model._model", "from sctbr.tl import tbr\n", "higher layer"),
        ("sctbr.pl._tree", "from sctbr.experiments import run\n", "higher layer"),
        ("sctbr.metrics._ate", "from sctbr.model import TBR\n", "higher layer"),
        ("sctbr._utils", "from sctbr.metrics import mcc\n", "higher layer than the shared modules"),
        ("sctbr.pp._tree", "from sctbr.datasets import simulate\n", "peer sctbr.datasets"),
        ("sctbr.tl._refit", "from sctbr import EnvironmentTree\n", "root package"),
        ("sctbr.tl._refit", "import sctbr\n", "root package"),
        ("sctbr.tl._refit", "from sctbr import experiments\n", "higher layer"),
        ("sctbr.metrics._ate", "from ..tl import tbr\n", "higher layer"),
        ("sctbr.newthing", "import numpy\n", "belongs to no layer"),
    ],
)
def test_checker_names_the_offending_module_and_import(module, source, expected):
    problems = check(module, source)
    assert problems, f"no problem found in {module}: {source!r}"
    assert expected in problems[0]
    assert problems[0].startswith(module)
    if "newthing" not in module:
        assert f"line {source.count(chr(10), 0, source.index('import')) + 1}: `" in problems[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("sctbr.tl._tbr", "from sctbr.model import TBR, read_columns\nfrom sctbr._validation import check_setup\n"),
        ("sctbr.tl._tbr", "from sctbr.tl._refit import fit_once\nfrom sctbr._tree import _fmt_names\n"),
        ("sctbr.pl._causal", "from sctbr.tl import causal_effects as _causal_effects\n"),
        ("sctbr.experiments._common", "from sctbr import tl\nfrom sctbr.metrics import mcc\n"),
        ("sctbr.model._model", "from sctbr.model._data import TBRDataModule\nfrom sctbr._constants import X_KEY\n"),
        ("sctbr.metrics._ate", "from ._mcc import match_latents\nfrom sctbr._utils import environment_levels\n"),
        (
            "sctbr.model._model",
            "from sctbr.metrics._mcc import mcc\n",
        ),  # the private-name rule is for tl/pl/experiments
        ("sctbr._utils", "from sctbr._constants import TREE_KEY\n"),
        ("sctbr.demo", "import sctbr\n"),
    ],
)
def test_checker_accepts_allowed_imports(module, source):
    assert check(module, source) == []


def test_relative_imports_are_resolved():
    imports = sctbr_imports("from . import _mcc\nfrom ..tl._tbr import tbr\n", "sctbr.metrics._ate")
    assert [i.module for i in imports] == ["sctbr.metrics", "sctbr.tl._tbr"]
    imports = sctbr_imports("from ._build import coerce\n", "sctbr._tree", is_package=True)
    assert [i.module for i in imports] == ["sctbr._tree._build"]


# ---------------------------------------------------------------------- private names in the tests

TESTS = ROOT.parent / "tests"

#: The private names each test file may import (``module:name``, or a module / attribute path): each one tests a
#: private helper of the module its file mirrors, or builds what only a private helper builds (batches keyed by
#: ``sctbr._constants``, the simulator's true heads). Everything else goes through the public API. A new private
#: import fails ``test_tests_import_only_the_private_names_they_need``: use the public name, or add it here with the
#: reason it is needed. An entry no longer used fails too, so the list stays exact.
ALLOWED_PRIVATE_IMPORTS = {
    # the support estimate is tested without training (true latents), and its h5ad form without a fit
    "tests/pl/test_tree_changes.py": {"sctbr.tl._support:estimate_changes", "sctbr.tl._write:changes_to_uns"},
    "tests/tl/test_stability.py": {
        "sctbr.tl._stability:_warn_if_unstable",  # the warning's number format
        "sctbr.tl._refit:Fit",  # the verdict is checked with the refits and the design check patched
        "sctbr.tl:_stability",
    },
    "tests/tl/test_support.py": {
        "sctbr.tl:_support",  # the support problem's builder is checked directly
        "sctbr.tl._support:estimate_changes",
        "sctbr.tl._support:unresolved_pairs",
        "sctbr.tl._write:changes_to_uns",
        "sctbr:_heads_lasso",
    },
    "tests/datasets/test_datasets_real.py": {
        "sctbr.datasets._gtex:GTEX_OBS_COLUMNS",
        "sctbr.datasets._regulators:tf_targets",
    },
    "tests/experiments/test_experiments.py": {
        "sctbr.experiments._common:COLUMNS",
        "sctbr.experiments._common:fit_method",
        "sctbr.experiments._profiles:get_profile",
        "sctbr.experiments._real:_choose_held_out",
        "sctbr.experiments._real:_prepare",  # the sub-cluster preparation (tree follows the cell types) is checked directly
        "sctbr.experiments._real:_one_sparse_heads",
        "sctbr.experiments._report:EXPERIMENTS",
        "sctbr.experiments._report:markdown",
        "sctbr.experiments._report:verdict",
    },
    "tests/model/test_basis.py": {
        "sctbr.model._basis:_init_unobserved",
        "sctbr.model._basis:optimise_starts",
        "sctbr.model._basis_lp:polish",
    },
    "tests/model/test_basis_log.py": {  # the log search's pieces, on heads whose truth is known
        "sctbr.model._basis_log:exact_log_value",
        "sctbr.model._basis_log:log_refine",
        "sctbr.model._basis_log:parsimony",
    },
    "tests/model/test_data.py": {
        "sctbr._constants:ENV_KEY",
        "sctbr._constants:X_KEY",
        "sctbr._constants:Y_KEY",
        "sctbr.model._data:BackedRows",
        "sctbr.model._data:_Batches",
        "sctbr.model._data:prepare_arrays",
        "sctbr.model._data:stratified_split",
    },
    "tests/model/test_device_data.py": {  # the device copy is checked against the host batches, and on CPU
        "sctbr._constants:ENV_KEY",
        "sctbr._constants:X_KEY",
        "sctbr._constants:Y_KEY",
        "sctbr.model:_resident",  # to patch the device's free memory
        "sctbr.model._data:_Batches",
        "sctbr.model._data:prepare_arrays",
        "sctbr.model._resident:resident_bytes",
    },
    "tests/model/test_heads.py": {
        "sctbr.model._heads:encode",
        "sctbr.model._heads:least_squares_heads",
        "sctbr.model._heads:node_heads",
        "sctbr.model._heads:refine_final",
        "sctbr:_heads_lasso",  # the training objective of the heads, to check the final re-solve
        "sctbr.model._heads",  # to intercept refine_basis and see the heads it is given
        "sctbr.model._module:_padded_paths",
    },
    "tests/model/test_lam_path.py": {"sctbr.model._lam_path:DEFAULT_LAM_GRID"},
    "tests/model/test_module.py": {"sctbr.model._module:GATHER_MIN_ENVIRONMENTS"},
    "tests/model/test_phases.py": {"sctbr.model._phases:label", "sctbr.model._phases:plan_phases"},
    "tests/model/test_policy.py": {  # the default batch size, learning rate and stopping rule of a fit
        "sctbr.model._policy:DEFAULT_LR",
        "sctbr.model._policy:LARGE_DATA",
        "sctbr.model._policy:batch_size_for",
        "sctbr.model._policy:lr_for",
        "sctbr.model._policy:resolve",
    },
    "tests/model/test_quiet.py": {"sctbr.model._quiet:LIGHTNING_LOGGERS", "sctbr.model._quiet:quiet_training"},
    "tests/model/test_reliability.py": {"sctbr.model._checkpoint:current_version"},
    "tests/model/test_sparse_arc.py": {"sctbr.model._sparse_arc:lasso", "sctbr.model._sparse_arc:logistic_lasso"},
    "tests/model/test_trainingplan.py": {"sctbr.model._trainingplan:Phase"},  # phases built by hand for the schedule
    "tests/model/test_threads.py": {  # the thread rule and the optimiser choice are internals of the fit
        "sctbr.model._threads:ENV_VAR",
        "sctbr.model._threads:fit_threads",
        "sctbr._utils:torch_threads",
        "sctbr.model._trainingplan:adam",
        "sctbr.model._trainingplan:fused_adam_available",
        "sctbr.model:_threads",
    },
    "tests/model/test_targets.py": {
        "sctbr._constants:ENV_KEY",
        "sctbr._constants:X_KEY",
        "sctbr._constants:Y_KEY",
    },
    "tests/pl/test_pl.py": {"sctbr.pl._common:METHOD_COLORS", "sctbr.pl._tree.tree_layout"},
    "tests/pp/test_pp.py": {"sctbr.pp._normalize:log_normalize"},
    "tests/test_docs.py": {"sctbr._docs:SNIPPETS", "sctbr._docs:fill"},
    "tests/tl/helpers.py": {"sctbr.tl._refit:Fit"},  # a stand-in for one fit of select_n_latent
    "tests/tl/test_progress.py": {"sctbr.tl._refit:Fit"},  # a stand-in for one fit (random latents)
    "tests/tl/test_select.py": {"sctbr.tl._select:plateau"},
    "tests/tree/test_tree.py": {"sctbr._tree:UnknownNodeError"},
}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_names(source: str) -> set[str]:
    """The private ``sctbr`` names a test file imports: ``module:name`` for ``from module import name``, the module for
    ``import module``, and the dotted path of an attribute such as ``sctbr.pl._tree.tree_layout``."""
    found, inner = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sctbr":
            in_private_module = any(_private(p) for p in node.module.split("."))
            found |= {f"{node.module}:{a.name}" for a in node.names if in_private_module or _private(a.name)}
        elif isinstance(node, ast.Import):
            found |= {
                a.name for a in node.names if a.name.split(".")[0] == "sctbr" and any(map(_private, a.name.split(".")))
            }
        elif isinstance(node, ast.Attribute):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                inner.add(id(value))
                chain.append(value.attr)
                value = value.value
            if id(node) not in inner and isinstance(value, ast.Name) and value.id == "sctbr":
                if any(map(_private, chain)):
                    found.add(".".join(["sctbr", *reversed(chain)]))
    return found


TEST_SOURCES = sorted(TESTS.rglob("*.py"))


def test_tests_import_only_the_private_names_they_need():
    got = {}
    for path in TEST_SOURCES:
        names = private_names(path.read_text(encoding="utf-8"))
        if names:
            got[path.relative_to(TESTS.parent).as_posix()] = names
    new = {f: sorted(n - ALLOWED_PRIVATE_IMPORTS.get(f, set())) for f, n in got.items()}
    assert not {f: n for f, n in new.items() if n}, (
        "tests import private sctbr names: use the public API, or add them to ALLOWED_PRIVATE_IMPORTS with the reason"
    )
    stale = {f: sorted(n - got.get(f, set())) for f, n in ALLOWED_PRIVATE_IMPORTS.items()}
    assert not {f: n for f, n in stale.items() if n}, "ALLOWED_PRIVATE_IMPORTS lists names no test imports any more"


def test_private_names_are_found_in_every_form():
    source = (
        "from sctbr.model._data import stratified_split\nfrom sctbr._tree import UnknownNodeError\n"
        "from sctbr.model import TBR, _hidden\nimport sctbr.model._model as m\nfrom sctbr import EnvironmentTree\n"
        "def f():\n    return sctbr.pl._tree.tree_layout(sctbr.tl.tbr)\n"
    )
    assert private_names(source) == {
        "sctbr.model._data:stratified_split",
        "sctbr._tree:UnknownNodeError",
        "sctbr.model:_hidden",
        "sctbr.model._model",
        "sctbr.pl._tree.tree_layout",
    }
