"""Rooted trees over named environments (cell types).

The :class:`EnvironmentTree` is the structure that Tree-Based Regularization works on: every node is an environment
(e.g. a cell type), every non-root node has exactly one incoming *arc*, and the effect of a node is the sum of the
arc-wise deltas along the path from the root to that node.  :meth:`EnvironmentTree.path_matrix` encodes those paths.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["EnvironmentTree", "UnknownNodeError"]

_MAX_LISTED = 5
# Characters that force a Newick label to be quoted.
_NEWICK_SPECIAL = frozenset(" \t\n\r()[]':;,")


class UnknownNodeError(KeyError, ValueError):
    """A node name that is not in the tree.

    Subclasses both :class:`KeyError` and :class:`ValueError`, so either can be caught.

    Examples
    --------
    >>> tree = EnvironmentTree({"a": None, "b": "a"})
    >>> try:
    ...     tree.parent("zzz")
    ... except KeyError as err:
    ...     print(err)
    unknown node 'zzz'; the tree has nodes 'a', 'b'
    """

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


def _fmt_names(names: Iterable[Any], limit: int = _MAX_LISTED) -> str:
    """Format up to ``limit`` names as ``'a', 'b', ... (N in total)``."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in total)"
    return shown


def _check_name(name: Any, what: str = "node") -> str:
    """Return ``name`` as a plain, non-empty :class:`str` or raise."""
    if isinstance(name, str):  # also numpy.str_
        name = str(name)
        if not name:
            raise ValueError(f"empty {what} name: node names must be non-empty strings")
        if "\x00" in name:
            raise ValueError(f"{what} name {name!r} contains a NUL character, which numpy and h5ad cannot store")
        return name
    raise TypeError(
        f"{what} name {name!r} has type {type(name).__name__}, but node names must be str; "
        "convert the labels to strings first (e.g. `str(x)` or `adata.obs[key].astype(str)`)"
    )


def _is_no_parent(value: Any) -> bool:
    """Whether ``value`` marks a root: ``None``, ``""``, NaN or ``pd.NA``."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return False


def _check_unique(names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dups = []
        for n in names:
            if n in seen and n not in dups:
                dups.append(n)
            seen.add(n)
        raise ValueError(f"duplicate node names in {what}: {_fmt_names(dups)}; every node name must be unique")


class EnvironmentTree:
    """Immutable rooted tree over named environments (e.g. cell types).

    Parameters
    ----------
    parents
        Mapping child -> parent.  The root maps to ``None`` (``""`` and NaN are also accepted as "no parent", since
        h5ad files and data frames cannot always store ``None``).  Nodes that only appear as parents are added as
        nodes too; such a node has no parent, i.e. it is the root.

    Notes
    -----
    :attr:`nodes` lists the nodes in breadth-first order from the root, the children of each node in order of
    first appearance in the input.  Arc ``i`` is the arc into ``nodes[i + 1]``.

    Examples
    --------
    >>> tree = EnvironmentTree({"T": "root", "B": "root", "CD4": "T", "CD8": "T"})
    >>> tree
    EnvironmentTree(n_nodes=5, n_leaves=3, depth=2, root='root')
    >>> tree.nodes
    ('root', 'T', 'B', 'CD4', 'CD8')
    >>> tree.arc_labels
    ('root->T', 'root->B', 'T->CD4', 'T->CD8')
    """

    __slots__ = ("_nodes", "_index", "_parent", "_children", "_parent_idx", "_depth", "_path_cache", "_hash")

    _nodes: tuple[str, ...]
    _index: dict[str, int]
    _parent: dict[str, str | None]
    _children: dict[str, tuple[str, ...]]
    _parent_idx: np.ndarray
    _depth: np.ndarray
    _path_cache: tuple[np.ndarray, np.ndarray] | None
    _hash: int | None

    def __init__(self, parents: Mapping[str, str | None]) -> None:
        if isinstance(parents, EnvironmentTree):
            parents = parents._parent
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

        index = {n: i for i, n in enumerate(order)}
        parent_idx = np.array([-1] + [index[parent_of[n]] for n in order[1:]], dtype=np.int64)  # type: ignore[index]
        depth = np.zeros(len(order), dtype=np.int64)
        for i in range(1, len(order)):  # BFS order: parents come before children
            depth[i] = depth[parent_idx[i]] + 1
        parent_idx.setflags(write=False)
        depth.setflags(write=False)

        _set = object.__setattr__
        _set(self, "_nodes", tuple(order))
        _set(self, "_index", index)
        _set(self, "_parent", {n: parent_of[n] for n in order})
        _set(self, "_children", {n: tuple(children[n]) for n in order})
        _set(self, "_parent_idx", parent_idx)
        _set(self, "_depth", depth)
        _set(self, "_path_cache", None)
        _set(self, "_hash", None)

    # ------------------------------------------------------------------ immutability, dunder methods

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"EnvironmentTree is immutable; cannot set {name!r} (use add_node() for a new tree)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"EnvironmentTree is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (EnvironmentTree, (dict(self._parent),))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return isinstance(node, str) and node in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnvironmentTree):
            return NotImplemented
        return self._parent == other._parent

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._parent.items())))
        return self._hash  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"EnvironmentTree(n_nodes={self.n_nodes}, n_leaves={len(self.leaves)}, depth={self.max_depth}, "
            f"root={self.root!r})"
        )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_newick(cls, s: str) -> EnvironmentTree:
        """Parse a Newick string.

        Branch lengths (``:0.1``) and ``[comments]`` are accepted and ignored, labels may be quoted
        (``'a b'``, with ``''`` for a literal quote) and the trailing ``;`` is optional.  Unlabelled nodes are named
        ``"node0"``, ``"node1"``, ... in pre-order (an unlabelled root is named ``"root"``), skipping names that
        are already used.  Unquoted labels are taken as written (underscores are *not* turned into spaces).

        Parameters
        ----------
        s
            The Newick string.

        Returns
        -------
        The parsed tree.

        Examples
        --------
        >>> tree = EnvironmentTree.from_newick("((CD4:0.1,CD8:0.2)T,'B cell')immune;")
        >>> tree.nodes
        ('immune', 'T', 'B cell', 'CD4', 'CD8')
        >>> EnvironmentTree.from_newick("((a,b),c);").nodes
        ('root', 'node0', 'c', 'a', 'b')
        """
        if not isinstance(s, str):
            raise TypeError(f"from_newick() expects a str, got {type(s).__name__}")
        root = _NewickParser(s).parse()

        # Collect labels (pre-order) and check uniqueness.
        preorder: list[list[Any]] = []
        stack = [root]
        while stack:
            rec = stack.pop()
            preorder.append(rec)
            stack.extend(reversed(rec[1]))
        labels = [rec[0] for rec in preorder if rec[0] is not None]
        _check_unique(labels, "the Newick string")
        used = set(labels)
        counter = 0
        for rec in preorder:
            if rec[0] is not None:
                continue
            if rec is root and "root" not in used:
                rec[0] = "root"
            else:
                while f"node{counter}" in used:
                    counter += 1
                rec[0] = f"node{counter}"
                counter += 1
            used.add(rec[0])

        parents: dict[str, str | None] = {root[0]: None}
        for rec in preorder:
            for child in rec[1]:
                parents[child[0]] = rec[0]
        return cls(parents)

    @classmethod
    def from_networkx(cls, g: nx.DiGraph) -> EnvironmentTree:
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

    @classmethod
    def from_linkage(
        cls,
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
        if Z.ndim != 2 or Z.shape[0] != n - 1 or Z.shape[1] < 2:
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
        used = np.zeros(2 * n - 1, dtype=bool)
        parents: dict[str, str | None] = {}
        for i, (a, b) in enumerate(ids):
            for cid in (a, b):
                if cid < 0 or cid >= n + i:
                    raise ValueError(
                        f"linkage row {i} refers to cluster {cid}, but only clusters 0..{n + i - 1} exist then"
                    )
                if used[cid]:
                    raise ValueError(f"linkage row {i} merges cluster {cid}, which was already merged before")
                used[cid] = True
                parents[names[cid] if cid < n else internal[cid - n]] = internal[i]
        parents[root_name] = None
        return cls(parents)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Return an h5ad-safe representation (e.g. for ``adata.uns``).

        Returns
        -------
        ``{"nodes": names, "parents": parent names}`` as numpy unicode arrays in :attr:`nodes` order; the root's
        parent is ``""``.

        Examples
        --------
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnvironmentTree:
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

    @classmethod
    def coerce(cls, obj: Any) -> EnvironmentTree:
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
        >>> EnvironmentTree.coerce("(a,b)r;") == EnvironmentTree.coerce({"a": "r", "b": "r"})
        True
        """
        if isinstance(obj, EnvironmentTree):
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

    @classmethod
    def balanced(cls, depth: int, branching: int = 2, *, prefix: str = "n") -> EnvironmentTree:
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

    def add_node(self, name: str, parent: str) -> EnvironmentTree:
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
        return EnvironmentTree(mapping)

    # ------------------------------------------------------------------ conversions

    def to_newick(self) -> str:
        """Write the tree in Newick format (without branch lengths).

        Labels are quoted when they contain whitespace or one of ``()[]':;,``.

        Returns
        -------
        The Newick string, ending in ``;``.

        Examples
        --------
        >>> EnvironmentTree({"T": "immune", "B cell": "immune"}).to_newick()
        "(T,'B cell')immune;"
        """
        out: list[str] = []
        stack: list[tuple[bool, str]] = [(False, self.root)]  # (is_literal_token, text or node)
        while stack:
            literal, item = stack.pop()
            if literal:
                out.append(item)
                continue
            kids = self._children[item]
            if not kids:
                out.append(_quote(item))
                continue
            out.append("(")
            stack.append((True, ")" + _quote(item)))
            for i in range(len(kids) - 1, -1, -1):
                stack.append((False, kids[i]))
                if i > 0:
                    stack.append((True, ","))
        return "".join(out) + ";"

    def to_networkx(self) -> nx.DiGraph:
        """Return a :class:`networkx.DiGraph` with edges parent -> child.

        Returns
        -------
        The graph, nodes added in :attr:`nodes` order and edges in :attr:`arcs` order.

        Examples
        --------
        >>> g = EnvironmentTree({"a": None, "b": "a"}).to_networkx()
        >>> list(g.edges)
        [('a', 'b')]
        """
        g = nx.DiGraph()
        g.add_nodes_from(self._nodes)
        g.add_edges_from(self.arcs)
        return g

    # ------------------------------------------------------------------ basic properties

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in breadth-first order from the root.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b", "d": "a"}).nodes
        ('a', 'b', 'd', 'c')
        """
        return self._nodes

    @property
    def root(self) -> str:
        """Name of the root.

        Examples
        --------
        >>> EnvironmentTree({"b": "a"}).root
        'a'
        """
        return self._nodes[0]

    @property
    def n_nodes(self) -> int:
        """Number of nodes.

        Examples
        --------
        >>> EnvironmentTree.balanced(4).n_nodes
        31
        """
        return len(self._nodes)

    @property
    def leaves(self) -> tuple[str, ...]:
        """Nodes without children, in :attr:`nodes` order.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b", "d": "a"}).leaves
        ('d', 'c')
        """
        return tuple(n for n in self._nodes if not self._children[n])

    @property
    def max_depth(self) -> int:
        """Largest depth of any node (0 for a single root).

        Examples
        --------
        >>> EnvironmentTree.balanced(3).max_depth
        3
        """
        return int(self._depth.max())

    @property
    def arcs(self) -> tuple[tuple[str, str], ...]:
        """Arcs as ``(parent, child)`` pairs; arc ``i`` goes into ``nodes[i + 1]``.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b"}).arcs
        (('a', 'b'), ('b', 'c'))
        """
        return tuple((self._parent[c], c) for c in self._nodes[1:])  # type: ignore[misc]

    @property
    def n_arcs(self) -> int:
        """Number of arcs (``n_nodes - 1``).

        Examples
        --------
        >>> EnvironmentTree.balanced(4).n_arcs
        30
        """
        return len(self._nodes) - 1

    @property
    def arc_labels(self) -> tuple[str, ...]:
        """Arc labels ``"parent->child"`` in arc order.

        Examples
        --------
        >>> EnvironmentTree({"b": "a"}).arc_labels
        ('a->b',)
        """
        return tuple(f"{p}->{c}" for p, c in self.arcs)

    # ------------------------------------------------------------------ per-node queries

    def _name(self, node: Any) -> str:
        """Check that ``node`` is in the tree and return it."""
        if isinstance(node, str) and node in self._index:
            return str(node)
        if not isinstance(node, str):
            raise TypeError(f"node name {node!r} has type {type(node).__name__}, but node names must be str")
        raise UnknownNodeError(f"unknown node {node!r}; the tree has nodes {_fmt_names(self._nodes)}")

    def parent(self, node: str) -> str | None:
        """Parent of ``node`` (``None`` for the root).

        Examples
        --------
        >>> tree = EnvironmentTree({"b": "a"})
        >>> tree.parent("b"), tree.parent("a")
        ('a', None)
        """
        return self._parent[self._name(node)]

    def children(self, node: str) -> tuple[str, ...]:
        """Children of ``node`` in input order.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "a"}).children("a")
        ('b', 'c')
        """
        return self._children[self._name(node)]

    def is_leaf(self, node: str) -> bool:
        """Whether ``node`` has no children.

        Examples
        --------
        >>> tree = EnvironmentTree({"b": "a"})
        >>> tree.is_leaf("b"), tree.is_leaf("a")
        (True, False)
        """
        return not self._children[self._name(node)]

    def depth(self, node: str) -> int:
        """Number of arcs between the root and ``node`` (root: 0).

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b"}).depth("c")
        2
        """
        return int(self._depth[self._index[self._name(node)]])

    def ancestors(self, node: str) -> tuple[str, ...]:
        """Ancestors of ``node``, root first, ``node`` excluded.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b"}).ancestors("c")
        ('a', 'b')
        """
        out = []
        p = self._parent[self._name(node)]
        while p is not None:
            out.append(p)
            p = self._parent[p]
        return tuple(reversed(out))

    def path(self, node: str) -> list[int]:
        """Indices of the arcs on the path from the root to ``node`` (root first; empty for the root).

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b", "d": "a"}).path("c")
        [0, 2]
        """
        i = self._index[self._name(node)]
        out = []
        while i > 0:
            out.append(i - 1)
            i = int(self._parent_idx[i])
        return out[::-1]

    def arc_index(self, child: str) -> int:
        """Index of the arc into ``child``.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "a"}).arc_index("c")
        1
        """
        i = self._index[self._name(child)]
        if i == 0:
            raise ValueError(f"{child!r} is the root and has no incoming arc")
        return i - 1

    def node_index(self, names: str | Iterable[str]) -> np.ndarray:
        """Positions of ``names`` in :attr:`nodes`.

        Parameters
        ----------
        names
            Node names (list, array, :class:`pandas.Series`, categorical ...).  A single str is treated as a list
            of one name.

        Returns
        -------
        Integer array with one position per name.

        Raises
        ------
        UnknownNodeError
            (a :class:`KeyError` and :class:`ValueError`) listing up to 5 unknown names.

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "a"}).node_index(["c", "a", "c"])
        array([2, 0, 2])
        """
        if isinstance(names, str):
            names = [names]
        target = names if isinstance(names, pd.Index) else pd.Index(list(names) if _is_iterator(names) else names)
        idx = np.asarray(pd.Index(self._nodes).get_indexer(target), dtype=np.intp)
        if idx.size and idx.min() < 0:
            bad = list(pd.unique(np.asarray(target, dtype=object)[idx < 0]))
            hint = ""
            if any(not isinstance(b, str) for b in bad):
                hint = "; node names are str: convert the labels with .astype(str)"
            raise UnknownNodeError(
                f"{len(bad)} name(s) are not nodes of the tree: {_fmt_names(bad)}{hint}; "
                f"the tree has nodes {_fmt_names(self._nodes)}"
            )
        return idx

    # ------------------------------------------------------------------ paths and distances

    def _full_path_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, indices)`` of the path matrix of all nodes (cached)."""
        if self._path_cache is None:
            depth = self._depth
            indptr = np.zeros(len(depth) + 1, dtype=np.int64)
            np.cumsum(depth, out=indptr[1:])
            nnz = int(indptr[-1])
            itype = np.int32 if max(nnz, len(depth)) < np.iinfo(np.int32).max else np.int64
            indices = np.empty(nnz, dtype=itype)
            cur = np.flatnonzero(depth > 0)
            slot = indptr[cur + 1] - 1  # fill each row from its end: deepest arc last
            while cur.size:
                indices[slot] = cur - 1
                cur = self._parent_idx[cur]
                slot = slot - 1
                keep = cur > 0
                cur, slot = cur[keep], slot[keep]
            indptr = indptr.astype(itype)
            indptr.setflags(write=False)
            indices.setflags(write=False)
            object.__setattr__(self, "_path_cache", (indptr, indices))
        return self._path_cache  # type: ignore[return-value]

    def path_matrix(self, nodes: Iterable[str] | None = None, *, dtype: Any = np.float32) -> sp.csr_matrix:
        """Sparse indicator of the arcs on each root-to-node path.

        Parameters
        ----------
        nodes
            Nodes (rows), e.g. the cell type of every cell; ``None`` means all :attr:`nodes`.
        dtype
            Data type of the matrix.

        Returns
        -------
        :class:`scipy.sparse.csr_matrix` of shape ``(len(nodes), n_arcs)`` with a 1 where the arc lies on the path
        from the root to the node.  ``path_matrix(nodes) @ delta`` sums arc-wise ``delta`` along each path.

        Examples
        --------
        >>> tree = EnvironmentTree({"b": "a", "c": "b", "d": "a"})
        >>> tree.path_matrix().toarray()
        array([[0., 0., 0.],
               [1., 0., 0.],
               [0., 1., 0.],
               [1., 0., 1.]], dtype=float32)
        >>> tree.path_matrix(["c", "c"]).toarray().tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
        """
        indptr, indices = self._full_path_pattern()
        shape = (self.n_nodes, self.n_arcs)
        data = np.ones(len(indices), dtype=dtype)
        full = sp.csr_matrix((data, indices.copy(), indptr.copy()), shape=shape)
        full.has_sorted_indices = True
        if nodes is None:
            return full
        rows = full[self.node_index(nodes)]
        return sp.csr_matrix(rows)

    def _lca_index(self, i: int, j: int) -> int:
        depth, parent = self._depth, self._parent_idx
        while depth[i] > depth[j]:
            i = int(parent[i])
        while depth[j] > depth[i]:
            j = int(parent[j])
        while i != j:
            i, j = int(parent[i]), int(parent[j])
        return i

    def distance(self, a: str, b: str) -> int:
        """Number of arcs on the tree path between ``a`` and ``b``.

        Examples
        --------
        >>> tree = EnvironmentTree({"b": "a", "c": "b", "d": "a"})
        >>> tree.distance("c", "d"), tree.distance("c", "c")
        (3, 0)
        """
        i, j = self._index[self._name(a)], self._index[self._name(b)]
        lca = self._lca_index(i, j)
        return int(self._depth[i] + self._depth[j] - 2 * self._depth[lca])

    def closest(self, node: str, candidates: Iterable[str]) -> str:
        """Candidate at the smallest tree distance from ``node``.

        Ties are broken in favour of the candidate that comes first in :attr:`nodes`.

        Parameters
        ----------
        node
            The query node.
        candidates
            Non-empty collection of nodes.

        Returns
        -------
        The closest candidate.

        Examples
        --------
        >>> tree = EnvironmentTree({"b": "a", "c": "b", "d": "a"})
        >>> tree.closest("c", ["d", "a"])
        'a'
        """
        if isinstance(candidates, str):
            candidates = [candidates]
        cands = [self._name(c) for c in candidates]
        if not cands:
            raise ValueError("closest() needs at least one candidate")
        return min(cands, key=lambda c: (self.distance(node, c), self._index[c]))


# ---------------------------------------------------------------------- helpers


def _find_cycle(parent_of: Mapping[str, str | None], start: str) -> str:
    """Follow parents from ``start`` (which never reaches a root) and return a node on the cycle."""
    seen: set[str] = set()
    node: str | None = start
    while node is not None and node not in seen:
        seen.add(node)
        node = parent_of[node]
    return node if node is not None else start


def _decode(x: Any) -> Any:
    if isinstance(x, bytes | np.bytes_):
        return bytes(x).decode("utf-8")
    return x


def _as_list(x: Any, what: str) -> list[Any]:
    if isinstance(x, str):
        raise TypeError(f"{what!r} must be a list or array of names, not a single str")
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{what!r} must be one-dimensional, got shape {x.shape}")
        return x.tolist()
    return list(x)


def _is_iterator(x: Any) -> bool:
    return isinstance(x, Iterator) or not hasattr(x, "__len__")


def _is_special(ch: str) -> bool:
    return ch in _NEWICK_SPECIAL or ch.isspace()


def _quote(name: str) -> str:
    if any(_is_special(ch) for ch in name):
        return "'" + name.replace("'", "''") + "'"
    return name


class _NewickParser:
    """Minimal iterative Newick parser producing records ``[label_or_None, children]``."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def _error(self, msg: str) -> ValueError:
        start = max(self.i - 20, 0)
        context = self.s[start : self.i + 20]
        return ValueError(f"invalid Newick string at position {self.i}: {msg} (near {context!r})")

    def _skip(self) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            ch = s[self.i]
            if ch.isspace():
                self.i += 1
            elif ch == "[":
                end = s.find("]", self.i)
                if end < 0:
                    raise self._error("unterminated [comment]")
                self.i = end + 1
            else:
                break

    def _label(self) -> str | None:
        self._skip()
        s, n = self.s, len(self.s)
        if self.i < n and s[self.i] == "'":
            parts = []
            self.i += 1
            while True:
                end = s.find("'", self.i)
                if end < 0:
                    raise self._error("unterminated quoted label")
                parts.append(s[self.i : end])
                if end + 1 < n and s[end + 1] == "'":  # '' is an escaped quote
                    parts.append("'")
                    self.i = end + 2
                else:
                    self.i = end + 1
                    break
            label = "".join(parts)
            return label or None
        start = self.i
        while self.i < n and not _is_special(s[self.i]):
            self.i += 1
        return s[start : self.i] or None

    def _length(self) -> None:
        self._skip()
        if self.i < len(self.s) and self.s[self.i] == ":":
            self.i += 1
            self._skip()
            start = self.i
            while self.i < len(self.s) and not _is_special(self.s[self.i]):
                self.i += 1
            text = self.s[start : self.i]
            try:
                float(text)
            except ValueError:
                raise self._error(f"branch length {text!r} is not a number") from None

    def parse(self) -> list[Any]:
        s, n = self.s, len(self.s)
        self._skip()
        if self.i >= n or s[self.i] == ";":
            raise ValueError("empty tree: the Newick string contains no nodes")
        stack: list[list[Any]] = []
        root: list[Any] | None = None
        expect_subtree = True
        while True:
            self._skip()
            if self.i >= n:
                if expect_subtree or stack:
                    raise self._error("unexpected end of string (unbalanced parentheses?)")
                break
            ch = s[self.i]
            if expect_subtree:
                if ch == "(":
                    rec: list[Any] = [None, []]
                    self.i += 1
                else:
                    if ch in ",);":
                        rec = [None, []]  # unlabelled leaf
                    else:
                        rec = [self._label(), []]
                    self._length()
                    expect_subtree = False
                if stack:
                    stack[-1][1].append(rec)
                elif root is None:
                    root = rec
                else:
                    raise self._error("more than one tree; separate trees end with ';'")
                if ch == "(":
                    stack.append(rec)
            elif ch == ",":
                if not stack:
                    raise self._error("',' outside parentheses")
                self.i += 1
                expect_subtree = True
            elif ch == ")":
                if not stack:
                    raise self._error("unmatched ')'")
                self.i += 1
                rec = stack.pop()
                rec[0] = self._label()
                self._length()
            elif ch == ";":
                if stack:
                    raise self._error("unclosed '('")
                self.i += 1
                self._skip()
                if self.i < n:
                    raise self._error("text after ';' (only one tree is supported)")
                break
            else:
                raise self._error(f"unexpected character {ch!r}; quote labels that contain spaces or punctuation")
        assert root is not None
        return root
