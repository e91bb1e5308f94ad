"""Support recovery of the tree-arc change matrix Δ (arcs x latents)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._mcc import CorrelationMethod, _as_2d, match_latents


def _nonzero(delta: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Entries with ``|value| > atol + rtol * max|column|``."""
    absval = np.abs(delta)
    col_scale = absval.max(axis=0, keepdims=True) if delta.shape[0] else np.zeros((1, delta.shape[1]))
    return absval > atol + rtol * col_scale


def _matching_indices(matching: Mapping[str, Any], d_true: int, d_est: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        true_index = np.asarray(matching["true_index"], dtype=int).ravel()
        est_index = np.asarray(matching["est_index"], dtype=int).ravel()
    except KeyError as err:
        raise ValueError(
            "`matching` must contain 'true_index' and 'est_index' (as returned by match_latents)."
        ) from err
    if true_index.shape != est_index.shape:
        raise ValueError(
            f"`matching` indices differ in length: {true_index.shape[0]} true vs {est_index.shape[0]} estimated."
        )
    if true_index.size and (true_index.min() < 0 or true_index.max() >= d_true):
        raise ValueError(f"`matching['true_index']` out of range for {d_true} true latent columns.")
    if est_index.size and (est_index.min() < 0 or est_index.max() >= d_est):
        raise ValueError(f"`matching['est_index']` out of range for {d_est} estimated latent columns.")
    if len(set(true_index.tolist())) != true_index.size or len(set(est_index.tolist())) != est_index.size:
        raise ValueError("`matching` must be one-to-one (no repeated indices).")
    return true_index, est_index


def support_recovery(
    delta_true: ArrayLike,
    delta_est: ArrayLike,
    z_true: ArrayLike | None = None,
    z_est: ArrayLike | None = None,
    *,
    matching: Mapping[str, Any] | None = None,
    atol: float = 1e-8,
    rtol: float = 0.0,
    method: CorrelationMethod = "pearson",
) -> dict[str, float | int]:
    """Precision, recall and F1 of the nonzero pattern of an estimated Δ against the true Δ.

    Columns of ``delta_est`` (estimated latents) are first aligned with the columns of ``delta_true`` (true
    latents): the estimated column matched to true column ``j`` is moved to position ``j``. True columns without a
    match count as all-zero estimates; unmatched estimated columns are ignored.

    Parameters
    ----------
    delta_true
        True changes of the heads along tree arcs, shape ``(n_arcs, d_true)``; numpy array or DataFrame.
    delta_est
        Estimated changes, shape ``(n_arcs, d_est)``; numpy array or DataFrame.
    z_true, z_est
        Optional true and estimated latents (cells x latents) used to compute the column matching with
        :func:`~sctbr.metrics.match_latents`. Give both or neither.
    matching
        A precomputed matching (the dict returned by :func:`~sctbr.metrics.match_latents`, only ``"true_index"``
        and ``"est_index"`` are used). Mutually exclusive with ``z_true``/``z_est``. If neither is given, the
        columns are assumed to be aligned already (then both matrices must have the same shape).
    atol, rtol
        An entry counts as nonzero if ``|value| > atol + rtol * max|column|``, where the maximum is over the
        entry's own column of its own matrix. ``rtol > 0`` ignores entries that are tiny relative to the column's
        scale, which is arbitrary because latents are identified only up to scaling.
    method
        Correlation used when the matching is computed from ``z_true``/``z_est``.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (floats) and the counts ``tp``, ``fp``, ``fn`` (ints) with the
        ``atol``/``rtol`` threshold, and ``exact_precision``, ``exact_recall``, ``exact_f1``: the same for the
        exact-zero pattern (every entry that is not exactly zero counts as a change: what a user of the
        unthresholded ``Delta`` sees). Pass a boolean "changed" matrix (e.g. ``uns["tbr"]["changes"]["changed"]``)
        as ``delta_est`` to score the support estimate. By convention
        ``precision = 1`` when nothing is predicted nonzero (``tp + fp == 0``), ``recall = 1`` when nothing is
        truly nonzero (``tp + fn == 0``), and ``f1 = 0`` when ``precision + recall == 0``.

    Raises
    ------
    ValueError
        If the numbers of arcs differ, the inputs contain NaN/inf, the matching is invalid, or the column counts
        differ while no matching is given.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import support_recovery
    >>> delta = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> delta_hat = np.array([[0.0, -3.0], [0.5, 0.0], [0.0, 0.1]])  # columns swapped, one spurious entry
    >>> res = support_recovery(delta, delta_hat, matching={"true_index": [0, 1], "est_index": [1, 0]})
    >>> res["precision"], res["recall"], res["fp"]
    (0.6666666666666666, 1.0, 1)
    >>> support_recovery(delta, delta_hat, matching={"true_index": [0, 1], "est_index": [1, 0]}, rtol=0.5)["f1"]
    1.0
    """
    dt = _as_2d(delta_true, "delta_true", rows="arcs")
    de = _as_2d(delta_est, "delta_est", rows="arcs")
    if dt.shape[0] != de.shape[0]:
        raise ValueError(
            f"`delta_true` and `delta_est` must have the same number of arcs (rows), got shapes {dt.shape} and "
            f"{de.shape}."
        )
    if atol < 0 or rtol < 0:
        raise ValueError(f"`atol` and `rtol` must be non-negative, got atol={atol}, rtol={rtol}.")
    d_true, d_est = dt.shape[1], de.shape[1]

    if (z_true is None) != (z_est is None):
        raise ValueError("Pass both `z_true` and `z_est` (or neither).")
    if matching is not None and z_true is not None:
        raise ValueError("Pass either `matching` or `z_true`/`z_est`, not both.")
    if z_true is not None:
        matching = match_latents(z_true, z_est, method=method)
    if matching is not None:
        true_index, est_index = _matching_indices(matching, d_true, d_est)
    else:
        if d_true != d_est:
            raise ValueError(
                f"Without `matching` or latents the columns are assumed aligned, but `delta_true` has shape {dt.shape} "
                f"and `delta_est` has shape {de.shape}."
            )
        true_index = est_index = np.arange(d_true)

    out = _scores(dt, de, true_index, est_index, atol, rtol)
    exact = _scores(dt, de, true_index, est_index, 0.0, 0.0)
    out.update({f"exact_{name}": exact[name] for name in ("precision", "recall", "f1")})
    return out


def _scores(dt, de, true_index, est_index, atol: float, rtol: float) -> dict:
    est_nonzero = _nonzero(de, atol, rtol)
    pred = np.zeros_like(dt, dtype=bool)
    pred[:, true_index] = est_nonzero[:, est_index]
    truth = _nonzero(dt, atol, rtol)
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp > 0 else 1.0
    recall = tp / (tp + fn) if tp + fn > 0 else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "tp": tp, "fp": fp, "fn": fn}
