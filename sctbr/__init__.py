"""sctbr: Tree-Based Regularization for single-cell data, in the scverse."""

from importlib.metadata import PackageNotFoundError, version

from sctbr import datasets, experiments, metrics, model, pl, pp, tl  # noqa: E402
from sctbr._tree import EnvironmentTree

try:
    __version__ = version("sctbr")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["EnvironmentTree", "datasets", "experiments", "metrics", "model", "pl", "pp", "tl", "__version__"]
