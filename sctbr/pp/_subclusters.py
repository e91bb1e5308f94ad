"""Sub-clusters of every cell type (``sctbr.pp.subclusters``): finer environments that nest in the cell types."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

import sctbr._logging as logg
from sctbr._validation import check_int, check_key_added, check_real, check_str
from sctbr.pp._tree import _categories, _representation

#: Separator between a cell type and the number of its sub-cluster: ``"CD4 T naive-0"``.
SEPARATOR = "-"


def _merge_small(graph: sp.csr_matrix, labels: np.ndarray, min_cells: int) -> np.ndarray:
    """Merge every cluster under ``min_cells`` cells into the cluster it is most connected to, smallest first."""
    labels = labels.copy()
    while True:
        ids, sizes = np.unique(labels, return_counts=True)
        if len(ids) <= 1 or sizes.min() >= min_cells:
            return labels
        small = ids[np.argmin(sizes)]
        cells = labels == small
        weight = np.asarray(graph[cells].sum(axis=0)).ravel()
        links = {c: weight[labels == c].sum() for c in ids if c != small}
        # ties (e.g. an isolated cluster) go to the largest cluster
        target = max(links, key=lambda c: (links[c], (labels == c).sum(), -c))
        labels[cells] = target


def subclusters(
    adata: AnnData,
    groupby: str,
    *,
    resolution: float = 0.6,
    min_cells: int = 30,
    n_neighbors: int = 15,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    random_state: int = 0,
    key_added: str | None = None,
) -> pd.Series:
    """Split every cell type into communities of its cells: finer environments that nest in the cell types.

    Scanpy's kNN graph of all cells (:func:`scanpy.pp.neighbors` on the representation that
    :func:`environment_tree` uses: ``obsm[use_rep]``, ``obsm["X_pca"]``, or 50 principal components of
    log-normalised ``X``) is restricted to the cells of each cell type and split by seeded Louvain community
    detection (:func:`networkx.community.louvain_communities`, weighted by the graph's connectivities; the
    analogue of ``scanpy.tl.leiden(restrict_to=...)`` without the optional igraph/leidenalg dependencies).
    Communities under ``min_cells`` cells are merged, smallest first, into the community of the same cell type
    they are most connected to, so a cell type under ``2 * min_cells`` cells stays whole. Sub-clusters are named
    ``"<cell type>-<i>"``, numbered by decreasing size.

    Build the environment tree that follows the cell types with
    ``sctbr.pp.environment_tree(adata, key_added, within=groupby)``.

    Parameters
    ----------
    adata
        Cells x genes.
    groupby
        Categorical column of ``adata.obs`` with the cell types.
    resolution
        Louvain resolution (larger: more sub-clusters).
    min_cells
        Smallest sub-cluster.
    n_neighbors
        Neighbours of the kNN graph.
    use_rep, n_pcs
        Representation of the cells, as in :func:`environment_tree`.
    random_state
        Seed of the neighbour search and of the community detection.
    key_added
        Column of ``adata.obs`` written (default ``"<groupby>_sub"``).

    Returns
    -------
    The sub-cluster of every cell (categorical, also stored in ``adata.obs[key_added]``).

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> sub = sctbr.pp.subclusters(adata, "cell_type")  # doctest: +SKIP
    >>> tree = sctbr.pp.environment_tree(adata, "cell_type_sub", within="cell_type")  # doctest: +SKIP
    """
    import scanpy as sc

    types = _categories(adata, groupby)
    check_real("resolution", resolution, low=0.0, low_open=True, fix="The Louvain resolution, e.g. 0.6.")
    check_int("min_cells", min_cells, fix="The smallest sub-cluster, e.g. 30.")
    check_int("n_neighbors", n_neighbors, low=2, fix="Neighbours of the kNN graph, e.g. 15.")
    check_str("use_rep", use_rep, none_ok=True, fix="A key of adata.obsm, 'X', or None.")
    check_int("n_pcs", n_pcs, low=0, none_ok=True, fix="Principal components, e.g. 50, or None.")
    check_int("random_state", random_state, low=0)
    check_key_added("key_added", key_added)
    key = key_added or f"{groupby}_sub"
    rep, rep_n_pcs = _representation(adata, use_rep, n_pcs)
    if rep_n_pcs is not None:
        rep = rep[:, :rep_n_pcs]
    work = AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()), obsm={"rep": np.asarray(rep, dtype=np.float32)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(work, n_neighbors=int(n_neighbors), use_rep="rep", random_state=int(random_state))
    graph = sp.csr_matrix(work.obsp["connectivities"])
    labels = adata.obs[groupby].astype(str).to_numpy()
    out = np.empty(adata.n_obs, dtype=object)
    names: list[str] = []
    for t in types:
        idx = np.flatnonzero(labels == t)
        sub = graph[idx][:, idx]
        if len(idx) < 2 * int(min_cells):
            comm = np.zeros(len(idx), dtype=int)
        else:
            communities = nx.community.louvain_communities(
                nx.from_scipy_sparse_array(sub), resolution=float(resolution), seed=int(random_state)
            )
            comm = np.empty(len(idx), dtype=int)
            for i, members in enumerate(communities):
                comm[list(members)] = i
            comm = _merge_small(sub, comm, int(min_cells))
        ids, sizes = np.unique(comm, return_counts=True)
        order = ids[np.argsort(-sizes, kind="stable")]
        rank = {c: i for i, c in enumerate(order)}
        sub_names = [f"{t}{SEPARATOR}{i}" for i in range(len(order))]
        out[idx] = [sub_names[rank[c]] for c in comm]
        names.extend(sub_names)
    result = pd.Series(pd.Categorical(out, categories=names), index=adata.obs_names.copy(), name=key)
    adata.obs[key] = result
    logg.info(f"subclusters: {len(names)} sub-clusters of {len(types)} cell types in adata.obs[{key!r}]")
    return result
