"""Choosing lambda (``lam="auto"``): the grid and one row of scores per lambda; the rule is :mod:`sctbr.model._lam`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from sctbr.model._lam import one_standard_error_rule

#: The lambda path of ``lam="auto"``: 7 values, log-spaced from 1e-4 to 1e-1 (the target is standardised, so one
#: grid serves every dataset).
DEFAULT_LAM_GRID = tuple(float(v) for v in np.logspace(-4, -1, 7))


def check_lam_grid(lam_grid: Sequence[float] | None, validation_size: float, path_epochs: float) -> np.ndarray:
    """Validate the ``lam="auto"`` settings before any training; returns the sorted grid."""
    if not validation_size or validation_size <= 0:
        raise ValueError(
            "lam='auto' chooses lambda on the validation cells, and validation_size is 0. Pass validation_size > 0 "
            "(e.g. 0.2) or a fixed lam (e.g. lam=1e-3)."
        )
    grid = np.asarray(DEFAULT_LAM_GRID if lam_grid is None else lam_grid, dtype=float).reshape(-1)
    if len(grid) < 2 or not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError(f"`lam_grid` must hold at least two finite non-negative values, got {lam_grid!r}.")
    if not 0 < path_epochs <= 1:
        raise ValueError(f"`path_epochs` must lie in (0, 1] (a fraction of max_epochs), got {path_epochs}.")
    return np.unique(grid)


@torch.no_grad()
def score(model, data: dict, val_idx: np.ndarray, epochs: int) -> dict:
    """The scores of the module's current solution at its ``lam``: one row of ``model.lam_path_``."""
    module = model.module
    err = model._cell_losses(data, val_idx)
    mean = float(err.mean())
    return {
        "lam": float(module.lam),
        "validation_mse": mean,
        "validation_mse_se": float(err.std(ddof=1) / np.sqrt(len(err))) if len(err) > 1 else 0.0,
        "penalty": float(module.penalty_value()),
        "validation_objective": mean + float(module.penalty_value()),
        "zero_fraction": float((module.delta == 0).float().mean()),
        "epochs": int(epochs),
    }


def select(rows: list[dict]) -> tuple[int, pd.DataFrame]:
    """The chosen row (one-standard-error rule) and the path as a frame with its ``selected`` column."""
    path = pd.DataFrame(rows)
    chosen = one_standard_error_rule(path["validation_mse"].to_numpy(), path["validation_mse_se"].to_numpy())
    path["selected"] = np.arange(len(path)) == chosen
    return chosen, path
