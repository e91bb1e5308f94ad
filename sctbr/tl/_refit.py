"""Refitting ``sctbr.tl.tbr`` many times without touching the user's AnnData (for select_n_latent, stability)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from anndata import AnnData

from sctbr._constants import TBR_KEY, latents_key, prediction_key
from sctbr._validation import binary_target
from sctbr.tl._tbr import tbr

_KEY = TBR_KEY
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
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    return kwargs


def private_anndata(adata: AnnData, layer: str | None) -> AnnData:
    """An AnnData sharing the user's inputs, with its own ``obs``/``uns`` containers for ``tl.tbr`` to write into.

    The matrices are not copied; ``tl.tbr`` only reads them. The user's ``obs``, ``obsm`` and ``uns`` are never
    written.
    """
    if adata.isbacked:
        raise ValueError(
            "This tool refits TBR several times and needs the data in memory; load it first "
            "(adata = adata.to_memory(), or a subset: adata[cells].to_memory())."
        )
    layers = {}
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(f"Layer {layer!r} not found; available layers: {list(adata.layers.keys())}.")
        layers[layer] = adata.layers[layer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnnData(
            X=adata.X,
            obs=adata.obs.copy(),
            var=adata.var[[]].copy(),
            uns=dict(adata.uns),
            layers=layers or None,
        )


def fit_once(work: AnnData, *, n_latent: int, random_state: int, fit_kwargs: dict) -> Fit:
    """Fit ``tl.tbr`` on the private AnnData ``work`` and return what the tools need."""
    start = time.perf_counter()
    tbr(work, n_latent=int(n_latent), random_state=int(random_state), key_added=_KEY, **fit_kwargs)
    seconds = time.perf_counter() - start
    run = work.uns[_KEY]
    target = run["params"]["target"]
    if not isinstance(target, str):
        raise ValueError(
            f"This tool scores one target at a time, got {list(np.atleast_1d(target))}. Pass target='<column>'."
        )
    y, _ = binary_target(work, target)
    return Fit(
        latents=np.asarray(work.obsm[latents_key(_KEY)], dtype=np.float32).copy(),
        prediction=work.obs[prediction_key(_KEY)].to_numpy(dtype=np.float64).copy(),
        target=np.asarray(y, dtype=np.float64),
        split=np.asarray(run["split"]).astype(str),
        seconds=float(seconds),
        params=dict(run["params"]),
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
