"""Building and coercing :class:`~sctbr.EnvironmentTree`: the checks of a mapping child -> parent and the
constructors from linkage matrices, networkx graphs, ``to_dict`` output and balanced shapes.

The public functions are the class's methods (``EnvironmentTree.from_linkage = classmethod(from_linkage)``), so
their first argument is the class (``cls``) or the tree (``self``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from sctbr._tree._names import (
    UnknownNodeError,
    _as_list,
    _check_name,
    _check_unique,
    _decode,
    _find_cycle,
    _fmt_names,
    _is_no_parent,
)

if TYPE_CHECKING:
    from sctbr._tree._structure import EnvironmentTree

__all__ = ["add_node", "balanced", "coerce", "from_dict", "from_linkage", "from_networkx", "to_dict"]


def parse_parents(parents: Any) -> tuple[list[str], dict[str, str | None], dict[str, list[str]]]:
    """Check a mapping child -> parent; return the nodes in breadth-first order, the parents and the children."""
    if not isinstance(parents, Mapping):
        raise TypeError(
            f"EnvironmentTree() expects a mapping child -> parent, got {type(parents).__name__}; "
            "use EnvironmentTree.coerce() for Newick strings, networkx graphs or to_dict() output"
        )
    if len(parents) == 0:
        raise ValueError("empty tree: give at least one node, e.g. {'root': None}")

    parent_of: dict[str, str | None] = {}
    for child, par in parents.items():
        child = _check_name(child)
        if _is_no_parent(par):
            parent_of[child] = None
            continue
        par = _check_name(par, f"parent of {child!r}: the")
        if par == child:
            raise ValueError(f"node {child!r} is its own parent; map the root to None instead")
        parent_of[child] = par
    # Nodes that only appear as parents have no parent of their own.
    for par in list(parent_of.values()):
        if par is not None and par not in parent_of:
            parent_of[par] = None

    roots = [n for n, p in parent_of.items() if p is None]
    if len(roots) > 1:
        raise ValueError(
            f"the tree has {len(roots)} roots ({_fmt_names(roots)}); exactly one node may lack a parent: "
            "map the others to a parent or add a common root"
        )

    children: dict[str, list[str]] = {n: [] for n in parent_of}
    for child, par in parent_of.items():
        if par is not None:
            children[par].append(child)

    if not roots:
        node = _find_cycle(parent_of, next(iter(parent_of)))
        raise ValueError(
            f"the tree has no root: every node has a parent, so the parents form a cycle through {node!r}; "
            "map exactly one node (the root) to None"
        )

    order = [roots[0]]
    queue = deque(order)
    while queue:
        node = queue.popleft()
        for c in children[node]:
            order.append(c)
            queue.append(c)
    if len(order) != len(parent_of):
        reached = set(order)
        stray = next(n for n in parent_of if n not in reached)
        node = _find_cycle(parent_of, stray)
        raise ValueError(
            f"node {stray!r} is not connected to the root {roots[0]!r}: the parents form a cycle through "
            f"{node!r}; break the cycle by giving one of its nodes a parent outside it"
        )

    return order, parent_of, children


def from_networkx(cls: type[EnvironmentTree], g: nx.DiGraph) -> EnvironmentTree:
    """Build a tree from a directed graph with edges parent -> child.

    Parameters
    ----------
    g
        A :class:`networkx.DiGraph` whose nodes are the (str) node names.

    Returns
    -------
    The tree; children are ordered by the node order of ``g``.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> import networkx as nx
    >>> g = nx.DiGraph([("root", "a"), ("root", "b"), ("a", "c")])
    >>> EnvironmentTree.from_networkx(g).parent("c")
    'a'
    """
    if not isinstance(g, nx.DiGraph):
        raise TypeError(
            f"from_networkx() expects a networkx.DiGraph with edges parent -> child, got {type(g).__name__}; "
            "orient an undirected tree first, e.g. with networkx.bfs_tree(g, root)"
        )
    if g.number_of_nodes() == 0:
        raise ValueError("empty tree: the graph has no nodes")
    parents: dict[Any, Any] = {}
    for node in g.nodes:
        preds = list(g.predecessors(node))
        if len(preds) > 1:
            raise ValueError(
                f"node {node!r} has {len(preds)} parents ({_fmt_names(preds)}); in a tree every node has at "
                "most one incoming edge"
            )
        parents[node] = preds[0] if preds else None
    return cls(parents)


def from_linkage(
    cls: type[EnvironmentTree],
    Z: Any,
    leaf_names: Iterable[str],
    *,
    internal_prefix: str = "node",
    root_name: str = "root",
) -> EnvironmentTree:
    """Build a tree from a scipy hierarchical-clustering linkage matrix.

    Parameters
    ----------
    Z
        Linkage matrix of shape ``(n - 1, 4)`` as returned by :func:`scipy.cluster.hierarchy.linkage`.
    leaf_names
        The ``n`` leaf names, in the order the linkage indexes them.
    internal_prefix
        Cluster ``n + i`` (row ``i``) is named ``f"{internal_prefix}{i}"``.
    root_name
        Name of the final merge.

    Returns
    -------
    The tree; for a single leaf (empty linkage) a tree with that one node.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> Z = linkage(np.array([[0.0], [0.1], [5.0]]))
    >>> tree = EnvironmentTree.from_linkage(Z, ["a", "b", "c"])
    >>> tree.parent("a"), tree.parent("c"), tree.parent("node0")
    ('node0', 'root', 'root')
    """
    if isinstance(leaf_names, str):
        raise TypeError("leaf_names must be a sequence of str, not a single str")
    names = [_check_name(n, "leaf") for n in leaf_names]
    n = len(names)
    if n == 0:
        raise ValueError("empty tree: leaf_names is empty")
    _check_unique(names, "leaf_names")
    Z = np.asarray(Z, dtype=float)
    if n == 1:
        if Z.size != 0:
            raise ValueError(f"a single leaf needs an empty linkage matrix, got shape {Z.shape}")
        return cls({names[0]: None})
    if Z.ndim != 2 or Z.shape[0] != n - 1 or Z.shape[1] != 4:
        raise ValueError(
            f"linkage matrix has shape {Z.shape}, expected ({n - 1}, 4) for {n} leaves; "
            "pass the output of scipy.cluster.hierarchy.linkage and one name per observation"
        )
    prefix = _check_name(internal_prefix, "internal_prefix") if internal_prefix != "" else ""
    root_name = _check_name(root_name, "root")
    internal = [f"{prefix}{i}" for i in range(n - 2)] + [root_name]
    clash = [name for name in internal if name in set(names)]
    if root_name in internal[:-1]:
        clash.append(root_name)
    if clash:
        raise ValueError(
            f"internal node names clash with leaf names: {_fmt_names(clash)}; "
            "choose another internal_prefix or root_name"
        )
    ids = Z[:, :2]
    if not np.all(np.isfinite(ids)) or not np.array_equal(ids, np.round(ids)):
        raise ValueError("linkage matrix columns 0 and 1 must hold integer cluster ids")
    ids = ids.astype(np.int64)
    from scipy.cluster.hierarchy import is_valid_linkage

    Z = np.ascontiguousarray(Z, dtype=np.float64)
    if not is_valid_linkage(Z, throw=False, warning=False):
        raise ValueError(_linkage_problem(Z, ids, n))
    parents: dict[str, str | None] = {}
    for i, (a, b) in enumerate(ids):
        for cid in (a, b):
            parents[names[cid] if cid < n else internal[cid - n]] = internal[i]
    parents[root_name] = None
    return cls(parents)


def _linkage_problem(Z: np.ndarray, ids: np.ndarray, n: int) -> str:
    """What :func:`scipy.cluster.hierarchy.is_valid_linkage` rejects, named by row where it is a merge's ids."""
    from scipy.cluster.hierarchy import is_valid_linkage

    used = np.zeros(2 * n - 1, dtype=bool)
    for i, (a, b) in enumerate(ids):
        for cid in (a, b):
            if cid < 0 or cid >= n + i:
                return f"linkage row {i} refers to cluster {cid}, but only clusters 0..{n + i - 1} exist then"
            if used[cid]:
                return f"linkage row {i} merges cluster {cid}, which was already merged before"
            used[cid] = True
    try:
        is_valid_linkage(Z, throw=True, name="Z")
    except (ValueError, TypeError) as err:
        return f"invalid linkage matrix ({err}); pass the output of scipy.cluster.hierarchy.linkage"
    return "invalid linkage matrix; pass the output of scipy.cluster.hierarchy.linkage"  # pragma: no cover


def to_dict(self: EnvironmentTree) -> dict[str, np.ndarray]:
    """Return an h5ad-safe representation (e.g. for ``adata.uns``).

    Returns
    -------
    ``{"nodes": names, "parents": parent names}`` as numpy unicode arrays in :attr:`nodes` order; the root's
    parent is ``""``.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> d = EnvironmentTree({"a": None, "b": "a"}).to_dict()
    >>> d["nodes"].tolist(), d["parents"].tolist()
    (['a', 'b'], ['', 'a'])
    >>> EnvironmentTree.from_dict(d) == EnvironmentTree({"b": "a"})
    True
    """
    return {
        "nodes": np.array(self._nodes, dtype=str),
        "parents": np.array(["" if p is None else p for p in self._parent.values()], dtype=str),
    }


def from_dict(cls: type[EnvironmentTree], d: Mapping[str, Any]) -> EnvironmentTree:
    """Inverse of :meth:`to_dict`.

    Parameters
    ----------
    d
        Mapping with keys ``"nodes"`` and ``"parents"`` (arrays or lists of equal length; ``""`` or ``None``
        marks the root).  Other keys are ignored.

    Returns
    -------
    The tree.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> tree = EnvironmentTree.from_dict({"nodes": ["r", "x"], "parents": ["", "r"], "groupby": "cell_type"})
    >>> tree.parent("x")
    'r'
    """
    if not isinstance(d, Mapping) or "nodes" not in d or "parents" not in d:
        raise ValueError("from_dict() expects a mapping with keys 'nodes' and 'parents' (see to_dict())")
    nodes = [_check_name(_decode(n)) for n in _as_list(d["nodes"], "nodes")]
    parents = [_decode(p) for p in _as_list(d["parents"], "parents")]
    if len(nodes) != len(parents):
        raise ValueError(f"'nodes' has {len(nodes)} entries but 'parents' has {len(parents)}; they must match")
    if not nodes:
        raise ValueError("empty tree: 'nodes' is empty")
    _check_unique(nodes, "'nodes'")
    known = set(nodes)
    mapping: dict[str, str | None] = {}
    for node, par in zip(nodes, parents, strict=True):
        if _is_no_parent(par):
            mapping[node] = None
            continue
        par = _check_name(par, f"parent of {node!r}: the")
        if par not in known:
            raise UnknownNodeError(
                f"parent {par!r} of node {node!r} is not listed in 'nodes'; add it to 'nodes' "
                "(with parent '' if it is the root)"
            )
        mapping[node] = par
    return cls(mapping)


def coerce(cls: type[EnvironmentTree], obj: Any) -> EnvironmentTree:
    """Turn ``obj`` into an :class:`EnvironmentTree`.

    Parameters
    ----------
    obj
        An :class:`EnvironmentTree` (returned as is), a :meth:`to_dict` output (mapping with ``"nodes"`` and
        ``"parents"``), any other mapping child -> parent, a Newick string or a :class:`networkx.DiGraph` with
        edges parent -> child.

    Returns
    -------
    The tree.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> EnvironmentTree.coerce("(a,b)r;") == EnvironmentTree.coerce({"a": "r", "b": "r"})
    True
    """
    if isinstance(obj, cls):
        return obj
    if isinstance(obj, Mapping):
        if "nodes" in obj and "parents" in obj:
            return cls.from_dict(obj)
        return cls(obj)
    if isinstance(obj, str):
        return cls.from_newick(obj)
    if isinstance(obj, nx.DiGraph):
        return cls.from_networkx(obj)
    raise TypeError(
        f"cannot make an EnvironmentTree from {type(obj).__name__}; expected an EnvironmentTree, a mapping "
        "child -> parent, a to_dict() output ({'nodes': ..., 'parents': ...}), a Newick string or a "
        "networkx.DiGraph with edges parent -> child"
    )


def balanced(cls: type[EnvironmentTree], depth: int, branching: int = 2, *, prefix: str = "n") -> EnvironmentTree:
    """Build a balanced tree.

    Parameters
    ----------
    depth
        Number of levels below the root (0 gives a single root).
    branching
        Number of children of each internal node.
    prefix
        Non-root nodes are named ``prefix`` followed by the positions of the children along the path, e.g.
        ``"n01"`` is the second child of the first child of the root.  With more than 10 children per node the
        positions are separated by ``"_"`` (``"n10_3"``).

    Returns
    -------
    The tree, with ``(branching ** (depth + 1) - 1) / (branching - 1)`` nodes.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> EnvironmentTree.balanced(2).nodes
    ('root', 'n0', 'n1', 'n00', 'n01', 'n10', 'n11')
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    if isinstance(branching, bool) or not isinstance(branching, int | np.integer) or branching < 1:
        raise ValueError(f"branching must be a positive int, got {branching!r}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    sep = "" if branching <= 10 else "_"
    parents: dict[str, str | None] = {"root": None}
    level = [("root", "")]
    for _ in range(int(depth)):
        nxt = []
        for name, path in level:
            for k in range(int(branching)):
                sub = f"{path}{sep}{k}" if path else str(k)
                child = f"{prefix}{sub}"
                parents[child] = name
                nxt.append((child, sub))
        level = nxt
    return cls(parents)


def add_node(self: EnvironmentTree, name: str, parent: str) -> EnvironmentTree:
    """Return a new tree with one extra leaf.

    Parameters
    ----------
    name
        Name of the new node; must not be in the tree yet.
    parent
        Existing node to attach it to (as its last child).

    Returns
    -------
    The new tree; this one is unchanged.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> tree = EnvironmentTree({"a": None, "b": "a"})
    >>> tree.add_node("c", "a").children("a")
    ('b', 'c')
    """
    name = _check_name(name)
    parent = self._name(parent)
    if name in self._index:
        raise ValueError(f"node {name!r} is already in the tree; choose a new name")
    mapping = dict(self._parent)
    mapping[name] = parent
    return type(self)(mapping)
