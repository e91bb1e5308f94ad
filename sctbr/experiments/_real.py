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
from sctbr.datasets import house_keeping_genes, pbmc3k, read_gtex, regulators, select_epithelial, semisynthetic
from sctbr.experiments._common import check_methods, fit_method, quiet, seeds, tidy
from sctbr.experiments._profiles import Profile, get_profile

#: Cell-type column of the GTEx atlas used as environments.
GTEX_GROUPBY = "Broad cell type"
_PREPARED: dict[tuple, ad.AnnData] = {}


def _prepare(
    data: ad.AnnData | str | os.PathLike | None, groupby: str | None, profile: Profile, random_state: int
) -> tuple[ad.AnnData, str, str]:
    """MAGIC on all cells, then cap every cell type, then the dendrogram tree (the paper's preprocessing).

    Returns ``(adata, groupby, data_name)``. The bundled PBMC3k is prepared once per setting and cached.
    """
    if data is None:
        key = ("pbmc3k", profile.max_cells, profile.min_cells, int(random_state))
        if key not in _PREPARED:
            adata = pbmc3k()
            with quiet():
                pp.magic(adata, library_size="total_counts", random_state=random_state)
            _cap_and_tree(adata, "cell_type", profile, random_state)
            _PREPARED[key] = adata
        return _PREPARED[key].copy(), "cell_type", "pbmc3k"
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
    _cap_and_tree(adata, groupby, profile, random_state)
    return adata, groupby, name


def _cap_and_tree(adata: ad.AnnData, groupby: str, profile: Profile, random_state: int) -> None:
    with quiet():
        pp.subsample(
            adata, groupby, max_cells=profile.max_cells, min_cells=profile.min_cells, random_state=random_state
        )
        pp.environment_tree(adata, groupby)


def _semi(adata: ad.AnnData, groupby: str, k: int, profile: Profile, seed: int) -> ad.AnnData:
    with quiet():  # dropped genes are reported as warnings; the kept ones are in uns["simulation"]["latent_genes"]
        return semisynthetic(
            adata,
            latent_genes=house_keeping_genes(),
            groupby=groupby,
            k=int(k),
            noise_y=profile.noise_y,
            random_state=int(seed),
        )


def _semi_ks(ks, adata: ad.AnnData, groupby: str, profile: Profile, seed: int) -> list[int]:
    if ks is not None:
        return [int(k) for k in ks]
    n_latent = _semi(adata, groupby, 0, profile, seed).obsm[TRUE_LATENTS_KEY].shape[1]
    return list(range(n_latent + 1))


def _semi_columns(semi: ad.AnnData, groupby: str, name: str) -> dict:
    return {
        "n_latent_true": int(semi.obsm[TRUE_LATENTS_KEY].shape[1]),
        "n_inputs": int(semi.n_vars),
        "n_obs": int(semi.n_obs),
        "n_environments": int(semi.obs[groupby].nunique()),
        "data": name,
    }


def semisynthetic_sweep(
    profile: str | Profile = "quick",
    *,
    data: ad.AnnData | str | os.PathLike | None = None,
    groupby: str | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
    **overrides,
) -> pd.DataFrame:
    """MCC of TBR and the baseline on real cells with a simulated phenotype, per sparsity level (Fig. 4a).

    The paper's semi-synthetic design (:func:`sctbr.datasets.semisynthetic`): the expression of the house-keeping
    genes is held out as the true latents, the transcription factors regulating them are the inputs, and the
    phenotype changes by ``k`` entries on every arc of the cell-type dendrogram. Preprocessing as in the paper:
    MAGIC on all cells, then every cell type capped at ``profile.max_cells`` cells, then Scanpy's dendrogram.

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
    random_state
        Seed of the first repetition (phenotype and fit); the preprocessing uses ``random_state`` too.
    accelerator
        Lightning's accelerator.
    **overrides
        Fields of :class:`~sctbr.experiments.Profile` to change, e.g. ``semi_ks=(1,), max_cells=100``.

    Returns
    -------
    The tidy table: one row per method x k x repetition with ``mcc`` and ``test_mse`` on the test cells,
    ``transfer_mse`` (NaN), ``n_latent`` (= ``n_latent_true``, the usable house-keeping genes), ``fit_seconds``,
    ``validation_mse``, ``lam``, ``n_inputs``, ``n_obs``, ``n_environments``, ``data`` and ``profile``.

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.semisynthetic_sweep("quick")  # doctest: +SKIP
    >>> sctbr.pl.mcc(results)  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    methods = check_methods(prof.methods)
    prepared, groupby, name = _prepare(data, groupby, prof, random_state)
    rows = []
    for seed in seeds(prof, random_state, real=True):
        for k in _semi_ks(prof.semi_ks, prepared, groupby, prof, seed):
            semi = _semi(prepared, groupby, k, prof, seed)
            n_latent = semi.obsm[TRUE_LATENTS_KEY].shape[1]
            for method in methods:
                row = fit_method(
                    semi,
                    method,
                    n_latent=n_latent,
                    seed=seed,
                    profile=prof,
                    max_epochs=prof.semi_max_epochs,
                    lams=prof.semi_lams,
                    accelerator=accelerator,
                    groupby=groupby,
                )
                rows.append({"k": int(k), **row, **_semi_columns(semi, groupby, name)})
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
