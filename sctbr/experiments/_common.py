"""What every experiment shares: fitting one method and scoring it on the test cells, the tidy schema."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sctbr import tl
from sctbr._constants import TRUE_LATENTS_KEY, latents_key, prediction_key
from sctbr.experiments._profiles import Profile
from sctbr.metrics import mcc

#: The paper's split: 50% train, 25% validation (model selection), 25% test (every reported number).
SPLIT = {"train_size": 0.5, "validation_size": 0.25}
METHODS = ("tbr", "tbr_plain", "baseline")
#: The columns every experiment's table starts with, in this order.
COLUMNS = ["experiment", "method", "k", "seed", "mcc", "test_mse", "transfer_mse", "n_latent", "fit_seconds"]
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` CPU threads (``None``: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(int(n))
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's and scvi-tools' per-fit chatter (restored afterwards)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def seeds(profile: Profile, random_state: int, *, real: bool = False) -> list[int]:
    """Seed of every repetition (``real``: of the semi-synthetic experiments)."""
    n = profile.semi_n_repeats if real and profile.semi_n_repeats is not None else profile.n_repeats
    return [int(random_state) + r for r in range(int(n))]


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown method(s) {unknown}; choose among {list(METHODS)}.")
    return tuple(methods)


def _split_mse(adata: AnnData, key: str, target: str, which: str) -> float:
    mask = np.asarray(adata.uns[key]["split"]) == which
    if not mask.any():
        return float("nan")
    resid = adata.obs[prediction_key(key)].to_numpy()[mask] - adata.obs[target].to_numpy(dtype=float)[mask]
    return float(np.mean(resid**2))


def _move_result(adata: AnnData, src: str, dst: str) -> None:
    """Rename the results of a ``tl`` fit from key ``src`` to ``dst``."""
    adata.obsm[latents_key(dst)] = adata.obsm.pop(latents_key(src))
    adata.obs[prediction_key(dst)] = adata.obs.pop(prediction_key(src))
    adata.uns[dst] = adata.uns.pop(src)


def _drop_result(adata: AnnData, key: str) -> None:
    adata.obsm.pop(latents_key(key), None)
    adata.obs.pop(prediction_key(key))
    adata.uns.pop(key, None)


def fit_method(
    adata: AnnData,
    method: str,
    *,
    n_latent: int,
    seed: int,
    profile: Profile,
    max_epochs: int | None,
    lams: Sequence[float] | None = None,
    accelerator: str = "auto",
    target: str = "y",
    groupby: str | None = None,
    key: str | None = None,
    return_model: bool = False,
):
    """Fit one method on ``adata`` with the paper's 50/25/25 split and score it on the test cells.

    The TBR fits try every sparsity weight in ``lams`` and keep the one with the lowest prediction MSE on the
    validation cells (comparable across weights, unlike the penalised objective); the test cells are used only
    for the reported numbers. Results are written into ``adata`` under ``key`` (default: the method's name).

    Returns the row of the tidy table (``method``, ``seed``, ``mcc`` and ``test_mse`` on the test cells,
    ``validation_mse``, ``transfer_mse`` = NaN, ``n_latent``, ``lam``, ``fit_seconds``), and the trained model
    too with ``return_model=True``.
    """
    key = key or method
    common = {
        "target": target,
        "n_latent": int(n_latent),
        "hidden": tuple(profile.hidden),
        "max_epochs": max_epochs,
        "random_state": int(seed),
        "accelerator": accelerator,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "return_model": True,
        **SPLIT,
    }
    if groupby is not None:
        common["groupby"] = groupby
    grid: list[float | None] = [None] if method == "baseline" or not lams else [float(lam) for lam in lams]
    start = time.perf_counter()
    best = None  # (validation_mse, key, lam, model)
    with quiet(), torch_threads(profile.n_threads):
        for i, lam in enumerate(grid):
            trial = key if len(grid) == 1 else f"{key}__lam{i}"
            kwargs = dict(common, key_added=trial)
            if lam is not None:
                kwargs["lam"] = lam
            if method == "baseline":
                model = tl.baseline(adata, **kwargs)
            elif method == "tbr_plain":
                model = tl.tbr(adata, refine=False, fit_fraction=0.0, **kwargs)
            else:
                model = tl.tbr(adata, **kwargs)
            val = _split_mse(adata, trial, target, "validation")
            if best is None or val < best[0]:
                if best is not None and best[1] != key:
                    _drop_result(adata, best[1])
                best = (val, trial, lam, model)
            elif trial != key:
                _drop_result(adata, trial)
    seconds = time.perf_counter() - start
    val, trial, lam, model = best
    if trial != key:
        _move_result(adata, trial, key)
    test = np.asarray(adata.uns[key]["split"]) == "test"
    score = float("nan")
    if TRUE_LATENTS_KEY in adata.obsm and test.sum() > 1:
        score = mcc(np.asarray(adata.obsm[TRUE_LATENTS_KEY])[test], np.asarray(adata.obsm[latents_key(key)])[test])
    row = {
        "method": method,
        "seed": int(seed),
        "mcc": score,
        "test_mse": _split_mse(adata, key, target, "test"),
        "transfer_mse": float("nan"),
        "n_latent": int(n_latent),
        "fit_seconds": float(seconds),
        "validation_mse": float(val),
        "lam": float(adata.uns[key]["params"]["lam"]),
    }
    return (row, model) if return_model else row


def tidy(rows: list[dict], experiment: str, profile: Profile) -> pd.DataFrame:
    """The tidy table: :data:`COLUMNS` first (in this order), then the experiment's own columns."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "experiment", experiment)
    frame["profile"] = profile.name
    for col in COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    for col in ("seed", "n_latent"):
        frame[col] = frame[col].astype(np.int64)
    for col in ("mcc", "test_mse", "transfer_mse", "fit_seconds"):
        frame[col] = frame[col].astype(np.float64)
    return frame.reset_index(drop=True)
