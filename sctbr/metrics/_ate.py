"""Error of per-environment effects (ATEs) estimated from matched latents.

Each environment ``e`` has a linear head ``y = w_e^T z + eps``. Because latents are identified only up to
permutation and per-coordinate scaling (including sign), effects are compared on standardised latents and in
absolute value: within every environment both the true and the (matched) estimated latents are z-scored and ``y``
is regressed on them by ordinary least squares with an intercept.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from sctbr._utils import environment_levels

from ._mcc import CorrelationMethod, _as_2d, _constant_columns, _prescale, _validate_pair, match_latents

_COLUMNS = ["environment", "latent", "ate_true", "ate_est", "sq_error"]


def _standardised_abs_coefficients(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Absolute OLS coefficients (intercept dropped) of ``y`` on the z-scored columns of ``x``.

    Columns that are constant within the subset get coefficient 0.
    """
    x = _prescale(x)
    centered = x - x.mean(axis=0, keepdims=True)
    constant = _constant_columns(x, centered)
    coef = np.zeros(x.shape[1])
    keep = ~constant
    if np.any(keep):
        xs = centered[:, keep]
        xs = xs / np.sqrt(np.mean(xs**2, axis=0))
        design = np.column_stack([np.ones(x.shape[0]), xs])
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        coef[keep] = beta[1:]
    return np.abs(coef)


def ate_table(
    z_true: ArrayLike,
    z_est: ArrayLike,
    y: ArrayLike,
    environments: ArrayLike,
    *,
    method: CorrelationMethod = "pearson",
) -> pd.DataFrame:
    """Per-environment, per-latent comparison of standardised effects from true and estimated latents.

    Procedure (Table 3 of the TBR paper):

    1. Match the latents on all cells with :func:`~sctbr.metrics.match_latents`.
    2. Within each environment, z-score every column of ``z_true`` and every matched column of ``z_est``
       (mean and standard deviation computed within that environment).
    3. Regress ``y`` on the standardised true latents, and separately on the standardised matched estimated
       latents, by OLS with an intercept.
    4. Compare the absolute coefficients latent by latent.

    Parameters
    ----------
    z_true
        True latents, shape ``(n_cells, d)`` (or ``(n_cells,)`` for a single latent).
    z_est
        Estimated latents, shape ``(n_cells, d_est)``.
    y
        Outcome, shape ``(n_cells,)``.
    environments
        Environment label of each cell, length ``n_cells``. Environments are processed in categorical order for a
        :class:`pandas.Categorical` (unused categories dropped), otherwise in sorted order.
    method
        Correlation used for matching, ``"pearson"`` or ``"spearman"``. The regressions always use the raw
        (standardised) latents.

    Returns
    -------
    pandas.DataFrame
        One row per environment x true latent, with columns

        ``environment``
            Environment label.
        ``latent``
            Index of the true latent.
        ``ate_true``
            Absolute standardised coefficient of the true latent.
        ``ate_est``
            Absolute standardised coefficient of the estimated latent matched to it. True latents left unmatched
            (when ``d_est < d``) have ``ate_est = 0``.
        ``sq_error``
            ``(ate_true - ate_est) ** 2``.

        A latent that is constant within an environment gets coefficient 0 there.

    Warns
    -----
    UserWarning
        Naming environments with fewer than ``d + 2`` cells, which are skipped.

    Raises
    ------
    ValueError
        On inconsistent shapes, non-finite values, missing environment labels, or if every environment is skipped.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import ate_table
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(600, 2))
    >>> env = np.repeat(["a", "b"], 300)
    >>> w = np.where(env[:, None] == "a", [1.0, 0.0], [0.5, 2.0])
    >>> y = (z * w).sum(axis=1) + 0.1 * rng.normal(size=600)
    >>> table = ate_table(z, -3.0 * z[:, ::-1], y, env)
    >>> table.columns.tolist()
    ['environment', 'latent', 'ate_true', 'ate_est', 'sq_error']
    >>> bool(np.allclose(table["ate_true"], table["ate_est"]))
    True
    """
    a, b = _validate_pair(z_true, z_est)
    n, d = a.shape
    y_arr = _as_2d(y, "y")
    if y_arr.shape[1] != 1:
        raise ValueError(f"`y` must be 1-D of length n_cells, got shape {np.shape(y)}.")
    y_arr = y_arr[:, 0]
    if y_arr.shape[0] != n:
        raise ValueError(f"`y` has {y_arr.shape[0]} entries but the latents have {n} rows (shape {a.shape}).")
    env = environments if isinstance(environments, pd.Series) else pd.Series(environments)
    env = env.reset_index(drop=True)
    if env.ndim != 1 or len(env) != n:
        raise ValueError(f"`environments` must have one label per cell ({n}), got {len(env)}.")
    if env.isna().any():
        raise ValueError("`environments` contains missing labels.")

    matching = match_latents(a, b, method=method)
    b_matched = b[:, matching["est_index"]]
    matched_true = matching["true_index"]

    min_cells = d + 2
    levels = environment_levels(env)
    skipped = []
    rows = []
    for level in levels:
        mask = (env == level).to_numpy()
        if mask.sum() < min_cells:
            skipped.append(level)
            continue
        ate_true = _standardised_abs_coefficients(a[mask], y_arr[mask])
        ate_est = np.zeros(d)
        ate_est[matched_true] = _standardised_abs_coefficients(b_matched[mask], y_arr[mask])
        for j in range(d):
            rows.append((level, j, ate_true[j], ate_est[j], (ate_true[j] - ate_est[j]) ** 2))
    if skipped:
        warnings.warn(
            f"Skipping environment(s) {skipped} with fewer than {min_cells} cells (d + 2 for d = {d} latents).",
            UserWarning,
            stacklevel=2,
        )
    if not rows:
        raise ValueError(f"No environment has at least {min_cells} cells (d + 2 for d = {d} latents).")
    table = pd.DataFrame(rows, columns=_COLUMNS)
    if isinstance(env.dtype, pd.CategoricalDtype):
        table["environment"] = pd.Categorical(table["environment"], categories=env.cat.categories)
    table["latent"] = table["latent"].astype(int)
    return table


def ate_error(
    z_true: ArrayLike,
    z_est: ArrayLike,
    y: ArrayLike,
    environments: ArrayLike,
    *,
    method: CorrelationMethod = "pearson",
) -> float:
    """Mean squared error between true and estimated absolute standardised effects.

    The squared errors of :func:`ate_table` are pooled over all environments and latents. For per-environment
    errors use ``ate_table(...).groupby("environment", observed=True)["sq_error"].mean()``.

    Parameters
    ----------
    z_true, z_est, y, environments, method
        See :func:`ate_table`.

    Returns
    -------
    float
        Mean of ``sq_error`` over all (environment, latent) rows.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import ate_error
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(600, 2))
    >>> env = np.repeat([0, 1], 300)
    >>> y = z @ np.array([1.0, -2.0]) + 0.1 * rng.normal(size=600)
    >>> bool(ate_error(z, 5.0 * z[:, ::-1], y, env) < 1e-12)
    True
    """
    table = ate_table(z_true, z_est, y, environments, method=method)
    return float(table["sq_error"].mean())
