"""The paper's experiments on real cells (Fig. 4a and 4b): semi-synthetic phenotypes on PBMC3k or GTEx."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from sctbr import pp
from sctbr._constants import SIMULATION_KEY, TREE_KEY, TRUE_LATENTS_KEY
from sctbr._tree import EnvironmentTree
from sctbr.datasets import (
    house_keeping_genes,
    pbmc3k,
    read_gtex,
    regulators,
    select_epithelial,
    semisynthetic,
    weakly_correlated_genes,
)
from sctbr.experiments._common import check_methods, counts_fits, fit_method, quiet, seeds, tidy
from sctbr.experiments._profiles import Profile, get_profile
from sctbr.metrics import chance_mcc

#: Cell-type column of the GTEx atlas used as environments.
GTEX_GROUPBY = "Broad cell type"
#: Environments of the semi-synthetic experiments: the cell types, or Louvain sub-clusters of every cell type.
ENVIRONMENTS = ("cell_types", "subclusters")
#: Latent genes of the semi-synthetic experiments: house-keeping genes, or weakly correlated regulated genes.
LATENTS = ("house_keeping", "weakly_correlated")
_PREPARED: dict[tuple, ad.AnnData] = {}


def _prepare(
    data: ad.AnnData | str | os.PathLike | None,
    groupby: str | None,
    profile: Profile,
    random_state: int,
    environments: str = "cell_types",
) -> tuple[ad.AnnData, str, str]:
    """MAGIC on all cells, then cap every cell type, then the dendrogram tree (the paper's preprocessing).

    With ``environments="subclusters"`` every cell type is split by :func:`sctbr.pp.subclusters` (after MAGIC, on
    all cells), the cap applies to every sub-cluster, and the tree is the cell-type dendrogram with every type's
    sub-clusters attached below it (:func:`sctbr.pp.environment_tree` with ``within``).

    Returns ``(adata, groupby, data_name)``, ``groupby`` being the environments' column. The bundled PBMC3k is
    prepared once per setting and cached.
    """
    if environments not in ENVIRONMENTS:
        raise ValueError(f"Unknown environments {environments!r}; choose one of {list(ENVIRONMENTS)}.")
    if data is None:
        key = ("pbmc3k", profile.max_cells, profile.min_cells, int(random_state), environments)
        if environments == "subclusters":
            key += (profile.subcluster_resolution, profile.min_subcluster_cells)
        if key not in _PREPARED:
            adata = pbmc3k()
            with quiet():
                pp.magic(adata, library_size="total_counts", random_state=random_state)
            _PREPARED[key] = (adata, _cap_and_tree(adata, "cell_type", profile, random_state, environments))
        adata, env_key = _PREPARED[key]
        return adata.copy(), env_key, "pbmc3k"
    if isinstance(data, str | os.PathLike):
        backed = read_gtex(Path(data), backed="r")
        try:
            adata = select_epithelial(backed)
        finally:
            backed.file.close()
        groupby = groupby or GTEX_GROUPBY
        latent = house_keeping_genes()
        genes = set(latent) | {tf for tfs in regulators(latent).values() for tf in tfs}
        with quiet():
            pp.magic(adata, layer="counts", genes=[g for g in adata.var_names if g in genes], random_state=random_state)
        name = "gtex"
    elif isinstance(data, ad.AnnData):
        if groupby is None:
            raise ValueError("Pass `groupby=` (the cell-type column) with your own AnnData.")
        adata = data.copy()
        if "magic" not in adata.layers:
            with quiet():
                pp.magic(adata, random_state=random_state)
        name = "custom"
    else:
        raise TypeError(f"`data` must be None (PBMC3k), a path to the GTEx atlas or an AnnData, got {type(data)}.")
    groupby = _cap_and_tree(adata, groupby, profile, random_state, environments)
    return adata, groupby, name


def _cap_and_tree(
    adata: ad.AnnData, groupby: str, profile: Profile, random_state: int, environments: str = "cell_types"
) -> str:
    """Cap the environments and build their tree in place; returns the environments' column."""
    with quiet():
        if environments == "subclusters":
            if not isinstance(adata.obs[groupby].dtype, pd.CategoricalDtype):
                adata.obs[groupby] = adata.obs[groupby].astype(str).astype("category")
            sub = pp.subclusters(
                adata,
                groupby,
                resolution=profile.subcluster_resolution,
                min_cells=profile.min_subcluster_cells,
                random_state=random_state,
            ).name
            pp.subsample(
                adata, sub, max_cells=profile.max_cells, min_cells=profile.min_cells, random_state=random_state
            )
            adata.obs[groupby] = adata.obs[groupby].cat.remove_unused_categories()
            pp.environment_tree(adata, sub, within=groupby)
            return str(sub)
        pp.subsample(
            adata, groupby, max_cells=profile.max_cells, min_cells=profile.min_cells, random_state=random_state
        )
        pp.environment_tree(adata, groupby)
    return groupby


def _latent_genes(adata: ad.AnnData, latents: str, profile: Profile) -> list[str]:
    """The genes held out as latents: house-keeping genes, or the weakly correlated rule on the prepared cells."""
    if latents == "house_keeping":
        return house_keeping_genes()
    if latents == "weakly_correlated":
        with quiet():
            return weakly_correlated_genes(
                adata,
                profile.n_latent_genes,
                max_corr=profile.max_latent_corr,
                min_regulators=profile.min_regulators,
                min_fraction=profile.min_fraction,
                min_r2=profile.min_latent_r2,
            )
    raise ValueError(f"Unknown latents {latents!r}; choose one of {list(LATENTS)}.")


def _semi(
    adata: ad.AnnData, groupby: str, k: int, profile: Profile, seed: int, latent_genes: list[str] | None = None
) -> ad.AnnData:
    with quiet():  # dropped genes are reported as warnings; the kept ones are in uns["simulation"]["latent_genes"]
        return semisynthetic(
            adata,
            latent_genes=house_keeping_genes() if latent_genes is None else latent_genes,
            groupby=groupby,
            k=int(k),
            noise_y=profile.noise_y,
            random_state=int(seed),
        )


def _semi_ks(
    ks, adata: ad.AnnData, groupby: str, profile: Profile, seed: int, latent_genes: list[str] | None = None
) -> list[int]:
    if ks is not None:
        return [int(k) for k in ks]
    n_latent = _semi(adata, groupby, 0, profile, seed, latent_genes).obsm[TRUE_LATENTS_KEY].shape[1]
    return list(range(n_latent + 1))


def _semi_columns(semi: ad.AnnData, groupby: str, name: str) -> dict:
    counts = semi.obs[groupby].value_counts()
    return {
        "n_latent_true": int(semi.obsm[TRUE_LATENTS_KEY].shape[1]),
        "n_inputs": int(semi.n_vars),
        "n_obs": int(semi.n_obs),
        "n_environments": int(semi.obs[groupby].nunique()),
        "median_cells_per_environment": float(counts[counts > 0].median()),
        "data": name,
    }


def span_r2(z_true: np.ndarray, z_est: np.ndarray) -> float:
    """Mean over the true latents of the R² of their least-squares regression (with intercept) on ``z_est``.

    1 when the fitted latents span the true ones (an identifiability failure is then only a mixing); low when the
    encoder misses them.
    """
    z_true = np.asarray(z_true, dtype=float)
    design = np.column_stack([np.ones(len(z_est)), np.asarray(z_est, dtype=float)])
    coef, *_ = np.linalg.lstsq(design, z_true, rcond=None)
    resid = z_true - design @ coef
    return float(np.mean(1 - resid.var(axis=0) / z_true.var(axis=0)))


@counts_fits
def semisynthetic_sweep(
    profile: str | Profile = "quick",
    *,
    data: ad.AnnData | str | os.PathLike | None = None,
    groupby: str | None = None,
    environments: str = "cell_types",
    latents: str = "house_keeping",
    random_state: int = 0,
    accelerator: str = "auto",
    **overrides,
) -> pd.DataFrame:
    """MCC of TBR and the baseline on real cells with a simulated phenotype, per sparsity level (Fig. 4a).

    The paper's semi-synthetic design (:func:`sctbr.datasets.semisynthetic`): the expression of the house-keeping
    genes is held out as the true latents, the transcription factors regulating them are the inputs, and the
    phenotype changes by ``k`` entries on every arc of the cell-type dendrogram. Preprocessing as in the paper:
    MAGIC on all cells, then every cell type capped at ``profile.max_cells`` cells, then Scanpy's dendrogram.

    A benchmark where the MCC means more: ``environments="subclusters"`` splits every cell type into Louvain
    sub-clusters (:func:`sctbr.pp.subclusters`; about 30 environments on PBMC3k instead of 9) on a tree that
    follows the cell types, and ``latents="weakly_correlated"`` holds out weakly correlated regulated genes
    (:func:`sctbr.datasets.weakly_correlated_genes`; by default only genes that the inputs predict with
    cross-validated R² ≥ 0.8) instead of the co-expressed house-keeping genes. Every row reports ``chance_mcc``,
    the MCC of random mixtures of the true latents (:func:`sctbr.metrics.chance_mcc`), and ``chance_mcc_fit``, that
    of random mixtures of the method's own fitted latents (the chance level of its span).

    Parameters
    ----------
    profile
        ``"quick"``, ``"local"``, ``"paper"`` or a :class:`~sctbr.experiments.Profile`.
    data
        ``None`` for the bundled PBMC3k (:func:`sctbr.datasets.pbmc3k`, nine cell types); a path to the GTEx v8
        snRNA-seq atlas (read with :func:`sctbr.datasets.read_gtex`, epithelial cells as in the paper); or an
        AnnData with counts in ``X`` (or a ``"magic"`` layer, used as it is).
    groupby
        Cell-type column; defaults to ``"cell_type"`` (PBMC3k) or ``"Broad cell type"`` (GTEx).
    environments
        ``"cell_types"`` (the paper's) or ``"subclusters"`` (sub-clusters of every cell type, with
        ``profile.subcluster_resolution`` and ``profile.min_subcluster_cells``; the cap applies per sub-cluster).
    latents
        ``"house_keeping"`` (the paper's) or ``"weakly_correlated"`` (the rule of
        :func:`sctbr.datasets.weakly_correlated_genes` with the profile's ``n_latent_genes``, ``max_latent_corr``,
        ``min_regulators``, ``min_fraction`` and ``min_latent_r2``, applied to the prepared cells).
    random_state
        Seed of the first repetition (phenotype and fit); the preprocessing uses ``random_state`` too.
    accelerator
        Lightning's accelerator.
    **overrides
        Fields of :class:`~sctbr.experiments.Profile` to change, e.g. ``semi_ks=(1,), max_cells=100``.

    Returns
    -------
    The tidy table: one row per method x k x repetition with ``mcc`` and ``test_mse`` on the test cells,
    ``transfer_mse`` (NaN), ``n_latent`` (= ``n_latent_true``, the usable latent genes), ``fit_seconds``,
    ``validation_mse``, ``lam``, ``chance_mcc`` (random mixtures of the true latents), ``span_r2`` (mean R² of each
    true latent regressed on the fitted latents, test cells), ``chance_mcc_fit`` (random mixtures of the fitted
    latents scored against the true ones, test cells: the chance level of the fit's span), ``n_inputs``,
    ``n_obs``, ``n_environments``, ``median_cells_per_environment``, ``environments``, ``latents``,
    ``latent_genes`` (``;``-joined), ``data`` and ``profile``.

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.semisynthetic_sweep("quick")  # doctest: +SKIP
    >>> sctbr.pl.mcc(results)  # doctest: +SKIP
    >>> finer = sctbr.experiments.semisynthetic_sweep(
    ...     "local", environments="subclusters", latents="weakly_correlated", semi_ks=(1,)
    ... )  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    methods = check_methods(prof.methods)
    if latents not in LATENTS:
        raise ValueError(f"Unknown latents {latents!r}; choose one of {list(LATENTS)}.")
    prepared, groupby, name = _prepare(data, groupby, prof, random_state, environments)
    genes = _latent_genes(prepared, latents, prof)
    rows = []
    chance: float | None = None
    for seed in seeds(prof, random_state, real=True):
        for k in _semi_ks(prof.semi_ks, prepared, groupby, prof, seed, genes):
            semi = _semi(prepared, groupby, k, prof, seed, genes)
            z_true = np.asarray(semi.obsm[TRUE_LATENTS_KEY])
            n_latent = z_true.shape[1]
            if chance is None:  # the latents are the same expression in every repetition
                chance = chance_mcc(z_true, random_state=random_state)
            extra = {
                "chance_mcc": chance,
                **_semi_columns(semi, groupby, name),
                "environments": environments,
                "latents": latents,
                "latent_genes": ";".join(str(g) for g in semi.uns[SIMULATION_KEY]["latent_genes"]),
            }
            for method in methods:
                row, result = fit_method(
                    semi,
                    method,
                    n_latent=n_latent,
                    seed=seed,
                    profile=prof,
                    max_epochs=prof.semi_max_epochs,
                    lams=prof.semi_lams,
                    accelerator=accelerator,
                    groupby=groupby,
                    return_result=True,
                )
                test = result.split == "test"
                enough = test.sum() > n_latent + 1
                row["span_r2"] = span_r2(z_true[test], result.latents[test]) if enough else np.nan
                # the chance level of this fit's span: random bases of its own latent space
                row["chance_mcc_fit"] = (
                    chance_mcc(z_true[test], result.latents[test], random_state=random_state) if enough else np.nan
                )
                rows.append({"k": int(k), **row, **extra})
    return tidy(rows, "semisynthetic_sweep", prof)


def _choose_held_out(
    tree, counts: pd.Series, n_held_out: int, min_neighbour_cells: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Pick cell types to hold out whose closest observed cell type has enough cells.

    Cell types are tried in random order; one is added to the held-out set if, with it held out, every held-out
    type's closest observed type (tree distance, :meth:`sctbr.EnvironmentTree.closest`) has at least
    ``min_neighbour_cells`` cells. Returns ``(held_out, neighbour)`` pairs.
    """
    types = [str(t) for t in counts.index]
    held: list[str] = []
    for t in rng.permutation(types):
        if len(held) == n_held_out:
            break
        trial = [*held, str(t)]
        observed = [c for c in types if c not in trial]
        if not observed:
            break
        if all(counts[tree.closest(h, observed)] >= min_neighbour_cells for h in trial):
            held = trial
    if not held:
        raise ValueError(
            f"No cell type has a closest observed cell type with at least {min_neighbour_cells} cells; lower "
            "`min_neighbour_cells` or raise `max_cells`."
        )
    observed = [c for c in types if c not in held]
    return [(h, tree.closest(h, observed)) for h in held]


def _one_sparse_heads(semi: ad.AnnData, groupby: str, pairs, rng: np.random.Generator, noise_y: float) -> dict:
    """Give every held-out type the head of its neighbour plus one Gaussian change, and redraw its phenotype.

    The paper's transfer design: "the unobserved environments had 1-sparse changes from the closest observed
    environment". Updates ``obs["y"]`` of the held-out cells and their rows of ``uns["simulation"]["weights"]``;
    returns the changed latent of each held-out type.
    """
    sim = semi.uns[SIMULATION_KEY]
    nodes = [str(n) for n in sim["nodes"]]
    weights = np.array(sim["weights"], dtype=float)
    z = np.asarray(semi.obsm[TRUE_LATENTS_KEY], dtype=float)
    labels = semi.obs[groupby].astype(str).to_numpy()
    y = semi.obs["y"].to_numpy(dtype=float).copy()
    changed = {}
    for held, neighbour in pairs:
        j = int(rng.integers(weights.shape[1]))
        head = weights[nodes.index(neighbour)].copy()
        head[j] += rng.normal(scale=float(sim["params"].get("delta_scale", 1.0)))
        weights[nodes.index(held)] = head
        cells = labels == held
        y[cells] = z[cells] @ head + noise_y * rng.normal(size=int(cells.sum()))
        changed[held] = j
    semi.obs["y"] = y
    sim["weights"] = weights
    return changed


@counts_fits
def transfer(
    profile: str | Profile = "quick",
    *,
    data: ad.AnnData | str | os.PathLike | None = None,
    groupby: str | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
    **overrides,
) -> pd.DataFrame:
    """Error on cell types held out of training, per sparsity level (Fig. 4b).

    On the semi-synthetic data of :func:`semisynthetic_sweep`, ``profile.n_held_out`` cell types whose closest
    observed cell type in the tree has at least ``profile.min_neighbour_cells`` cells are held out (chosen at
    random per repetition, the same for every k). As in the paper, a held-out type's head is its neighbour's head
    with one changed entry. TBR is trained on all observed cell types and predicts a held-out type with the head of
    its closest observed type; the baseline is trained on that neighbour's cells alone. Both are scored by the MSE
    on all cells of the held-out type (``transfer_mse``).

    Parameters
    ----------
    profile
        ``"quick"``, ``"local"``, ``"paper"`` or a :class:`~sctbr.experiments.Profile`.
    data
        As in :func:`semisynthetic_sweep` (``None``: the bundled PBMC3k).
    groupby
        As in :func:`semisynthetic_sweep`.
    random_state
        Seed of the first repetition (held-out types, phenotype, fits).
    accelerator
        Lightning's accelerator.
    **overrides
        Fields of :class:`~sctbr.experiments.Profile` to change, e.g. ``transfer_ks=(1,), n_held_out=1``.

    Returns
    -------
    The tidy table: one row per method x k x held-out type x repetition with ``transfer_mse``, ``held_out``,
    ``neighbour``, ``changed_latent`` and the fit's ``mcc`` and ``test_mse`` on its own test cells (TBR: the
    observed types; baseline: the neighbour), as in :func:`semisynthetic_sweep`.

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.transfer("quick")  # doctest: +SKIP
    >>> sctbr.pl.transfer(results)  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    methods = check_methods(prof.methods)
    prepared, groupby, name = _prepare(data, groupby, prof, random_state)
    tree = EnvironmentTree.coerce(dict(prepared.uns[TREE_KEY]))
    counts = prepared.obs[groupby].astype(str).value_counts()
    rows = []
    for seed in seeds(prof, random_state, real=True):
        rng = np.random.default_rng(seed)
        pairs = _choose_held_out(tree, counts, prof.n_held_out, prof.min_neighbour_cells, rng)
        held_types = [h for h, _ in pairs]
        for k in prof.transfer_ks:
            semi = _semi(prepared, groupby, k, prof, seed)
            changed = _one_sparse_heads(semi, groupby, pairs, np.random.default_rng([seed, int(k)]), prof.noise_y)
            labels = semi.obs[groupby].astype(str).to_numpy()
            observed = _subset(semi, groupby, ~np.isin(labels, held_types))
            n_latent = semi.obsm[TRUE_LATENTS_KEY].shape[1]
            fit = {
                "n_latent": n_latent,
                "seed": seed,
                "profile": prof,
                "max_epochs": prof.semi_max_epochs,
                "lams": prof.semi_lams,
                "accelerator": accelerator,
                "groupby": groupby,
                "return_result": True,
            }
            tree_fits = {m: fit_method(observed, m, **fit) for m in methods if m != "baseline"}
            for held, neighbour in pairs:
                cells = labels == held
                y_held = semi.obs["y"].to_numpy(dtype=float)[cells]
                fits = dict(tree_fits)
                if "baseline" in methods:
                    fits["baseline"] = fit_method(_subset(semi, groupby, labels == neighbour), "baseline", **fit)
                for method in methods:
                    row, result = fits[method]
                    with quiet():  # the neighbour's head, on the held-out cells (nothing is written into semi)
                        pred = np.asarray(result.model.predict(semi[cells], environment=neighbour), dtype=float)
                    rows.append(
                        {
                            "k": int(k),
                            **row,
                            "transfer_mse": float(np.mean((pred - y_held) ** 2)),
                            **_semi_columns(semi, groupby, name),
                            "held_out": held,
                            "neighbour": neighbour,
                            "n_held_out_cells": int(cells.sum()),
                            "changed_latent": changed[held],
                        }
                    )
    return tidy(rows, "transfer", prof)


def _subset(adata: ad.AnnData, groupby: str, mask: np.ndarray) -> ad.AnnData:
    out = adata[mask].copy()
    out.obs[groupby] = out.obs[groupby].cat.remove_unused_categories()
    return out
