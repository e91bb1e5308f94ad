"""``sctbr.tl.select_n_latent``: choose the number of latents where the validation error plateaus (Fig. 6)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

import sctbr._logging as logg
from sctbr._constants import N_LATENT_KEY, result_keys
from sctbr._docs import doc_params
from sctbr.tl._refit import check_in_memory, check_tbr_kwargs, fit_once, split_error

#: Default relative tolerance of the plateau rule (see :func:`select_n_latent`).
DEFAULT_RTOL = 0.1
RULE = "smallest n_latent with validation_mse <= min + max(rtol * min, se of the min)"


def _check_candidates(candidates: Iterable[int]) -> list[int]:
    try:
        values = list(candidates)
    except TypeError:
        raise TypeError(f"`candidates` must be a sequence of positive integers, got {candidates!r}.") from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, Integral) or v < 1]
    if bad:
        raise ValueError(f"`candidates` must be positive integers, got {bad[:5]}.")
    values = sorted({int(v) for v in values})
    if len(values) < 2:
        raise ValueError(
            f"`candidates` needs at least two sizes to compare, got {values}; e.g. candidates=range(1, 9)."
        )
    return values


def plateau(validation_mse: Sequence[float], validation_se: Sequence[float], rtol: float) -> tuple[int, float]:
    """Index of the first candidate on the plateau, and the threshold: ``min + max(rtol * min, se at the min)``."""
    v = np.asarray(validation_mse, dtype=float)
    se = np.nan_to_num(np.asarray(validation_se, dtype=float), nan=0.0)
    best = int(np.nanargmin(v))
    threshold = float(v[best] + max(rtol * v[best], se[best]))
    return int(np.flatnonzero(v <= threshold)[0]), threshold


@doc_params("inplace_key_added")
def select_n_latent(
    adata: AnnData,
    *,
    target: str | None = None,
    groupby: str | None = None,
    candidates: Iterable[int] = range(1, 9),
    tree: Any = None,
    layer: str | None = None,
    var_names: Sequence[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    random_state: int = 0,
    key_added: str | None = None,
    inplace: bool = True,
    **tbr_kwargs,
) -> dict | None:
    """Choose the number of latents as the start of the plateau of the validation error (the paper's Fig. 6).

    Fits :func:`sctbr.tl.tbr` once per candidate size, with the same seed and the same train/validation split, and
    scores each fit by the mean squared error of its predictions on the validation cells. With fewer latents than
    the data have, the heads cannot follow the sparse changes along the tree and the error stays high; from the true
    number on it stops falling (it plateaus). The chosen size is

        the smallest candidate whose validation MSE is at most ``min + max(rtol * min, SE(min))``,

    where ``min`` is the lowest validation MSE over the candidates and ``SE(min)`` its standard error over the
    validation cells. Why this rule: spare latents still lower the error a little (they help the optimiser and
    soak up approximation error of the encoder), so "the size with the lowest error" overshoots; an extra latent
    therefore has to remove more than a fraction ``rtol`` of the remaining error, and more than the sampling noise of
    the validation estimate (the one-standard-error rule of the lasso), to count. On simulations with short fits
    the error at the true size was within 0-8% of the minimum and one latent fewer 30% or more above it, hence the
    default ``rtol = 0.1``; longer fits narrow the first gap. The fits write nothing (:func:`sctbr.tl.fit`): ``adata``
    is not modified until every fit has succeeded.

    Parameters
    ----------
    adata
        Cells x inputs, as for :func:`sctbr.tl.tbr`.
    target, groupby, tree, layer, var_names
        As in :func:`sctbr.tl.tbr` (defaults: what sctbr recorded in ``adata``). One target.
    candidates
        Numbers of latents to try (at least two).
    rtol
        Relative tolerance of the plateau rule (non-negative). Larger values choose smaller sizes.
    random_state
        Seed of every fit (the same split and initialisation seed for every size).
    {inplace_key_added}
    inplace
        Write the result into ``adata.uns`` and return ``None`` (Scanpy's convention); ``False`` returns it and
        leaves ``adata`` untouched.
    **tbr_kwargs
        Passed to every :func:`sctbr.tl.tbr` fit (e.g. ``max_epochs``, ``hidden``, ``lam``, ``validation_size``,
        ``n_restarts``, ``accelerator``). ``validation_size`` must be positive. One progress bar counts the
        fits (hidden with ``sc.settings.verbosity = "error"`` or ``enable_progress_bar=False``); each fit's own
        bar is off unless ``enable_progress_bar=True``.

    Returns
    -------
    ``None`` with ``inplace=True``; otherwise a dict (the same one that ``inplace=True`` stores, h5ad-writable) with

    ``curve``
        DataFrame, one row per candidate: ``n_latent``, ``validation_mse``, ``validation_se`` (standard error over
        validation cells), ``train_mse``, ``fit_seconds`` and ``selected``.
    ``n_latent``
        The chosen size.
    ``threshold``
        The plateau threshold on the validation MSE.
    ``params``
        ``rtol``, ``rule``, ``target``, ``groupby``, ``random_state``, ``candidates``, ``n_validation``.

    Warns
    -----
    UserWarning
        When the chosen size is the largest candidate: the error has not plateaued within the candidates.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.select_n_latent(adata, candidates=range(1, 5), max_epochs=60)  # doctest: +SKIP
    >>> adata.uns["tbr_n_latent"]["n_latent"]  # doctest: +SKIP
    2
    >>> sctbr.pl.n_latent(adata)  # doctest: +SKIP
    """
    sizes = _check_candidates(candidates)
    if isinstance(rtol, bool) or not isinstance(rtol, Real) or not np.isfinite(rtol) or rtol < 0:
        raise ValueError(f"`rtol` must be a non-negative number, got {rtol!r}.")
    keys = result_keys(key_added, N_LATENT_KEY)
    fit_kwargs = check_tbr_kwargs(tbr_kwargs, "select_n_latent")
    if float(fit_kwargs.get("validation_size", 0.2)) <= 0:
        raise ValueError(
            "select_n_latent scores each size on validation cells; pass validation_size > 0 (default 0.2)."
        )
    fit_kwargs.update(target=target, groupby=groupby, tree=tree, layer=layer, var_names=var_names)

    check_in_memory(adata)
    rows, fit = [], None
    outer = fit_kwargs.pop("_outer_progress")
    with logg.fits_progress(len(sizes), "select_n_latent", enabled=outer) as bar:
        for n in sizes:
            bar.set_postfix(n_latent=n, refresh=False)
            fit = fit_once(adata, n_latent=n, random_state=random_state, fit_kwargs=fit_kwargs)
            bar.update()
            val, val_se, n_val = split_error(fit, "validation")
            train, _, _ = split_error(fit, "train")
            if not np.isfinite(val):
                raise FloatingPointError(
                    f"The fit with n_latent={n} gave a non-finite validation error; lower the learning rate (lr=1e-3)."
                )
            rows.append(
                {
                    "n_latent": n,
                    "validation_mse": val,
                    "validation_se": val_se,
                    "train_mse": train,
                    "fit_seconds": fit.seconds,
                }
            )
    curve = pd.DataFrame(rows)
    best, threshold = plateau(curve["validation_mse"], curve["validation_se"], float(rtol))
    curve["selected"] = np.arange(len(curve)) == best
    chosen = int(curve["n_latent"].iloc[best])
    if best == len(curve) - 1:
        warnings.warn(
            f"The validation error did not plateau within candidates {sizes}: the largest size ({chosen}) is the first "
            f"within rtol={rtol:g} of the minimum. Try larger sizes, or longer fits (max_epochs).",
            UserWarning,
            stacklevel=2,
        )
    result = {
        "curve": curve,
        "n_latent": chosen,
        "threshold": threshold,
        "params": {
            "rtol": float(rtol),
            "rule": RULE,
            "target": str(fit.params["target"]),
            "groupby": str(fit.params["groupby"]),
            "random_state": int(random_state),
            "candidates": np.asarray(sizes, dtype=int),
            "n_validation": int(n_val),
        },
    }
    if inplace:
        adata.uns[keys.uns] = result
        return None
    return result
