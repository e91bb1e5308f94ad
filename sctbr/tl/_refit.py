"""Refitting with the fit core many times without touching the user's AnnData (for select_n_latent, stability)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from anndata import AnnData

import sctbr._logging as logg
from sctbr.tl._core import fit, split_fit_kwargs

#: ``sctbr.tl.tbr`` arguments that the refitting tools set themselves.
_RESERVED = ("n_latent", "key_added", "copy", "return_model", "random_state")


@dataclass
class Fit:
    """What one refit returns: latents, predictions, the split, the target as the model saw it, the time taken."""

    latents: np.ndarray
    prediction: np.ndarray
    target: np.ndarray
    split: np.ndarray
    seconds: float
    params: dict


def check_tbr_kwargs(tbr_kwargs: Mapping[str, Any], caller: str, *, allowed: tuple[str, ...] = ()) -> dict:
    """Reject arguments the tool sets itself, with a message naming the tool's own parameter."""
    bad = [k for k in _RESERVED if k in tbr_kwargs and k not in allowed]
    if bad:
        raise TypeError(
            f"sctbr.tl.{caller} sets {bad} of sctbr.tl.tbr itself; remove them from the keyword arguments "
            "(the sizes to try are `candidates`, the seeds come from `random_state`, results go to `key_added`)."
        )
    kwargs = dict(tbr_kwargs)
    # the outer bar over the fits shows unless the user turns the fits' bars off (then: nothing is shown)
    kwargs["_outer_progress"] = logg.fits_progress_enabled(kwargs)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    return kwargs


def check_in_memory(adata: AnnData) -> None:
    """The refitting tools read the inputs many times: they need an in-memory AnnData."""
    if adata.isbacked:
        raise ValueError(
            "This tool refits TBR several times and needs the data in memory; load it first "
            "(adata = adata.to_memory(), or a subset: adata[cells].to_memory())."
        )


def fit_once(adata: AnnData, *, n_latent: int, random_state: int, fit_kwargs: dict) -> Fit:
    """Fit with the core (:func:`sctbr.tl.fit`, nothing is written into ``adata``) and return what the tools need."""
    own, train_kwargs = split_fit_kwargs(fit_kwargs)
    start = time.perf_counter()
    result = fit(
        adata, n_latent=int(n_latent), random_state=int(random_state), train_kwargs=train_kwargs, changes=False, **own
    )
    seconds = time.perf_counter() - start
    if len(result.targets) != 1:
        raise ValueError(f"This tool scores one target at a time, got {result.targets}. Pass target='<column>'.")
    return Fit(
        latents=np.asarray(result.latents, dtype=np.float32),
        prediction=np.asarray(result.prediction, dtype=np.float64),
        target=np.asarray(result.y, dtype=np.float64),
        split=np.asarray(result.split).astype(str),
        seconds=float(seconds),
        params=dict(result.params),
    )


def split_error(fit: Fit, which: str) -> tuple[float, float, int]:
    """Mean squared error of the prediction on the cells of one split, its standard error and the cell count."""
    mask = fit.split == which
    n = int(mask.sum())
    if n == 0:
        return float("nan"), float("nan"), 0
    sq = (fit.prediction[mask] - fit.target[mask]) ** 2
    se = float(sq.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(sq.mean()), se, n
