"""The environment tree of the cell types (``sctbr.pp.environment_tree``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import networkx as nx
import numpy as np
import pandas as pd
from anndata import AnnData

import sctbr._logging as logg
from sctbr._constants import TREE_KEY
from sctbr._tree import EnvironmentTree
from sctbr._utils import record_defaults
from sctbr._validation import check_choice, check_int, check_str
from sctbr.pp._normalize import log_normalize, looks_like_counts

_N_PCS = 50  # Scanpy's default number of principal components
#: Methods of :func:`scipy.cluster.hierarchy.linkage`.
_LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")


def _categories(adata: AnnData, groupby: str) -> list[str]:
    """The categories of ``obs[groupby]``, checked: categorical, str, all used, every cell labelled."""
    if not isinstance(groupby, str):
        raise TypeError(f"`groupby` must be the name of an obs column, got {type(groupby).__name__}.")
    if groupby not in adata.obs:
        raise KeyError(f"`groupby` column {groupby!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    col = adata.obs[groupby]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        raise TypeError(
            f"adata.obs[{groupby!r}] must be categorical (its categories become the tree's leaves), got "
            f"{col.dtype}; convert it with adata.obs[{groupby!r}] = adata.obs[{groupby!r}].astype(str).astype('category')."
        )
    categories = list(col.cat.categories)
    not_str = [c for c in categories if not isinstance(c, str)]
    if not_str:
        raise TypeError(
            f"The categories of adata.obs[{groupby!r}] must be strings (tree node names), got {not_str[:5]}; "
            f"convert them with adata.obs[{groupby!r}] = adata.obs[{groupby!r}].astype(str).astype('category')."
        )
    if col.isna().any():
        raise ValueError(
            f"{int(col.isna().sum())} cells have no label in adata.obs[{groupby!r}]; drop them first "
            "(e.g. adata = adata[adata.obs[groupby].notna()].copy())."
        )
    counts = col.value_counts()
    unused = [c for c in categories if counts.get(c, 0) == 0]
    if unused:
        raise ValueError(
            f"{len(unused)} categories of adata.obs[{groupby!r}] have no cells: {unused[:10]}. Remove them with "
            f"adata.obs[{groupby!r}] = adata.obs[{groupby!r}].cat.remove_unused_categories()."
        )
    return [str(c) for c in categories]


def _free_names(categories: list[str]) -> tuple[str, str]:
    """An internal-node prefix and a root name that clash with no category."""
    taken = set(categories)
    n_internal = max(len(categories) - 2, 0)
    for pad in range(100):
        prefix, root = "_" * pad + "node", "_" * pad + "root"
        names = {f"{prefix}{i}" for i in range(n_internal)} | {root}
        if not names & taken:
            return prefix, root
    raise ValueError("Could not find internal node names that differ from the category names.")  # pragma: no cover


def _stored_linkage(adata: AnnData, key: str, categories: list[str], params: dict[str, Any]) -> np.ndarray | None:
    """The linkage of a stored Scanpy dendrogram if it matches the current categories and parameters."""
    if key not in adata.uns:
        return None
    stored = adata.uns[key]
    if not isinstance(stored, Mapping) or "linkage" not in stored:
        return None
    from scipy.cluster.hierarchy import is_valid_linkage

    linkage = np.ascontiguousarray(stored["linkage"], dtype=np.float64)
    n = len(categories)
    if linkage.ndim != 2 or linkage.shape != (n - 1, 4) or not is_valid_linkage(linkage):
        return None  # not a linkage of these categories (e.g. edited or truncated): recomputed
    ordered = [str(c) for c in np.asarray(stored.get("categories_ordered", []), dtype=object)]
    idx = np.asarray(stored.get("categories_idx_ordered", []), dtype=int)
    # The linkage indexes the categories in their order at the time: check that this order still holds.
    if len(ordered) != n or len(idx) != n or sorted(idx.tolist()) != list(range(n)):
        return None
    if any(categories[i] != name for i, name in zip(idx, ordered, strict=True)):
        return None
    for name, value in params.items():
        if value is not None and name in stored and str(stored[name]) != str(value):
            return None
    return linkage


def _representation(adata: AnnData, use_rep: str | None, n_pcs: int | None) -> tuple[Any, int | None]:
    """The matrix Scanpy's dendrogram would average per category, and the ``n_pcs`` to apply to it.

    Same choice as Scanpy (``obsm[use_rep]``; else ``obsm["X_pca"]``; else ``X`` for at most 50 genes), except
    that a missing PCA is computed on log-normalised counts in a private AnnData instead of on ``X`` and stored.
    """
    import scanpy as sc

    if use_rep is not None and use_rep != "X":
        if use_rep not in adata.obsm:
            raise KeyError(f"`use_rep` {use_rep!r} not found in adata.obsm ({list(adata.obsm)}).")
        return np.asarray(adata.obsm[use_rep]), n_pcs
    if use_rep is None and n_pcs != 0 and "X_pca" in adata.obsm:
        return np.asarray(adata.obsm["X_pca"]), n_pcs
    if adata.isbacked:
        raise ValueError("`adata` is backed on disk; load it to memory or pass `use_rep` with a key of obsm.")
    x = adata.X
    if use_rep == "X" or n_pcs == 0 or adata.n_vars <= _N_PCS:
        return (x.toarray() if hasattr(x, "toarray") else np.asarray(x)), None
    data = log_normalize(x) if looks_like_counts(x) else x
    n_comps = min(n_pcs or _N_PCS, adata.n_obs - 1, adata.n_vars - 1)
    var = pd.DataFrame(index=adata.var_names.copy())
    if "highly_variable" in adata.var:
        var["highly_variable"] = adata.var["highly_variable"].to_numpy(dtype=bool)
    work = AnnData(X=data, obs=pd.DataFrame(index=adata.obs_names.copy()), var=var)
    sc.pp.pca(work, n_comps=n_comps, random_state=0)
    logg.info(f"environment_tree: computed {n_comps} principal components of log-normalised X (not stored)")
    return work.obsm["X_pca"], None


def _dendrogram(
    adata: AnnData, groupby: str, *, use_rep: str | None, n_pcs: int | None, linkage_method: str, cor_method: str
) -> dict[str, Any]:
    """Scanpy's dendrogram information, computed on a private AnnData so that ``adata`` is not modified."""
    import scanpy as sc

    rep, rep_n_pcs = _representation(adata, use_rep, n_pcs)
    work = AnnData(obs=adata.obs[[groupby]].copy(), obsm={"rep": rep})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        info = sc.tl.dendrogram(
            work,
            groupby,
            use_rep="rep",
            n_pcs=rep_n_pcs,
            cor_method=cor_method,
            linkage_method=linkage_method,
            inplace=False,
        )
    info["use_rep"] = use_rep
    return info


def _linkage_of(rep: Any, labels: np.ndarray, n_pcs: int | None, linkage_method: str, cor_method: str) -> tuple:
    """Scanpy's dendrogram linkage of the categories of ``labels`` (in sorted order) on ``rep``."""
    import scanpy as sc

    cats = sorted(set(labels.tolist()))
    obs = pd.DataFrame({"g": pd.Categorical(labels, categories=cats)})
    obs.index = obs.index.astype(str)
    work = AnnData(obs=obs, obsm={"rep": np.asarray(rep)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = sc.tl.dendrogram(
            work,
            "g",
            use_rep="rep",
            n_pcs=n_pcs,
            cor_method=cor_method,
            linkage_method=linkage_method,
            inplace=False,
        )
    return np.asarray(info["linkage"], dtype=float), cats


def _nested_tree(
    adata: AnnData,
    groupby: str,
    within: str,
    categories: list[str],
    *,
    use_rep: str | None,
    n_pcs: int | None,
    linkage_method: str,
    cor_method: str,
) -> EnvironmentTree:
    """The dendrogram of the ``within`` groups with every group's categories attached as its own dendrogram."""
    groups = _categories(adata, within)
    if len(groups) < 2:
        raise ValueError(f"adata.obs[{within!r}] has a single group; use environment_tree without `within`.")
    fine = adata.obs[groupby].astype(str).to_numpy()
    coarse = adata.obs[within].astype(str).to_numpy()
    members: dict[str, list[str]] = {g: [] for g in groups}
    for c in categories:
        in_groups = sorted(set(coarse[fine == c].tolist()))
        if len(in_groups) != 1:
            raise ValueError(
                f"Category {c!r} of adata.obs[{groupby!r}] lies in {len(in_groups)} groups of adata.obs[{within!r}] "
                f"({in_groups[:5]}); with `within` every category must lie in exactly one group."
            )
        members[in_groups[0]].append(c)
    rep, rep_n_pcs = _representation(adata, use_rep, n_pcs)
    rep = np.asarray(rep)
    names = set(categories)
    linkage, order = _linkage_of(rep, coarse, rep_n_pcs, linkage_method, cor_method)
    prefix, root = _free_names(categories + groups)
    top = EnvironmentTree.from_linkage(linkage, order, internal_prefix=prefix, root_name=root)
    # a group with one category is replaced by it
    rename = {g: members[g][0] for g in groups if len(members[g]) == 1}
    clash = [g for g in groups if g in names and rename.get(g) != g]
    if clash or set(top.nodes) - set(groups) & names:
        raise ValueError(f"Group names of adata.obs[{within!r}] clash with categories of adata.obs[{groupby!r}].")
    parents: dict[str, str | None] = {}
    for node in top.nodes:
        parent = top.parent(node)
        parents[rename.get(node, node)] = None if parent is None else rename.get(parent, parent)
    for g in groups:
        if len(members[g]) < 2:
            continue
        cells = coarse == g
        sub_linkage, sub_order = _linkage_of(rep[cells], fine[cells], rep_n_pcs, linkage_method, cor_method)
        sub = EnvironmentTree.from_linkage(sub_linkage, sub_order, internal_prefix=f"{g}/node", root_name=g)
        for node in sub.nodes:
            if node != g:
                if node in parents:
                    raise ValueError(f"Node name {node!r} is used twice in the nested tree.")
                parents[node] = sub.parent(node)
    return EnvironmentTree(parents)


def environment_tree(
    adata: AnnData,
    groupby: str,
    *,
    tree: Any = None,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    linkage_method: str = "complete",
    cor_method: Literal["pearson", "kendall", "spearman"] = "pearson",
    key_added: str | None = None,
    within: str | None = None,
    inplace: bool = True,
) -> EnvironmentTree | None:
    """Build the tree of environments (cell types) and store it where :func:`sctbr.tl.tbr` finds it.

    By default the tree is Scanpy's dendrogram of the categories of ``obs[groupby]``, as in the paper: the
    hierarchical clustering of the categories' mean representations (:func:`scanpy.tl.dendrogram`). The
    categories become the leaves; the merges become internal nodes ``"node0"``, ``"node1"``, ... and the
    ``"root"`` (prefixed with underscores if a category already has such a name). An existing
    ``uns["dendrogram_<groupby>"]`` is reused when it matches the current categories and the requested
    methods; otherwise it is computed and stored there (so :func:`scanpy.pl.dendrogram` can draw it).

    The representation is ``obsm[use_rep]``; by default ``obsm["X_pca"]``, or ``X`` itself for at most 50
    genes. When neither exists, 50 principal components (at most ``n_pcs``) of ``X`` are computed, after
    ``normalize_total(target_sum=1e4)`` and ``log1p`` if ``X`` holds counts; they are used for the dendrogram
    only and not stored. ``X`` is never modified.

    Alternatively pass your own ``tree`` (e.g. a known differentiation hierarchy): it is validated against
    the categories and stored the same way.

    With ``within`` (a coarser column, e.g. the cell types of the sub-clusters of :func:`subclusters`) the tree
    follows the coarse groups: Scanpy's dendrogram of the groups (internal nodes ``"node<i>"``, ``"root"``), and
    under every group the dendrogram of its categories computed on its own cells (internal nodes
    ``"<group>/node<i>"``; the group itself is the subtree's root). A group with a single category is replaced by
    that category. Every category must lie in one group. Scanpy's ``uns["dendrogram_*"]`` is not written.

    Parameters
    ----------
    adata
        Cells x genes.
    groupby
        Categorical column of ``adata.obs`` with string categories (cell types), each with at least one cell.
    tree
        A user-given tree instead of the dendrogram: a child -> parent mapping, a Newick string, a
        :class:`networkx.DiGraph` or an :class:`~sctbr.EnvironmentTree`. Every category must be a node (leaf or
        internal); leaves without cells only trigger a warning.
    use_rep
        Key of ``adata.obsm`` (or ``"X"``) with the representation to average per category.
    n_pcs
        Number of its leading components to use (``None``: all).
    linkage_method
        Linkage of :func:`scipy.cluster.hierarchy.linkage` (Scanpy's default ``"complete"``).
    cor_method
        Correlation between category means, turned into the distance ``1 - correlation``.
    key_added
        Key of ``adata.uns`` for the tree (default ``"environment_tree"``, where :func:`sctbr.tl.tbr` looks).
    within
        Categorical column of ``adata.obs`` with coarser groups that nest the categories of ``groupby``; the tree
        follows them (see above). Not with ``tree``.
    inplace
        Write the tree into ``adata`` and return ``None`` (scanpy's ``inplace``, as :func:`scanpy.tl.dendrogram`);
        ``False`` returns the tree and leaves ``adata`` untouched (a computed dendrogram is not stored either).

    Returns
    -------
    ``None`` with ``inplace=True``: ``adata.uns[key_added]`` then holds :meth:`~sctbr.EnvironmentTree.to_dict`
    plus ``"groupby"`` and ``"source"`` (``"dendrogram_<groupby>"`` or ``"user"``; read it back with
    ``sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])``), ``adata.uns["sctbr"]`` records ``groupby``
    and the tree's key so that ``sctbr.tl.tbr(adata, target=...)`` needs neither, and a computed dendrogram goes to
    ``adata.uns["dendrogram_<groupby>"]``. With ``inplace=False`` the :class:`~sctbr.EnvironmentTree`.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> sctbr.pp.environment_tree(adata, "cell_type")
    >>> tree = sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])
    >>> sorted(tree.leaves) == sorted(adata.obs["cell_type"].cat.categories)
    True
    >>> tree = sctbr.pp.environment_tree(adata, "cell_type", tree={c: "PBMC" for c in tree.leaves}, inplace=False)
    >>> tree.root
    'PBMC'
    """
    categories = _categories(adata, groupby)
    check_str("use_rep", use_rep, none_ok=True, fix="A key of adata.obsm, 'X', or None.")
    check_int("n_pcs", n_pcs, low=0, none_ok=True, fix="Principal components, e.g. 50, or None.")
    check_choice("linkage_method", linkage_method, _LINKAGES)
    check_choice("cor_method", cor_method, ("pearson", "kendall", "spearman"))
    check_str("within", within, none_ok=True, fix="A categorical column of adata.obs with coarser groups, or None.")
    key = TREE_KEY if key_added is None else key_added
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    if not isinstance(inplace, bool):
        raise TypeError(f"`inplace` must be True or False, got {inplace!r}.")

    dendrogram_key = f"dendrogram_{groupby}"
    dendrogram_info = None
    if within is not None:
        if tree is not None:
            raise ValueError("Pass either `tree` or `within`, not both.")
        result = _nested_tree(
            adata,
            groupby,
            within,
            categories,
            use_rep=use_rep,
            n_pcs=n_pcs,
            linkage_method=linkage_method,
            cor_method=cor_method,
        )
        source = f"dendrogram_{within}/{groupby}"
    elif tree is not None:
        if not isinstance(tree, EnvironmentTree | Mapping | str | nx.DiGraph):
            raise TypeError(
                f"`tree` must be a child -> parent mapping, a Newick string, a networkx.DiGraph or an "
                f"EnvironmentTree, got {type(tree).__name__}."
            )
        result = EnvironmentTree.coerce(tree)
        missing = [c for c in categories if c not in result]
        if missing:
            raise ValueError(
                f"{len(missing)} categories of adata.obs[{groupby!r}] are not nodes of the given tree: "
                f"{missing[:10]}. Add them to the tree, or subset the cells to the tree's nodes."
            )
        empty = [leaf for leaf in result.leaves if leaf not in set(categories)]
        if empty:
            warnings.warn(
                f"{len(empty)} leaves of the tree have no cells in adata.obs[{groupby!r}]: {empty[:10]}. Their "
                "heads are not fitted.",
                UserWarning,
                stacklevel=2,
            )
        source = "user"
    else:
        if len(categories) < 2:
            raise ValueError(
                f"adata.obs[{groupby!r}] has a single category ({categories[0]!r}); a tree needs at least two."
            )
        params = {"linkage_method": linkage_method, "cor_method": cor_method, "use_rep": use_rep}
        linkage = _stored_linkage(adata, dendrogram_key, categories, params)
        if linkage is None:
            dendrogram_info = _dendrogram(
                adata,
                groupby,
                use_rep=use_rep,
                n_pcs=n_pcs,
                linkage_method=linkage_method,
                cor_method=cor_method,
            )
            linkage = np.asarray(dendrogram_info["linkage"], dtype=float)
        else:
            logg.info(f"environment_tree: reusing adata.uns[{dendrogram_key!r}]")
        prefix, root = _free_names(categories)
        result = EnvironmentTree.from_linkage(linkage, categories, internal_prefix=prefix, root_name=root)
        source = dendrogram_key

    if not inplace:
        return result
    # Write only after everything succeeded.
    if dendrogram_info is not None:
        if dendrogram_key in adata.uns:
            logg.info(f"environment_tree: recomputed the stale adata.uns[{dendrogram_key!r}]")
        adata.uns[dendrogram_key] = dendrogram_info
    stored = result.to_dict()
    stored["groupby"] = groupby
    stored["source"] = source
    adata.uns[key] = stored
    record_defaults(adata, groupby=groupby, tree_key=key)
    return None
