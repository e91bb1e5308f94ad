"""``sctbr.tl.causal_effects``: per-environment effects of the latents on the target, with confidence intervals."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._constants import CAUSAL_EFFECTS_COLUMNS, SPLITS, TBR_KEY, ResultKeys, split_key, stored_keys
from sctbr._docs import doc_params
from sctbr._utils import environment_levels
from sctbr._validation import binary_target, check_names, check_real, check_str

COLUMNS = CAUSAL_EFFECTS_COLUMNS
#: Covariances of the coefficients :func:`causal_effects` accepts (statsmodels' ``cov_type``).
COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3")
_ALL_CELLS = "all cells"


def _fit_record(adata: AnnData, key: str) -> tuple[dict, ResultKeys]:
    """The ``uns`` entry of a ``sctbr.tl.tbr`` run and its keys, or an error saying how to make them."""
    run = adata.uns.get(key)
    keys = stored_keys(run, key)
    if not hasattr(run, "get") or "params" not in run or keys.obsm not in adata.obsm:
        runs = [
            k
            for k, v in adata.uns.items()
            if hasattr(v, "get") and "params" in v and stored_keys(v, k).obsm in adata.obsm
        ]
        raise KeyError(
            f"No sctbr fit under key {key!r} (needs adata.uns[{key!r}] and adata.obsm[{keys.obsm!r}]). Run "
            f"sctbr.tl.tbr(adata, key_added={key!r}) first" + (f", or pass key= one of {runs}." if runs else ".")
        )
    return run, keys


def ols_effects(z: np.ndarray, y: np.ndarray, alpha: float, cov_type: str = "nonrobust") -> dict[str, np.ndarray]:
    """OLS of ``y`` on the z-scored columns of ``z`` with an intercept (``statsmodels``): effects, SEs, t-based CIs.

    Columns constant within the cells get NaN, and so do all columns when they are collinear. ``cov_type`` is
    statsmodels' covariance of the coefficients: ``"nonrobust"`` (classical, ``sigma^2 (X'X)^{-1}`` with
    ``sigma^2 = RSS / (n - p - 1)``) or a heteroscedasticity-robust ``"HC0"`` ... ``"HC3"``. Intervals and p-values
    use Student t with ``n - p - 1`` degrees of freedom for every ``cov_type``.
    """
    import statsmodels.api as sm  # imported here: statsmodels is slow to import and only this function needs it

    n, d = z.shape
    sd = z.std(axis=0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(z).max(axis=0))
    out = {name: np.full(d, np.nan) for name in ("effect", "se", "ci_low", "ci_high", "p_value")}
    p = int(keep.sum())
    if p == 0 or n - p - 1 < 1:
        return out
    zs = (z[:, keep] - z[:, keep].mean(axis=0)) / sd[keep]
    design = np.column_stack([np.ones(n), zs])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return out  # collinear latents within this environment: effects not separately estimable
    with np.errstate(divide="ignore", invalid="ignore"):
        fit = sm.OLS(y, design).fit(cov_type=cov_type, use_t=True)
        ci = np.asarray(fit.conf_int(alpha=alpha))
        out["effect"][keep] = fit.params[1:]
        out["se"][keep] = fit.bse[1:]
        out["ci_low"][keep] = ci[1:, 0]
        out["ci_high"][keep] = ci[1:, 1]
        out["p_value"][keep] = fit.pvalues[1:]
    return out


@doc_params("fit_key")
def causal_effects(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    groupby: str | None = None,
    target: str | None = None,
    split: str | Sequence[str] | None = None,
    alpha: float = 0.05,
    cov_type: str = "nonrobust",
) -> pd.DataFrame:
    """Get the effect of each latent on the target within every environment, with confidence intervals (OLS).

    A getter, like scanpy's ``sc.get``: it returns a table and writes nothing into ``adata``.

    Within each environment the latents of a :func:`sctbr.tl.tbr` fit (``adata.obsm["X_tbr"]``) are z-scored
    and the target is regressed on all of them together by ordinary least squares with an intercept; the
    coefficient of a latent is its effect: the change of the target per within-environment standard deviation of
    the latent, the other latents held fixed. This is the paper's average-treatment-effect recipe (Table 3; the same
    coefficients, in absolute value, that :func:`sctbr.metrics.ate_table` compares with the truth on simulations).
    The regression is statsmodels' ``OLS``; intervals are the classical OLS ones (Student t, ``n - d - 1`` degrees of
    freedom), or heteroscedasticity-robust ones with ``cov_type="HC3"``.

    Reading it: TBR identifies latents up to sign and scale, so an effect's sign is relative to the latent's
    orientation; compare signs and sizes of one latent across environments (where its effect switches on, off or
    flips along the tree), not with an outside reference. The intervals treat the latents as measured without error
    and hold when the latents were identified (check :func:`sctbr.tl.stability`). Cells the encoder was trained on
    fit the target slightly too well; ``split="validation"`` (or ``"test"``) uses held-out cells only.

    A binary target (0/1, boolean or two-level) is regressed linearly too: a linear probability model. Its effects are
    changes of the probability of the second level per standard deviation of the latent, valid as average slopes but
    not bounded to [0, 1] (predictions can leave it), and its residuals are heteroscedastic by construction (variance
    ``p (1 - p)``), so the classical intervals are off; use ``cov_type="HC3"`` for binary targets.

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` (or :func:`sctbr.tl.baseline`) under ``key``.
    {fit_key}
    groupby
        Column of ``adata.obs`` with the environments; default: the one the fit used (a baseline fitted without one
        gives a single group of all cells).
    target
        Numeric or binary column of ``adata.obs``; default: the fit's target (one of them if it had several).
    split
        ``None`` for all cells, or ``"train"``, ``"validation"``, ``"test"`` (or a list of them): cells of the
        fit's split (``adata.obs[f"{key}_split"]``, e.g. ``obs["tbr_split"]``; it follows a subset of the cells).
    alpha
        1 - coverage of the intervals (0.05: 95% intervals).
    cov_type
        Covariance of the coefficients, passed to statsmodels' ``OLS.fit``: ``"nonrobust"`` (classical, the
        default) or the heteroscedasticity-robust ``"HC0"``, ``"HC1"``, ``"HC2"``, ``"HC3"`` (HC3 is the usual
        choice for small environments and for binary targets).

    Returns
    -------
    Tidy DataFrame (nothing is written into ``adata``), one row per environment x latent (environments in the groupby's category order, which is the
    tree's order for sctbr's data): ``environment``, ``latent``, ``effect``, ``se``, ``ci_low``, ``ci_high``,
    ``p_value`` (t-test of no effect) and ``n_cells``. A latent constant within an environment, or collinear with
    the others there, gets NaN.

    Warns
    -----
    UserWarning
        Naming environments skipped for having fewer than ``n_latent + 2`` cells.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.tbr(adata, n_latent=2, max_epochs=60)  # doctest: +SKIP
    >>> effects = sctbr.tl.causal_effects(adata)  # doctest: +SKIP
    >>> effects.head()  # doctest: +SKIP
    >>> sctbr.pl.causal_effects(effects)  # doctest: +SKIP
    """
    check_str("key", key, fix="The key_added of a sctbr.tl.tbr fit, e.g. 'tbr'.")
    check_str("groupby", groupby, none_ok=True, fix="A column of adata.obs with the environments, or None.")
    check_str("target", target, none_ok=True, fix="A numeric or binary column of adata.obs, or None.")
    check_names("split", split, none_ok=True, fix=f"None or among {list(SPLITS)}.")
    check_real(
        "alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True, fix="0.05 gives 95% intervals (in (0, 1))."
    )
    if cov_type not in COV_TYPES:
        raise ValueError(
            f"`cov_type` must be one of {list(COV_TYPES)} (statsmodels' OLS covariances), got {cov_type!r}."
        )
    run, keys = _fit_record(adata, key)
    params = run["params"]
    z = np.asarray(adata.obsm[keys.obsm], dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != adata.n_obs:
        raise ValueError(f"adata.obsm[{keys.obsm!r}] must be cells x latents, got shape {z.shape}.")

    if target is None:
        fitted = params.get("target")
        fitted = [str(t) for t in np.atleast_1d(fitted)] if fitted is not None else []
        if len(fitted) != 1:
            raise ValueError(f"The fit under {key!r} had targets {fitted}; pass target='<one of them>'.")
        target = fitted[0]
    if target not in adata.obs:
        raise KeyError(f"Target {target!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    y, _ = binary_target(adata, target)

    if groupby is None:
        groupby = str(params.get("groupby", "") or "") or None
    if groupby is None:
        env = pd.Series(pd.Categorical([_ALL_CELLS] * adata.n_obs))
    else:
        if groupby not in adata.obs:
            raise KeyError(
                f"groupby {groupby!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]})."
            )
        env = adata.obs[groupby].reset_index(drop=True)
        if not isinstance(env.dtype, pd.CategoricalDtype):
            env = env.astype(str).astype("category")

    mask = np.isfinite(y) & np.isfinite(z).all(axis=1) & env.notna().to_numpy()
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        unknown = [s for s in wanted if s not in SPLITS]
        if unknown:
            raise ValueError(f"`split` must be None or among {list(SPLITS)}, got {unknown}.")
        column = split_key(keys.obs)
        if column not in adata.obs:
            raise ValueError(
                f"The fit under {key!r} has no per-cell split (adata.obs[{column!r}]); rerun sctbr.tl.tbr or pass "
                "split=None."
            )
        mask &= adata.obs[column].astype(str).isin(wanted).to_numpy()
        if not mask.any():
            raise ValueError(f"No cells in split {wanted} of the fit under {key!r}.")

    d = z.shape[1]
    names = [f"latent_{j}" for j in range(d)]
    levels = environment_levels(env[mask])
    rows, skipped = [], []
    for level in levels:
        cells = mask & (env == level).to_numpy()
        n = int(cells.sum())
        if n < d + 2:
            skipped.append(level)
            continue
        fit = ols_effects(z[cells], y[cells], float(alpha), cov_type)
        for j in range(d):
            rows.append(
                (level, names[j], fit["effect"][j], fit["se"][j], fit["ci_low"][j], fit["ci_high"][j],
                 fit["p_value"][j], n)
            )  # fmt: skip
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} environment(s) with fewer than {d + 2} cells (n_latent + 2): "
            f"{[str(s) for s in skipped[:10]]}.",
            UserWarning,
            stacklevel=2,
        )
    if not rows:
        raise ValueError(f"No environment has at least {d + 2} cells (n_latent + 2) to estimate the effects.")
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["environment"] = pd.Categorical(table["environment"], categories=levels)
    table["latent"] = pd.Categorical(table["latent"], categories=names)
    table["n_cells"] = table["n_cells"].astype(np.int64)
    return table
