"""The one writer: a :class:`~sctbr.tl.FitResult` into ``obsm``, ``obs`` and ``uns`` of an AnnData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from sctbr._constants import latents_key, prediction_key

if TYPE_CHECKING:
    from sctbr.tl._core import FitResult


def write_result(adata: AnnData, result: FitResult, key_added: str) -> None:
    """Write ``obsm[f"X_{key_added}"]``, the prediction column(s) of ``obs`` and ``uns[key_added]``.

    The schema of ``sctbr.tl.tbr``'s outputs (documented in its Returns section); nothing else is touched.
    """
    targets = result.targets
    multi = len(targets) > 1
    adata.obsm[latents_key(key_added)] = np.asarray(result.latents, dtype=np.float32)
    if multi:
        for j, name in enumerate(targets):
            adata.obs[f"{key_added}_prediction_{name}"] = result.prediction[:, j].astype(np.float64)
    else:
        adata.obs[prediction_key(key_added)] = result.prediction.astype(np.float64)
    run = {
        "params": dict(result.params),
        "var_names": np.asarray(result.var_names, dtype=str),
        "environment_weights": result.environment_weights,
        "deltas": result.deltas,
        "tree": result.model.tree.to_dict(),
        "history": result.history,
        "restart_scores": np.asarray(result.restart_scores, dtype=float),
        "split": np.asarray(result.split, dtype=str),
    }
    if result.levels:
        # the two levels of each boolean / categorical target: the prediction is the probability of the second
        run["levels"] = dict(result.levels)
    if result.lam_path is not None:
        run["lam_path"] = result.lam_path.copy()
    adata.uns[key_added] = run
