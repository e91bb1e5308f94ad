"""Rooted trees over named environments (cell types).

The :class:`EnvironmentTree` is the structure that Tree-Based Regularization works on: every node is an environment
(e.g. a cell type), every non-root node has exactly one incoming *arc*, and the effect of a node is the sum of the
arc-wise deltas along the path from the root to that node.  :meth:`EnvironmentTree.path_matrix` encodes those paths.

The package keeps one concern per module:

- :mod:`sctbr._tree._structure`: the :class:`EnvironmentTree` class (queries, paths, path matrix, distances);
- :mod:`sctbr._tree._build`: building and coercion (checks of a child -> parent mapping, linkage, networkx, dict,
  balanced trees, adding a node);
- :mod:`sctbr._tree._newick`: the Newick parser and writer;
- :mod:`sctbr._tree._names`: node-name checks, their formatting in messages and :class:`UnknownNodeError`.
"""

from __future__ import annotations

from sctbr._tree._names import UnknownNodeError, _fmt_names  # noqa: F401  (_fmt_names: used by sctbr.model)
from sctbr._tree._structure import EnvironmentTree

__all__ = ["EnvironmentTree", "UnknownNodeError"]
