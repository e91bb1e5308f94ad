"""sctbr: Tree-Based Regularization for single-cell data, in the scverse.

The subpackages load on first access (``sctbr.tl``, ``from sctbr import tl``), so that ``import sctbr`` stays
fast: ``sctbr.pp``, ``sctbr.pl``, ``sctbr.datasets``, ``sctbr.metrics`` and :class:`sctbr.EnvironmentTree` do
not import torch, scvi-tools or Lightning; ``sctbr.tl``, ``sctbr.model`` and ``sctbr.experiments`` do.
"""

from importlib import import_module as _import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily through __getattr__
    from sctbr import datasets, experiments, metrics, model, pl, pp, tl
    from sctbr._tree import EnvironmentTree

try:
    __version__ = _version("sctbr")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_SUBMODULES = ("datasets", "experiments", "metrics", "model", "pl", "pp", "tl")
_ATTRIBUTES = {"EnvironmentTree": "sctbr._tree"}

__all__ = ["EnvironmentTree", "datasets", "experiments", "metrics", "model", "pl", "pp", "tl", "__version__"]


def __getattr__(name: str):
    """Import a subpackage (or a top-level class) on first access and cache it in the package's namespace."""
    if name in _SUBMODULES:
        value = _import_module(f"{__name__}.{name}")
    elif name in _ATTRIBUTES:
        value = getattr(_import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_") or name.startswith("__")} | set(__all__))
