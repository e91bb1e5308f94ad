"""What every experiment shares: fitting one method and scoring it on the test cells, the tidy schema."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

import sctbr._logging as logg
from sctbr import tl
from sctbr._constants import TRUE_LATENTS_KEY
from sctbr._utils import torch_threads
from sctbr.experiments._profiles import Profile
from sctbr.metrics import mcc
from sctbr.model import one_standard_error_rule

#: The paper's split: 50% train, 25% validation (model selection), 25% test (every reported number).
SPLIT = {"train_size": 0.5, "validation_size": 0.25}
METHODS = ("tbr", "tbr_plain", "baseline")
#: The columns every experiment's table starts with, in this order.
COLUMNS = ["experiment", "method", "k", "seed", "mcc", "test_mse", "transfer_mse", "n_latent", "fit_seconds"]
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")


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


#: The open progress bar of the running experiment (fit_method counts its fits into it).
_BARS: list = []


def counts_fits(func):
    """Show one progress bar over the fits of an experiment function (hidden with ``sc.settings.verbosity="error"``).

    The number of fits is not known ahead (data-dependent levels), so the bar counts fits and their rate; an
    experiment called from another one counts into the outer bar.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if _BARS:
            return func(*args, **kwargs)
        with logg.fits_progress(None, func.__name__) as bar:
            _BARS.append(bar)
            try:
                return func(*args, **kwargs)
            finally:
                _BARS.pop()

    return wrapper


def seeds(profile: Profile, random_state: int, *, real: bool = False) -> list[int]:
    """Seed of every repetition (``real``: of the semi-synthetic experiments)."""
    n = profile.semi_n_repeats if real and profile.semi_n_repeats is not None else profile.n_repeats
    return [int(random_state) + r for r in range(int(n))]


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown method(s) {unknown}; choose among {list(METHODS)}.")
    return tuple(methods)


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
    return_result: bool = False,
):
    """Fit one method on ``adata`` with the paper's 50/25/25 split and score it on the test cells.

    The TBR fits try every sparsity weight in ``lams`` and keep the one with the lowest prediction MSE on the
    validation cells (comparable across weights, unlike the penalised objective; the model's lambda rule,
    :func:`sctbr.model.one_standard_error_rule`, without a standard error); the test cells are used only for the
    reported numbers. The fits go through the fit core (:func:`sctbr.tl.fit`) and only the kept one is written into
    ``adata`` as ``sctbr.tl.tbr`` writes it, with ``key`` as its ``key_added`` (``None``: the method's name, e.g.
    ``obsm["X_tbr"]``, ``uns["tbr"]``, ``obs["tbr_split"]``).

    Returns the row of the tidy table (``method``, ``seed``, ``mcc`` and ``test_mse`` on the test cells,
    ``validation_mse``, ``transfer_mse`` = NaN, ``n_latent``, ``lam``, ``fit_seconds``), and the kept
    :class:`~sctbr.tl.FitResult` too with ``return_result=True``.
    """
    train_kwargs = {"enable_progress_bar": False, "enable_model_summary": False}
    if method == "tbr_plain":
        train_kwargs.update(refine=False, fit_fraction=0.0)
    common = {
        "baseline": method == "baseline",
        "target": target,
        "groupby": groupby,
        "n_latent": int(n_latent),
        "hidden": tuple(profile.hidden),
        "max_epochs": max_epochs,
        "random_state": int(seed),
        "accelerator": accelerator,
        "train_kwargs": train_kwargs,
        **SPLIT,
    }
    grid: list[float | None] = [None] if method == "baseline" or not lams else [float(lam) for lam in lams]
    start = time.perf_counter()
    results, errors = [], []
    with quiet(), torch_threads(profile.n_threads):
        for lam in grid:
            if _BARS:
                _BARS[-1].set_postfix(method=method, seed=int(seed), refresh=False)
            result = tl.fit(adata, **common) if lam is None else tl.fit(adata, lam=lam, **common)
            if _BARS:
                _BARS[-1].update()
            results.append(result)
            errors.append(result.split_mse("validation"))
    seconds = time.perf_counter() - start
    # the rule reads errors by increasing lambda (a tie goes to the largest)
    order = np.argsort([-np.inf if lam is None else lam for lam in grid], kind="stable")
    errors_by_lam = np.nan_to_num(np.asarray(errors, dtype=float)[order], nan=np.inf)
    best = results[int(order[one_standard_error_rule(errors_by_lam)])]
    best.write(adata, key, default=method)
    test = best.split == "test"
    score = float("nan")
    if TRUE_LATENTS_KEY in adata.obsm and test.sum() > 1:
        score = mcc(np.asarray(adata.obsm[TRUE_LATENTS_KEY])[test], best.latents[test])
    row = {
        "method": method,
        "seed": int(seed),
        "mcc": score,
        "test_mse": best.split_mse("test"),
        "transfer_mse": float("nan"),
        "n_latent": int(n_latent),
        "fit_seconds": float(seconds),
        "validation_mse": best.split_mse("validation"),
        "lam": float(best.params["lam"]),
    }
    return (row, best) if return_result else row


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
