"""The :class:`EnvironmentTree` class: nodes and arcs, per-node queries, paths, the path matrix and distances.

The constructors and conversions are functions of :mod:`sctbr._tree._build` (building and coercion) and
:mod:`sctbr._tree._newick` (Newick I/O), bound to the class below, where each carries its own documentation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sctbr._tree import _build, _newick
from sctbr._tree._names import UnknownNodeError, _fmt_names, _is_iterator

__all__ = ["EnvironmentTree"]


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
        order, parent_of, children = _build.parse_parents(parents)

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

    # ------------------------------------------------------------------ constructors and conversions
    # Documented where they are written: Newick I/O in _newick.py, building and coercion in _build.py.

    from_newick = classmethod(_newick.from_newick)
    to_newick = _newick.to_newick
    from_networkx = classmethod(_build.from_networkx)
    from_linkage = classmethod(_build.from_linkage)
    from_dict = classmethod(_build.from_dict)
    to_dict = _build.to_dict
    coerce = classmethod(_build.coerce)
    balanced = classmethod(_build.balanced)
    add_node = _build.add_node

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

    @property
    def parent_index(self) -> np.ndarray:
        """Index in :attr:`nodes` of every node's parent, ``-1`` for the root (read-only int64 array).

        Examples
        --------
        >>> EnvironmentTree({"b": "a", "c": "b", "d": "a"}).parent_index.tolist()
        [-1, 0, 0, 1]
        """
        return self._parent_idx

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
