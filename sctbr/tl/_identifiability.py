"""``sctbr.tl.identifiability``: can this tree identify ``n`` latents at all, with perfect data?"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.optimize import linear_sum_assignment

import sctbr._logging as logg
from sctbr._constants import IDENTIFIABILITY_KEY, result_keys
from sctbr._docs import doc_params
from sctbr._tree import EnvironmentTree
from sctbr.datasets import tree_weights
from sctbr.model import refine_basis
from sctbr.tl._core import environments_in_tree, tree_and_groupby

#: Default agreement with the truth (MCC) above which a number of latents counts as identifiable.
DEFAULT_THRESHOLD = 0.9
#: Default number of simulated head sets per number of latents.
N_SIMS = 8


@doc_params("inplace_key_added")
def identifiability(
    adata: AnnData,
    *,
    groupby: str | None = None,
    tree: Any = None,
    n_latent: int | Iterable[int] = (2, 3, 4, 5),
    k: float = 1,
    n_sims: int = N_SIMS,
    threshold: float = DEFAULT_THRESHOLD,
    random_state: int = 0,
    key_added: str | None = None,
    inplace: bool = True,
    enable_progress_bar: bool | None = None,
) -> dict | None:
    """Ask whether the tree and the cell types that have cells can identify ``n_latent`` latents, with perfect data.

    TBR's latents are identified by the sparsity of the heads' changes along the tree. Whether sparsity pins them
    down depends on the design: how many cell types have cells, and where they sit in the tree. With cells at a few
    leaves only, a mixture of the latents can have sparser changes than the true latents, and then no number of
    cells helps. This check needs no fit and no phenotype: for each number of latents ``d`` it draws ``n_sims``
    sets of heads on the tree as :func:`sctbr.datasets.simulate` does (root weights and Gaussian changes, ``k``
    latents changing per arc), keeps the heads of the nodes that have cells, mixes the latents with a random
    invertible matrix and runs the fit's basis refinement on them, solved exactly
    (:func:`sctbr.model.refine_basis` with ``lp_start=True``). The MCC between the refined and the true latents
    says whether the ℓ1 objective itself recovers the latents on this design (1: identified; a perfect encoder and
    infinitely many cells assumed, so real fits score lower, never higher in expectation).

    Measured on the small-data grid of ``docs/cells_needed.md`` (5 latents, 10 trees per shape): the check gives
    0.97-1.00 on a balanced depth-3 tree with cells at every node (every fit identified), 0.80-0.97 on 12- and
    16-leaf trees with cells at the leaves (half the fits identified), and 0.74-0.88 on 8- and 9-leaf trees (1 fit of
    20 identified). A single check is noisy near 0.9: one 12-leaf tree gave 0.80-0.90 with five seeds. It costs
    1-3 s per simulated set on one CPU thread with 8-16 cell types and 5 latents, 5-10 s with 200-250 cell types.

    Parameters
    ----------
    adata
        Cells with their cell type in ``obs[groupby]``; only which nodes of the tree have cells is read.
    groupby, tree
        As in :func:`sctbr.tl.tbr` (defaults: what :func:`sctbr.pp.environment_tree` recorded).
    n_latent
        Number(s) of latents to check.
    k
        Changes per arc in the simulated heads: a count (``1``: one latent per arc, the sparsest that moves every
        latent) or a Bernoulli rate in ``(0, 1)``. Denser changes are harder to identify.
    n_sims
        Simulated head sets per number of latents.
    threshold
        MCC at which a number of latents counts as identifiable (mean over the simulated sets).
    random_state
        Seed of the heads, the mixing and the refinement.
    {inplace_key_added}
    inplace
        Write the result into ``adata.uns["tbr_identifiability"]`` and return ``None``; ``False`` returns it and
        leaves ``adata`` untouched.
    enable_progress_bar
        Show a progress bar over the simulated sets (``None``: at scanpy's default verbosity and above, hidden with
        ``sc.settings.verbosity = "error"``).

    Returns
    -------
    ``None`` with ``inplace=True``; otherwise a dict (h5ad-writable) with

    ``table``
        DataFrame, one row per number of latents: ``n_latent``, ``mean_mcc`` and ``worst_mcc`` over the simulated
        sets, ``frac_identified`` (share of sets with MCC at least ``threshold``) and ``identifiable``
        (``mean_mcc >= threshold``).
    ``runs``
        DataFrame, one row per simulated set: ``n_latent``, ``sim``, ``mcc``.
    ``summary``
        ``max_identifiable`` (the largest checked ``n_latent`` that is identifiable and every smaller checked one
        too; 0 when none is), ``n_observed`` (nodes with cells), ``n_nodes``, ``n_arcs``, ``threshold``, ``k``,
        ``n_sims``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=20, n_latent=3, random_state=0)
    >>> sctbr.tl.identifiability(adata, n_latent=[3, 5], n_sims=2)  # doctest: +SKIP
    >>> adata.uns["tbr_identifiability"]["table"]  # doctest: +SKIP
    """
    values = _check_n_latent(n_latent)
    if isinstance(n_sims, bool) or not isinstance(n_sims, Integral) or n_sims < 1:
        raise ValueError(f"`n_sims` must be a positive integer (simulated head sets), got {n_sims!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must be an MCC between 0 and 1, got {threshold!r}.")
    if isinstance(random_state, bool) or not isinstance(random_state, Integral):
        raise TypeError(f"`random_state` must be an integer, got {random_state!r}.")
    if enable_progress_bar is not None and not isinstance(enable_progress_bar, bool):
        raise TypeError(f"`enable_progress_bar` must be True, False or None, got {enable_progress_bar!r}.")
    tree_obj, observed = observed_nodes(adata, groupby=groupby, tree=tree)
    for d in values:
        check_changes(tree_obj, d, k)
    keys = result_keys(key_added, IDENTIFIABILITY_KEY)

    rows = []
    with logg.fits_progress(
        len(values) * int(n_sims), "identifiability", enabled=enable_progress_bar, unit="set"
    ) as bar:
        for d in values:
            scores = design_scores(tree_obj, observed, d, k, n_sims=int(n_sims), random_state=random_state, bar=bar)
            rows += [(d, sim, value) for sim, value in enumerate(scores)]
    runs = pd.DataFrame(rows, columns=["n_latent", "sim", "mcc"])
    table = runs.groupby("n_latent", sort=True)["mcc"].agg(mean_mcc="mean", worst_mcc="min").reset_index()
    table["frac_identified"] = (
        runs.groupby("n_latent", sort=True)["mcc"].apply(lambda m: float((m >= threshold).mean())).to_numpy()
    )
    table["identifiable"] = table["mean_mcc"].to_numpy() >= threshold
    ok = table["identifiable"].to_numpy()
    first_bad = int(np.argmin(ok)) if not ok.all() else len(ok)
    summary = {
        "max_identifiable": int(table["n_latent"].iloc[first_bad - 1]) if first_bad > 0 else 0,
        "n_observed": int(observed.sum()),
        "n_nodes": int(tree_obj.n_nodes),
        "n_arcs": int(tree_obj.n_arcs),
        "threshold": float(threshold),
        "k": float(k),
        "n_sims": int(n_sims),
    }
    result = {"table": table, "runs": runs, "summary": summary}
    logg.info(
        f"identifiability: n_latent {', '.join(f'{r.n_latent}: {r.mean_mcc:.3f}' for r in table.itertuples())} "
        f"(mean MCC with perfect data; identifiable up to {summary['max_identifiable']})"
    )
    if inplace:
        adata.uns[keys.uns] = result
        return None
    return result


def _check_n_latent(n_latent) -> list[int]:
    values = [n_latent] if isinstance(n_latent, Integral) and not isinstance(n_latent, bool) else n_latent
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"`n_latent` must be a positive integer or a sequence of them, got {n_latent!r}.") from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, Integral) or v < 1]
    if bad or not values:
        raise ValueError(f"`n_latent` must be positive integers, got {values[:5] if bad == [] else bad[:5]}.")
    return sorted({int(v) for v in values})


def observed_nodes(adata: AnnData, *, groupby: str | None, tree: Any) -> tuple[EnvironmentTree, np.ndarray]:
    """The tree and a mask (in ``tree.nodes`` order) of the nodes with cells in ``adata.obs[groupby]``."""
    tree_obj, groupby = tree_and_groupby(adata, tree, groupby)
    if groupby not in adata.obs:
        raise KeyError(f"`groupby={groupby!r}` is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    return tree_obj, np.isin(np.asarray(tree_obj.nodes), environments_in_tree(adata, groupby, tree_obj))


def check_changes(tree: EnvironmentTree, n_latent: int, k) -> None:
    """``k`` is a valid sparsity for ``n_latent`` latents, and a count lets every latent change on some arc."""
    if isinstance(k, Real) and not isinstance(k, bool) and k == 0:
        raise ValueError("`k=0` draws no changes, and without changes nothing is identified; use k=1 or a rate.")
    if isinstance(k, Integral) and not isinstance(k, bool) and 0 < k <= n_latent and tree.n_arcs * int(k) < n_latent:
        raise ValueError(
            f"With k={k} change(s) per arc, the tree's {tree.n_arcs} arcs cannot move all {n_latent} latents; check "
            "fewer latents or pass a larger k."
        )
    tree_weights(tree, n_latent, k, rng=np.random.default_rng(0))  # checks k (a count <= n_latent, or a rate)


def design_scores(
    tree: EnvironmentTree, observed: np.ndarray, n_latent: int, k, *, n_sims: int, random_state: int, bar=None
) -> list[float]:
    """The MCC of ``n_sims`` simulated sets (seeds ``(random_state, n_latent, i)``); ``bar`` is updated per set."""
    scores = []
    for i in range(n_sims):
        scores.append(design_mcc(tree, observed, n_latent, k, seed=(int(random_state), int(n_latent), i)))
        if bar is not None:
            bar.update()
    return scores


def design_mcc(tree: EnvironmentTree, observed: np.ndarray, n_latent: int, k, *, seed) -> float:
    """MCC of the exact basis refinement on one simulated, randomly mixed set of heads (observed nodes only)."""
    rng = np.random.default_rng(list(np.atleast_1d(seed)))
    _, _, weights = tree_weights(tree, n_latent, k, rng=rng)
    mix = rng.normal(size=(n_latent, n_latent)) + np.eye(n_latent)
    mix /= np.linalg.norm(mix, axis=0, keepdims=True)  # unit-variance mixed latents (the true ones independent)
    heads = weights @ np.linalg.inv(mix).T  # Z_true W^T = (Z_true mix) (W mix^-T)^T
    heads[~observed] = 0.0  # no truth where there are no cells: the refinement solves for these heads
    parent = np.asarray(tree.parent_index)
    m = refine_basis(heads, parent, observed, mix.T @ mix, random_state=int(rng.integers(2**31)), lp_start=True)[0]
    a = mix @ m  # refined latents Z_true @ a
    c = np.abs(a) / np.linalg.norm(a, axis=0, keepdims=True)
    rows, cols = linear_sum_assignment(-c)
    return float(c[rows, cols].mean())
