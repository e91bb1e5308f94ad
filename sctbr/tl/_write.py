"""The one writer: a :class:`~sctbr.tl.FitResult` into ``obsm``, ``obs`` and ``uns`` of an AnnData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._constants import OBSM_KEY_FIELD, SPLITS, ResultKeys, prediction_key, result_keys, split_key

if TYPE_CHECKING:
    from sctbr.tl._core import FitResult


def split_column(labels: np.ndarray, index: pd.Index) -> pd.Series:
    """The split as ``obs`` holds it: categorical, categories train/validation/test in this order."""
    return pd.Series(pd.Categorical(np.asarray(labels, dtype=str), categories=list(SPLITS)), index=index)


def changes_to_uns(changes) -> dict:
    """The support estimate as ``uns[key]["changes"]`` holds it (h5ad-writable: frames of floats and booleans)."""
    return {
        "delta": changes.delta.copy(),
        "frequency": changes.frequency.copy(),
        "changed": changes.changed.astype(bool),
        "unresolved": changes.unresolved.astype(bool),
        "tested": changes.tested.astype(bool),
        "estimate": changes.estimate.copy(),
        "se": changes.se.copy(),
        "test_alpha": float(changes.test_alpha),
        "method": changes.method,
        "lam": float(changes.lam),
        "min_frequency": float(changes.min_frequency),
        "n_bootstrap": int(changes.n_bootstrap),
    }


def write_result(adata: AnnData, result: FitResult, key_added: str | None, default: str | None = None) -> ResultKeys:
    """Write a fit with scanpy's ``key_added`` rule (:func:`sctbr._constants.result_keys`) and return the keys used.

    ``default`` is the name used when ``key_added`` is None (default: the fit's method, ``"tbr"`` or ``"baseline"``).
    Writes ``obsm[keys.obsm]`` (the latents), ``obs[f"{keys.obs}_prediction"]`` (one column per target with
    several: ``f"{keys.obs}_prediction_{target}"``), ``obs[f"{keys.obs}_split"]`` (categorical) and
    ``uns[keys.uns]``; nothing else is touched.
    """
    keys = result_keys(key_added, default or str(result.params.get("method", "tbr")))
    targets = result.targets
    adata.obsm[keys.obsm] = np.asarray(result.latents, dtype=np.float32)
    if len(targets) > 1:
        for j, name in enumerate(targets):
            adata.obs[f"{prediction_key(keys.obs)}_{name}"] = result.prediction[:, j].astype(np.float64)
    else:
        adata.obs[prediction_key(keys.obs)] = result.prediction.astype(np.float64)
    adata.obs[split_key(keys.obs)] = split_column(result.split, adata.obs_names)
    run = {
        "params": dict(result.params),
        OBSM_KEY_FIELD: keys.obsm,
        "var_names": np.asarray(result.var_names, dtype=str),
        "environment_weights": result.environment_weights,
        "deltas": result.deltas,
        "tree": result.model.tree.to_dict(),
        "history": result.history,
        "restart_scores": np.asarray(result.restart_scores, dtype=float),
    }
    if result.levels:
        # the two levels of each boolean / categorical target: the prediction is the probability of the second
        run["levels"] = dict(result.levels)
    if result.changes is not None:
        run["changes"] = changes_to_uns(result.changes)
    if result.heads_spectrum is not None:
        spectrum = result.heads_spectrum
        run["heads_spectrum"] = {
            "values": np.asarray(spectrum["values"], dtype=np.float64),
            "noise": float(spectrum["noise"]),
            "used": int(spectrum["used"]),
        }
    if result.lam_path is not None:
        run["lam_path"] = result.lam_path.copy()
    adata.uns[keys.uns] = run
    return keys
