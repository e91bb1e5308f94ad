"""Semi-synthetic phenotypes on real expression (the paper's Fig. 4a experiment)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sctbr._constants import TREE_KEY, TRUE_LATENTS_KEY
from sctbr._tree import EnvironmentTree
from sctbr._validation import check_int, check_names, check_real, check_str
from sctbr.datasets._regulators import regulators
from sctbr.datasets._simulate import check_k, store_truth, tree_weights


def _columns(adata: ad.AnnData, layer: str | None, genes: list[str]) -> np.ndarray:
    """Dense float64 expression of ``genes`` from ``layer`` (or ``X``)."""
    x = adata.X if layer is None else adata.layers[layer]
    x = x[:, adata.var_names.get_indexer(genes)]
    if sp.issparse(x):
        x = x.toarray()
    return np.asarray(x, dtype=np.float64)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


def _resolve_tree(adata: ad.AnnData, tree: Any, groupby: str) -> EnvironmentTree:
    if tree is None:
        stored = adata.uns.get(TREE_KEY)
        if stored is None:
            raise ValueError(
                f"No tree given and none stored in adata.uns[{TREE_KEY!r}]: run "
                f"sctbr.pp.environment_tree(adata, {groupby!r}) first, or pass `tree=`."
            )
        stored_groupby = stored.get("groupby") if hasattr(stored, "get") else None
        if stored_groupby is not None and str(stored_groupby) != groupby:
            raise ValueError(
                f"The tree stored in adata.uns[{TREE_KEY!r}] was built for groupby={str(stored_groupby)!r}, not "
                f"{groupby!r}; run sctbr.pp.environment_tree(adata, {groupby!r}) or pass `tree=`."
            )
        return EnvironmentTree.coerce(dict(stored))
    if isinstance(tree, str) and tree in adata.uns:
        return EnvironmentTree.coerce(dict(adata.uns[tree]))
    return EnvironmentTree.coerce(tree)


def semisynthetic(
    adata: ad.AnnData,
    *,
    latent_genes: Sequence[str],
    input_genes: Sequence[str] | None = None,
    groupby: str,
    tree: Any = None,
    k: float = 1,
    layer: str | None = "magic",
    noise_y: float = 0.1,
    random_state: int = 0,
    sources: str | Sequence[str] | None = None,
    delta_scale: float = 1.0,
) -> ad.AnnData:
    """Simulate a phenotype from held-out real genes along the cell-type tree (the paper's semi-synthetic data).

    The expression of ``latent_genes`` (e.g. :func:`house_keeping_genes`) is held out as the true latents
    ``Z``; the expression of the transcription factors that regulate them (:func:`regulators`) is the input
    ``X``, so that ``Z`` is a (noisy, unknown) function of ``X`` shared by all cell types. The phenotype
    follows the data-generating process of :func:`simulate` exactly: root weights ``w_0`` and ``k`` sparse
    Gaussian changes per arc of the tree (:func:`sctbr.datasets._simulate.tree_weights`), every latent changed on
    some arc, and ``y = w_eᵀ z + noise_y · ε`` for a cell of cell type ``e``. Cells are observed at their cell
    type's node (the leaves of a dendrogram).

    Gene handling: latent genes missing from ``adata`` (or not imputed in the layer), constant, or without any
    usable regulator are dropped with a warning; so are inputs missing from ``adata`` or constant. A latent
    gene is never an input (that would leak ``Z`` into ``X``): regulators that are themselves latent genes are
    dropped with a warning.

    Parameters
    ----------
    adata
        Cells x genes with expression in ``layer`` (e.g. after :func:`sctbr.pp.magic` and
        :func:`sctbr.pp.subsample`) and the cell types in ``obs[groupby]``.
    latent_genes
        Genes held out as latents.
    input_genes
        Genes used as inputs. ``None`` uses the regulators of the latent genes.
    groupby
        Column of ``adata.obs`` with the cell types (environments).
    tree
        The cell-type tree (anything :meth:`sctbr.EnvironmentTree.coerce` accepts, or a key of ``adata.uns``).
        ``None`` uses the tree stored by :func:`sctbr.pp.environment_tree` for ``groupby``.
    k
        Sparsity of the changes, as in :func:`simulate`: nonzero entries per arc (int) or a Bernoulli rate.
    layer
        Layer with the (denoised, log-scale) expression; ``None`` uses ``X``.
    noise_y
        Standard deviation of the phenotype noise (the latents have unit variance).
    random_state
        Seed of the weights and the noise.
    sources
        Resources of the regulator table (see :func:`regulators`) when ``input_genes`` is None.
    delta_scale
        Standard deviation of the nonzero changes.

    Returns
    -------
    A new AnnData (cells as in ``adata``) ready for :func:`sctbr.tl.tbr`: ``X`` the standardised inputs
    (float32; unstandardised in ``layers[layer]``), ``var["regulates"]`` the latent genes each input regulates,
    ``obs[groupby]`` and ``obs["y"]``, ``obsm["Z_true"]`` the standardised latents, the tree in
    ``uns["environment_tree"]`` (with ``groupby``), and the truth in ``uns["simulation"]`` as in
    :func:`simulate` plus ``latent_genes``. ``uns["sctbr"]`` records target and groupby.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> sctbr.pp.magic(adata, library_size="total_counts")
    >>> sctbr.pp.environment_tree(adata, "cell_type")
    >>> semi = sctbr.datasets.semisynthetic(
    ...     adata, latent_genes=sctbr.datasets.house_keeping_genes(), groupby="cell_type", random_state=0
    ... )
    >>> semi.obsm["Z_true"].shape[1] == len(semi.uns["simulation"]["latent_genes"])
    True
    >>> sctbr.tl.tbr(semi, n_latent=semi.obsm["Z_true"].shape[1])  # doctest: +SKIP
    """
    # ---- validate the arguments, without touching `adata`
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    check_names("latent_genes", latent_genes, fix="Gene names, e.g. sctbr.datasets.house_keeping_genes().")
    check_names("input_genes", input_genes, none_ok=True, fix="Gene names, or None for the regulators.")
    check_str("groupby", groupby, fix="The column of adata.obs with the cell types.")
    check_str("layer", layer, none_ok=True, fix="A layer of adata (e.g. 'magic' after sctbr.pp.magic), or None.")
    check_real("noise_y", noise_y, low=0.0, fix="The standard deviation of the phenotype noise, e.g. 0.1.")
    check_int("random_state", random_state, low=0)
    check_names("sources", sources, none_ok=True, fix="Resource names of sctbr.datasets.regulators, or None.")
    check_real("delta_scale", delta_scale, low=0.0, fix="The SD of the nonzero changes, e.g. 1.0.")
    if groupby not in adata.obs:
        raise KeyError(f"`groupby` column {groupby!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    if layer is not None and layer not in adata.layers:
        hint = " Run sctbr.pp.magic(adata) first." if layer == "magic" else ""
        raise KeyError(f"Layer {layer!r} not found in adata.layers ({list(adata.layers)}).{hint}")
    if isinstance(latent_genes, str):
        latent_genes = [latent_genes]
    requested = list(dict.fromkeys(str(g) for g in latent_genes))
    if not requested:
        raise ValueError("`latent_genes` is empty.")
    check_k(k, len(requested))  # type and range now; checked again below against the usable latent genes
    labels = adata.obs[groupby]
    if labels.isna().any():
        raise ValueError(f"{int(labels.isna().sum())} cells have no label in adata.obs[{groupby!r}]; drop them first.")
    envs = labels.astype(str).to_numpy()
    tree_obj = _resolve_tree(adata, tree, groupby)
    missing_envs = sorted({e for e in envs if e not in tree_obj})
    if missing_envs:
        raise ValueError(
            f"{len(missing_envs)} cell types of adata.obs[{groupby!r}] are not nodes of the tree: {missing_envs[:10]}."
        )
    if tree_obj.n_arcs == 0:
        raise ValueError("The tree has a single node; a phenotype along the tree needs at least one arc.")

    # Genes available in the layer: MAGIC with `genes=` imputes only those.
    available = set(adata.var_names)
    if layer is not None and isinstance(adata.uns.get(layer), dict) and "genes" in adata.uns[layer]:
        available &= {str(g) for g in np.asarray(adata.uns[layer]["genes"]).ravel()}
    if not adata.var_names.is_unique:
        raise ValueError("adata.var_names are not unique; call adata.var_names_make_unique() first.")

    # ---- latent genes
    latent = [g for g in requested if g in available]
    absent = [g for g in requested if g not in available]
    if absent:
        _warn(
            f"Dropped {len(absent)} latent gene(s) missing from adata{f' layer {layer!r}' if layer else ''}: {absent}."
        )
    if latent:
        z_all = _columns(adata, layer, latent)
        constant = [g for g, s in zip(latent, z_all.std(axis=0), strict=True) if not s > 0]
        if constant:
            _warn(f"Dropped {len(constant)} constant latent gene(s): {constant}.")
            latent = [g for g in latent if g not in constant]

    # ---- inputs
    held_out = set(requested)
    if input_genes is None:
        regs = regulators(latent, sources=sources)
        candidates = list(dict.fromkeys(tf for g in latent for tf in regs[g]))
    else:
        if isinstance(input_genes, str):
            input_genes = [input_genes]
        candidates = list(dict.fromkeys(str(g) for g in input_genes))
        regs = None
    leaked = [g for g in candidates if g in held_out]
    if leaked:
        _warn(f"Dropped {len(leaked)} input(s) that are latent genes themselves (they would leak Z into X): {leaked}.")
    candidates = [g for g in candidates if g not in held_out]
    absent_inputs = [g for g in candidates if g not in available]
    inputs = [g for g in candidates if g in available]
    if inputs:
        stds = _columns(adata, layer, inputs).std(axis=0)
        flat = [g for g, s in zip(inputs, stds, strict=True) if not s > 0]
        inputs = [g for g in inputs if g not in flat]
    else:
        flat = []
    if absent_inputs or flat:
        _warn(
            f"Dropped {len(absent_inputs) + len(flat)} input gene(s): "
            + (f"missing from adata: {absent_inputs}" if absent_inputs else "")
            + ("; " if absent_inputs and flat else "")
            + (f"constant: {flat}" if flat else "")
            + "."
        )
    if regs is not None:
        usable = set(inputs)
        orphans = [g for g in latent if not any(tf in usable for tf in regs[g])]
        if orphans:
            _warn(f"Dropped {len(orphans)} latent gene(s) without a regulator among the inputs: {orphans}.")
            latent = [g for g in latent if g not in orphans]
    if not latent:
        raise ValueError(
            f"None of the latent genes {requested} is usable (present in the data, not constant, with a "
            "regulator among the inputs)."
        )
    if not inputs:
        raise ValueError(f"No input genes left for the latent genes {latent}.")
    n_latent = len(latent)
    check_k(k, n_latent)
    if isinstance(k, int | np.integer) and 0 < k * tree_obj.n_arcs < n_latent:
        raise ValueError(
            f"The tree has {tree_obj.n_arcs} arcs with k={k} change(s) each, too few to change all {n_latent} latent "
            f"genes ({latent}); use fewer latent genes, a larger `k` or a larger tree."
        )

    # ---- simulate
    rng = np.random.default_rng(random_state)
    w0, deltas, weights = tree_weights(tree_obj, n_latent, k, rng=rng, all_latents_change=True, delta_scale=delta_scale)
    z = _standardise(_columns(adata, layer, latent))
    x_raw = _columns(adata, layer, inputs)
    x = _standardise(x_raw)
    node_rows = tree_obj.node_index(list(envs))
    y = np.einsum("ij,ij->i", z, weights[node_rows]) + noise_y * rng.normal(size=adata.n_obs)

    # ---- assemble a new AnnData
    col = labels if isinstance(labels.dtype, pd.CategoricalDtype) else labels.astype(str).astype("category")
    obs = pd.DataFrame({groupby: col.cat.remove_unused_categories().to_numpy()}, index=adata.obs_names.copy())
    obs[groupby] = obs[groupby].astype("category")
    obs["y"] = y.astype(np.float64)
    var = pd.DataFrame(index=pd.Index(inputs))
    if regs is not None:
        var["regulates"] = [";".join(g for g in latent if tf in regs[g]) for tf in inputs]
    out = ad.AnnData(X=x.astype(np.float32), obs=obs, var=var)
    out.layers[layer if layer is not None else "X"] = x_raw.astype(np.float32)
    out.obsm[TRUE_LATENTS_KEY] = z.astype(np.float32)
    store_truth(
        out,
        tree_obj,
        groupby=groupby,
        truth=(w0, deltas, weights),
        latent_genes=np.array(latent, dtype=str),
        params={
            "semisynthetic": True,
            "leaves_only": bool(set(envs) <= set(tree_obj.leaves)),
            "n_inputs": len(inputs),
            "n_latent": n_latent,
            "k": float(k),
            "noise_y": float(noise_y),
            "delta_scale": float(delta_scale),
            "random_state": int(random_state),
            "layer": layer if layer is not None else "X",
        },
    )
    return out
