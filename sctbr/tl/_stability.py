"""``sctbr.tl.stability``: do refits with other seeds find the same latents?"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

import sctbr._logging as logg
from sctbr._constants import OBSM_KEY_FIELD, STABILITY_KEY, result_keys
from sctbr._docs import doc_params
from sctbr.metrics import match_latents
from sctbr.tl._identifiability import N_SIMS, check_changes, design_scores, observed_nodes
from sctbr.tl._refit import check_in_memory, check_tbr_kwargs, fit_once, split_error

#: Default agreement threshold of :func:`stability` (mean pairwise MCC, and per latent).
DEFAULT_THRESHOLD = 0.9


@doc_params("inplace_key_added")
def stability(
    adata: AnnData,
    *,
    target: str | None = None,
    groupby: str | None = None,
    tree: Any = None,
    layer: str | None = None,
    var_names: Sequence[str] | None = None,
    n_seeds: int = 5,
    random_state: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    check_tree: bool = True,
    key_added: str | None = None,
    inplace: bool = True,
    **tbr_kwargs,
) -> dict | None:
    """Refit TBR with different seeds and measure how well the runs agree on the latents (MCC between runs).

    TBR identifies the latents up to permutation and scaling only when the heads change sparsely along the tree;
    then every seed finds the same latents. When they are not identified (no or dense changes, too short a fit)
    each seed lands on a different mixture. Agreement between seeds needs no ground truth, so it is the check to
    run on real data. Run ``i`` uses seed ``random_state + i`` (initialisation, split and batch order); run 0 is the
    fit ``sctbr.tl.tbr(adata, random_state=random_state, **tbr_kwargs)`` gives, so the per-latent scores refer to
    the latents of that fit (``latent_0``, ...).

    For every pair of runs the latents are matched one-to-one up to sign and scale by the largest total absolute
    correlation (:func:`sctbr.metrics.match_latents`); the pair's MCC is the mean absolute correlation of the
    matched latents (:func:`sctbr.metrics.mcc`). Per latent of run 0, the mean and the smallest absolute correlation
    with its match in every other run say which latents are reproducible.

    How to read it: an MCC of ``threshold = 0.9`` means matched latents share 81% of their variance. Below it the
    runs disagree on what the latents are, and they should not be interpreted one by one. 0.9 is also about what
    two random bases of the same plane reach (for two latents, the expected MCC of a random rotation is
    ``2 * sqrt(2) / pi = 0.90``), so lower agreement is no better than chance. On simulations (2 latents, 3 seeds,
    3 data sets) the runs agreed at MCC 0.997 with one change per arc (true MCC 0.96-0.99) and 0.36-0.80 with none
    (true MCC at most 0.76). Agreement is an upper bound on identification, not a measure of it: runs on the same
    cells can share a bias, and where the tree cannot pin the latents down every seed finds the same mixture (the
    ℓ1 objective's optimum). Hence the verdict ``summary["identified"]`` also asks the design check
    (``check_tree``): on 50 simulations with 300 cells per cell type and 5 latents it matched the truth (MCC >= 0.9)
    in 39, against 32 for the agreement alone (``docs/cells_needed.md``).

    Parameters
    ----------
    adata
        Cells x inputs, as for :func:`sctbr.tl.tbr`.
    target, groupby, tree, layer, var_names
        As in :func:`sctbr.tl.tbr`.
    n_seeds
        Number of runs (at least 2).
    random_state
        Seed of the first run; run ``i`` uses ``random_state + i``.
    threshold
        Agreement (MCC, between 0 and 1) below which a warning is issued, overall and per latent; also the
        design check's threshold.
    check_tree
        Also run the design check :func:`sctbr.tl.identifiability` at ``n_latent`` (``n_sims=8``, seed
        ``random_state``): whether the tree and the cell types that have cells identify that many latents with
        perfect data. Runs that agree on a basis that the tree cannot pin down agree on the same wrong mixture (the
        ℓ1 objective's), so the verdict ``identified`` needs both. It costs about as much as 1-5 refits.
    {inplace_key_added}
    inplace
        Write the result into ``adata`` and return ``None``: the tables into ``uns["tbr_stability"]``, every run's
        latents into ``obsm["X_tbr_stability"]`` (scanpy's ``key_added`` rule: ``obsm[key_added]`` and
        ``uns[key_added]`` with a name). ``False`` returns the result and leaves ``adata`` untouched.
    **tbr_kwargs
        Passed to every :func:`sctbr.tl.tbr` fit (e.g. ``n_latent``, ``max_epochs``, ``lam``, ``hidden``). One
        progress bar counts the fits (hidden with ``sc.settings.verbosity = "error"`` or
        ``enable_progress_bar=False``); each fit's own bar is off unless ``enable_progress_bar=True``.

    Returns
    -------
    ``None`` with ``inplace=True``; otherwise a dict (h5ad-writable; ``inplace=True`` stores it in ``uns`` but for
    ``latents``, which go to ``obsm`` and are named by ``obsm_key``) with

    ``pairs``
        Tidy DataFrame, one row per pair of runs x latent of the first run of the pair: ``seed_a``, ``seed_b``,
        ``latent``, ``matched_latent`` (of run b), ``corr`` (signed) and ``abs_corr``.
    ``matrix``
        DataFrame of the MCC between every two runs (seeds x seeds, 1 on the diagonal).
    ``per_latent``
        DataFrame, one row per latent of run 0: ``latent``, ``mean_abs_corr`` and ``min_abs_corr`` over the other
        runs, and ``stable`` (``mean_abs_corr >= threshold``).
    ``runs``
        DataFrame, one row per run: ``seed``, ``validation_mse``, ``mean_mcc`` (with the other runs),
        ``fit_seconds``. A run that agrees with nobody and has a higher error was stuck in a poor optimum.
    ``summary``
        ``mean_mcc``, ``min_mcc`` and ``sd_mcc`` over the pairs, ``threshold``, ``stable`` (``mean_mcc >=
        threshold`` and every latent stable), ``tree_mcc`` (the design check's mean MCC; NaN with
        ``check_tree=False``), ``identified`` (the verdict: ``mean_mcc >= threshold`` and ``tree_mcc >=
        threshold``; without the design check, ``stable``), ``n_seeds``, ``n_latent``.
    ``latents``
        Array (cells x (runs * latents), float32) of every run's latents, run by run: columns
        ``i * n_latent`` to ``(i + 1) * n_latent - 1`` are run ``i`` (seed ``seeds[i]``), so
        ``latents.reshape(n_cells, n_seeds, n_latent)[:, i]`` is run ``i``. Per-cell, so with ``inplace=True`` it
        goes to ``obsm["X_tbr_stability"]`` (and is subset with the cells); ``uns`` records ``obsm_key``.
    ``seeds``
        The seed of every run.

    Warns
    -----
    UserWarning
        When the mean MCC between runs, or the agreement of some latent, is below ``threshold``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.stability(adata, n_seeds=3, n_latent=2, max_epochs=60)  # doctest: +SKIP
    >>> adata.uns["tbr_stability"]["summary"]["mean_mcc"]  # doctest: +SKIP
    >>> adata.obsm["X_tbr_stability"].shape  # cells x (3 runs * 2 latents)  # doctest: +SKIP
    (1400, 6)
    >>> sctbr.pl.stability(adata)  # doctest: +SKIP
    """
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, Integral) or n_seeds < 2:
        raise ValueError(f"`n_seeds` must be an integer >= 2 (runs to compare), got {n_seeds!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must be an MCC between 0 and 1, got {threshold!r}.")
    if not isinstance(random_state, Integral):
        raise TypeError(f"`random_state` must be an integer, got {random_state!r}.")
    keys = result_keys(key_added, STABILITY_KEY)
    fit_kwargs = check_tbr_kwargs(tbr_kwargs, "stability", allowed=("n_latent",))
    n_latent = fit_kwargs.pop("n_latent", 5)
    fit_kwargs.update(target=target, groupby=groupby, tree=tree, layer=layer, var_names=var_names)

    check_in_memory(adata)
    if not isinstance(check_tree, bool):
        raise TypeError(f"`check_tree` must be True or False, got {check_tree!r}.")
    design = None
    if check_tree:
        tree_obj, observed = observed_nodes(adata, groupby=groupby, tree=tree)
        check_changes(tree_obj, int(n_latent), 1)
        design = (tree_obj, observed)
    seeds = [int(random_state) + i for i in range(int(n_seeds))]
    fits = []
    with logg.fits_progress(len(seeds), "stability", enabled=fit_kwargs.pop("_outer_progress")) as bar:
        for s in seeds:
            bar.set_postfix(seed=s, refresh=False)
            fits.append(fit_once(adata, n_latent=n_latent, random_state=s, fit_kwargs=fit_kwargs))
            bar.update()
    latents = np.stack([f.latents for f in fits])
    names = [f"latent_{j}" for j in range(latents.shape[2])]

    rows = []
    matrix = np.eye(len(seeds))
    for a, b in itertools.combinations(range(len(seeds)), 2):
        m = match_latents(latents[a], latents[b])
        matrix[a, b] = matrix[b, a] = float(np.mean(m["abs_corr"]))
        for i, j, c in zip(m["true_index"], m["est_index"], m["corr"], strict=True):
            rows.append((seeds[a], seeds[b], names[i], names[j], float(c), abs(float(c))))
    pairs = pd.DataFrame(rows, columns=["seed_a", "seed_b", "latent", "matched_latent", "corr", "abs_corr"])
    ref = pairs[pairs["seed_a"] == seeds[0]]
    per_latent = (
        ref.groupby("latent", sort=False)["abs_corr"]
        .agg(mean_abs_corr="mean", min_abs_corr="min")
        .reindex(names)
        .reset_index()
    )
    per_latent["stable"] = per_latent["mean_abs_corr"].to_numpy() >= threshold
    upper = matrix[np.triu_indices(len(seeds), k=1)]
    tree_mcc = float("nan")
    if design is not None:
        tree_mcc = float(
            np.mean(design_scores(*design, int(latents.shape[2]), 1, n_sims=N_SIMS, random_state=random_state))
        )
    stable = bool(upper.mean() >= threshold and per_latent["stable"].all())
    summary = {
        "mean_mcc": float(upper.mean()),
        "min_mcc": float(upper.min()),
        "sd_mcc": float(upper.std(ddof=1)) if upper.size > 1 else 0.0,
        "threshold": float(threshold),
        "stable": stable,
        "tree_mcc": tree_mcc,
        "identified": bool(upper.mean() >= threshold and tree_mcc >= threshold) if design is not None else stable,
        "n_seeds": len(seeds),
        "n_latent": int(latents.shape[2]),
    }
    runs = pd.DataFrame(
        {
            "seed": seeds,
            "validation_mse": [split_error(f, "validation")[0] for f in fits],
            "mean_mcc": (matrix.sum(axis=1) - 1.0) / (len(seeds) - 1),
            "fit_seconds": [f.seconds for f in fits],
        }
    )
    labels = [str(s) for s in seeds]
    result = {
        "pairs": pairs,
        "matrix": pd.DataFrame(matrix, index=pd.Index(labels, name="seed"), columns=labels),
        "per_latent": per_latent,
        "runs": runs,
        "summary": summary,
        # per-cell: cells x (runs * latents), run by run (obsm with inplace=True)
        "latents": np.concatenate(list(latents), axis=1).astype(np.float32),
        "seeds": np.asarray(seeds, dtype=int),
        "params": {
            "target": str(fits[0].params["target"]),
            "groupby": str(fits[0].params["groupby"]),
            "random_state": int(random_state),
        },
    }
    _warn_if_unstable(summary, per_latent, threshold)
    if inplace:
        adata.obsm[keys.obsm] = result.pop("latents")
        result[OBSM_KEY_FIELD] = keys.obsm
        adata.uns[keys.uns] = result
        return None
    return result


def _below(value: float, threshold: float) -> str:
    """``value`` with enough decimals that a value below ``threshold`` never reads as the threshold (0.8996: not 0.90)."""
    for decimals in range(2, 10):
        text = f"{value:.{decimals}f}"
        if float(text) < threshold:
            return text
    return repr(float(value))


def _warn_if_unstable(summary: dict, per_latent: pd.DataFrame, threshold: float) -> None:
    if summary["tree_mcc"] < threshold:
        warnings.warn(
            f"The tree does not identify {summary['n_latent']} latents from the cell types that have cells, even with "
            f"perfect data: its design check recovers them at MCC {_below(summary['tree_mcc'], threshold)}, below "
            f"{threshold:g} (sctbr.tl.identifiability). Runs can then agree on the same mixture. Fit fewer latents "
            "(sctbr.tl.identifiability(adata, n_latent=range(2, 6)) says how many the tree supports) or add cell types.",
            UserWarning,
            stacklevel=3,
        )
    fixes = (
        "Check that the changes along the tree are sparse enough to identify the latents (sctbr.pl.tree), fit longer "
        "(max_epochs) or with n_restarts, or use fewer latents (sctbr.tl.select_n_latent)."
    )
    if summary["mean_mcc"] < threshold:
        warnings.warn(
            f"TBR's latents are not stable across seeds: the mean MCC between {summary['n_seeds']} runs is "
            f"{_below(summary['mean_mcc'], threshold)} (lowest pair {summary['min_mcc']:.2f}), below {threshold:g}. Different seeds "
            f"find different latents, so do not interpret them one by one. {fixes}",
            UserWarning,
            stacklevel=3,
        )
        return
    low = per_latent.loc[~per_latent["stable"]]
    if len(low):
        shown = ", ".join(f"{r.latent} ({_below(r.mean_abs_corr, threshold)})" for r in low.itertuples())
        warnings.warn(
            f"Some of TBR's latents are not stable across seeds (mean |correlation| with their match in the other "
            f"runs below {threshold:g}): {shown}. Interpret these with care. {fixes}",
            UserWarning,
            stacklevel=3,
        )
