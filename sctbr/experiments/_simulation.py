"""The paper's simulation experiments (Fig. 3, 5, 6, 7, 8 and Table 3)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from sctbr._constants import TRUE_LATENTS_KEY
from sctbr._docs import doc_params
from sctbr.datasets import simulate
from sctbr.experiments._common import check_methods, counts_fits, fit_method, quiet, seeds, tidy
from sctbr.experiments._profiles import Profile, get_profile
from sctbr.metrics import ate_table


def _simulate(profile: Profile, seed: int, **kwargs):
    params = {
        "depth": profile.depth,
        "n_inputs": profile.n_inputs,
        "n_latent": profile.n_latent,
        "n_obs_per_env": profile.n_obs_per_env,
        "noise_z": profile.noise_z,
        "noise_y": profile.noise_y,
        "random_state": int(seed),
    }
    params.update(kwargs)
    return simulate(**params), params


def _setting_columns(params: dict, adata) -> dict:
    return {
        "n_latent_true": int(params["n_latent"]),
        "depth": int(params["depth"]),
        "leaves_only": bool(params.get("leaves_only", False)),
        "psi": str(params.get("psi", "mlp")),
        "n_obs": int(adata.n_obs),
        "n_environments": int(adata.obs["environment"].nunique()),
    }


def _sweep(
    experiment: str,
    profile: Profile,
    levels: Iterable,
    *,
    random_state: int,
    accelerator: str,
    **simulate_kwargs,
) -> pd.DataFrame:
    """Simulate at every sparsity level and seed, fit every method with the true number of latents."""
    methods = check_methods(profile.methods)
    rows = []
    for seed in seeds(profile, random_state):
        for k in levels:
            adata, params = _simulate(profile, seed, k=k, **simulate_kwargs)
            for method in methods:
                row = fit_method(
                    adata,
                    method,
                    n_latent=params["n_latent"],
                    seed=seed,
                    profile=profile,
                    max_epochs=profile.max_epochs,
                    lams=profile.lams,
                    accelerator=accelerator,
                )
                rows.append({"k": k, **row, **_setting_columns(params, adata)})
    return tidy(rows, experiment, profile)


def _ks(profile: Profile) -> list[int]:
    ks = range(profile.n_latent + 1) if profile.ks is None else profile.ks
    return [int(k) for k in ks]


@counts_fits
@doc_params("experiment_run")
def sparsity_sweep(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """MCC and test MSE of TBR and the baseline as the changes per arc go from 0 to ``n_latent`` (Fig. 3a, 3b).

    Balanced binary tree of depth ``profile.depth``, every non-root environment observed,
    ``profile.n_obs_per_env`` cells each, a nonlinear (random MLP) map from inputs to latents, and ``k`` Gaussian
    changes on every arc. TBR should identify the latents (MCC near 1) at k = 1 and stay ahead of the baseline
    for larger k; nothing identifies them at k = 0.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table: one row per method x k x repetition with ``experiment``, ``method``, ``k``, ``seed``, ``mcc``
    and ``test_mse`` (on the 25% test cells), ``transfer_mse`` (NaN), ``n_latent``, ``fit_seconds``,
    ``validation_mse``, ``lam``, ``n_latent_true``, ``depth``, ``leaves_only``, ``psi``, ``n_obs``,
    ``n_environments`` and ``profile``.

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.sparsity_sweep("quick", ks=(0, 1))  # doctest: +SKIP
    >>> results.groupby(["method", "k"])["mcc"].mean()  # doctest: +SKIP
    >>> sctbr.pl.mcc(results)  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    return _sweep("sparsity_sweep", prof, _ks(prof), random_state=random_state, accelerator=accelerator)


@counts_fits
@doc_params("experiment_run")
def leaves_only(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """The sparsity sweep with cells observed at the leaves only, on a tree one level deeper (Fig. 5).

    The biological case: today's cell types are the leaves, their progenitors are unobserved internal nodes. The
    tree has depth ``profile.depth + 1`` so that the number of observed environments is about that of
    :func:`sparsity_sweep`.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table, as :func:`sparsity_sweep` (``leaves_only`` is True, ``depth`` the deeper tree's).

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.leaves_only("quick")  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    return _sweep(
        "leaves_only",
        prof,
        _ks(prof),
        random_state=random_state,
        accelerator=accelerator,
        depth=prof.depth + 1,
        leaves_only=True,
    )


@counts_fits
@doc_params("experiment_run")
def linear_psi(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """The sparsity sweep with an all-linear data-generating process (Fig. 7).

    The latents are a random linear map of the inputs (plus noise); the encoder is still the MLP.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table, as :func:`sparsity_sweep` (``psi`` is ``"linear"``).

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.linear_psi("quick")  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    return _sweep("linear_psi", prof, _ks(prof), random_state=random_state, accelerator=accelerator, psi="linear")


@counts_fits
@doc_params("experiment_run")
def bernoulli_changes(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """Random per-arc sparsity: every latent changes on every arc with a probability (Fig. 8).

    Arcs then carry different numbers of changes (some none, some several); ``k`` is the Bernoulli rate (a float),
    swept over ``profile.rates``.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table, as :func:`sparsity_sweep`, with the rate in ``k`` (float).

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.bernoulli_changes("quick", rates=(0.2, 0.5))  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    rates = [float(r) for r in prof.rates]
    bad = [r for r in rates if not 0.0 < r < 1.0]
    if bad:
        raise ValueError(f"Bernoulli rates must lie in (0, 1), got {bad}.")
    return _sweep("bernoulli_changes", prof, rates, random_state=random_state, accelerator=accelerator)


@counts_fits
@doc_params("experiment_run")
def latent_dimension(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """Test MSE as the fitted number of latents varies, with the true number fixed (Fig. 6).

    One change per arc (k = 1) and ``profile.n_latent_true`` true latents; every method is fitted with each of
    ``profile.latent_dims`` latents. TBR's error should drop until the true dimension and plateau after it,
    which is a way to choose ``n_latent``: fewer latents cannot follow the sparse changes of the heads. The
    summary (:func:`~sctbr.experiments.run`) calls the plateau the smallest dimension whose median test MSE over
    repetitions achieves 90% of the drop from the smallest dimension to the best one.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table: one row per method x fitted ``n_latent`` x repetition (``k`` = 1), with ``n_latent_true``;
    ``mcc`` averages the matched pairs, as many as the smaller of the two dimensions.

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.latent_dimension("quick")  # doctest: +SKIP
    >>> sctbr.pl.prediction_error(results, x="n_latent")  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    methods = check_methods(prof.methods)
    rows = []
    for seed in seeds(prof, random_state):
        adata, params = _simulate(prof, seed, k=1, n_latent=prof.n_latent_true)
        for n_latent in prof.latent_dims:
            for method in methods:
                row = fit_method(
                    adata,
                    method,
                    n_latent=int(n_latent),
                    seed=seed,
                    profile=prof,
                    max_epochs=prof.dims_max_epochs if prof.dims_max_epochs is not None else prof.max_epochs,
                    lams=prof.lams,
                    accelerator=accelerator,
                )
                rows.append({"k": 1, **row, **_setting_columns(params, adata)})
    return tidy(rows, "latent_dimension", prof)


#: Table 3 of the paper: ATE error at k = 1, ten environments pooled (mean ± sd).
PAPER_ATE = {"tbr": (0.05, 0.07), "baseline": (1.51, 1.8)}


@counts_fits
@doc_params("experiment_run")
def causal_effects(
    profile: str | Profile = "quick", *, random_state: int = 0, accelerator: str = "auto", **overrides
) -> pd.DataFrame:
    """Error of the per-environment effects (ATEs) of the latents on the phenotype at k = 1 (Table 3).

    Within every environment the phenotype of the test cells is regressed on the standardised true latents and,
    separately, on the matched standardised estimated latents (:func:`sctbr.metrics.ate_table`); ``ate_error`` is
    the mean squared difference of the absolute coefficients over the latents. The paper reports, pooled over
    environments, 0.05 ± 0.07 for TBR and 1.51 ± 1.8 for the baseline.

    Parameters
    ----------
    {experiment_run}

    Returns
    -------
    The tidy table with one row per method x environment x repetition: ``environment``, ``ate_error`` and the
    fit's columns as in :func:`sparsity_sweep` (``mcc`` and ``test_mse`` are the fit's, repeated on its rows).

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.causal_effects("quick")  # doctest: +SKIP
    >>> results.groupby("method")["ate_error"].agg(["mean", "std"])  # doctest: +SKIP
    """
    prof = get_profile(profile, **overrides)
    methods = check_methods(prof.methods)
    rows = []
    for seed in seeds(prof, random_state):
        adata, params = _simulate(prof, seed, k=1)
        for method in methods:
            row, result = fit_method(
                adata,
                method,
                n_latent=params["n_latent"],
                seed=seed,
                profile=prof,
                max_epochs=prof.max_epochs,
                lams=prof.lams,
                accelerator=accelerator,
                return_result=True,
            )
            test = result.split == "test"
            env = adata.obs["environment"][test]
            with quiet():  # environments with too few test cells are skipped (and named in a warning)
                table = ate_table(
                    np.asarray(adata.obsm[TRUE_LATENTS_KEY])[test],
                    result.latents[test],
                    adata.obs["y"].to_numpy()[test],
                    env,
                )
            per_env = table.groupby("environment", observed=True)["sq_error"].mean()  # in tree order
            for environment, error in per_env.items():
                rows.append(
                    {
                        "k": 1,
                        **row,
                        **_setting_columns(params, adata),
                        "environment": str(environment),
                        "ate_error": float(error),
                    }
                )
    return tidy(rows, "causal_effects", prof)
