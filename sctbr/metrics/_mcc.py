"""Mean correlation coefficient (MCC) between true and estimated latents.

Latents learned by identifiable representation-learning methods are recovered only up to a permutation and a
per-coordinate rescaling (including sign flips). The MCC therefore first matches every true latent to at most one
estimated latent by maximising the total absolute correlation (a linear assignment problem) and then averages the
absolute correlations of the matched pairs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

CorrelationMethod = Literal["pearson", "spearman"]
_METHODS: tuple[str, ...] = ("pearson", "spearman")

# A column whose standard deviation is below this fraction of its largest absolute value is treated as constant
# (its correlation with everything is then defined as 0). This guards against correlations computed from
# floating-point round-off of a column that is constant up to representation error.
_CONSTANT_RTOL = 1e-12


def _as_2d(x: ArrayLike, name: str, rows: str = "cells") -> np.ndarray:
    """Convert ``x`` to a finite 2-D float array (``rows`` x latents); a 1-D array ``(n,)`` becomes ``(n, 1)``."""
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 1-D or 2-D ({rows} x latents), got an array of shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return arr


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"Unknown correlation method {method!r}; choose one of {', '.join(map(repr, _METHODS))}.")


def _validate_pair(z_true: ArrayLike, z_est: ArrayLike, names: tuple[str, str] = ("z_true", "z_est")):
    """Validate a (true, estimated) pair of latent matrices and return them as 2-D float arrays."""
    a = _as_2d(z_true, names[0])
    b = _as_2d(z_est, names[1])
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same number of rows (cells), "
            f"got shapes {a.shape} and {b.shape}."
        )
    if a.shape[0] < 2:
        raise ValueError(f"At least 2 rows (cells) are needed to compute correlations, got {a.shape[0]}.")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"`{names[0]}` and `{names[1]}` need at least one column, got shapes {a.shape} and {b.shape}.")
    return a, b


def _constant_columns(x: np.ndarray, centered: np.ndarray) -> np.ndarray:
    """Boolean mask of columns that are constant (exactly, or up to floating-point round-off)."""
    n = x.shape[0]
    std = np.sqrt(np.sum(centered**2, axis=0) / n)
    scale = np.max(np.abs(x), axis=0)
    return (std == 0) | (std <= _CONSTANT_RTOL * scale) | np.all(x == x[:1], axis=0)


def _prescale(x: np.ndarray) -> np.ndarray:
    """Divide each column by its largest absolute value (avoids under/overflow when squaring)."""
    scale = np.max(np.abs(x), axis=0)
    scale[scale == 0] = 1.0
    return x / scale


def _normalise_columns(x: np.ndarray) -> np.ndarray:
    """Center and scale columns to unit Euclidean norm; constant columns become all-zero."""
    x = _prescale(x)
    centered = x - x.mean(axis=0, keepdims=True)
    constant = _constant_columns(x, centered)
    norms = np.sqrt(np.sum(centered**2, axis=0))
    norms[constant] = 1.0
    out = centered / norms
    out[:, constant] = 0.0
    return out


def _correlation_matrix(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    """Signed correlation matrix between the columns of ``a`` (rows) and of ``b`` (columns).

    Constant columns have correlation 0 with everything; no warnings are emitted.
    """
    _check_method(method)
    if method == "spearman":
        a = rankdata(a, axis=0)
        b = rankdata(b, axis=0)
    with np.errstate(all="ignore"):
        corr = _normalise_columns(a).T @ _normalise_columns(b)
    corr = np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(corr, -1.0, 1.0)


def match_latents(z_true: ArrayLike, z_est: ArrayLike, *, method: CorrelationMethod = "pearson") -> dict[str, Any]:
    """Match true to estimated latents by maximising the total absolute correlation.

    Solves the linear assignment problem on the absolute correlation matrix with
    :func:`scipy.optimize.linear_sum_assignment`. When the numbers of latents differ, ``min(d_true, d_est)`` pairs
    are matched and the remaining latents stay unmatched.

    Parameters
    ----------
    z_true
        True latents, shape ``(n_cells, d_true)``. A 1-D array of shape ``(n_cells,)`` is a single latent.
    z_est
        Estimated latents, shape ``(n_cells, d_est)`` (or ``(n_cells,)``).
    method
        ``"pearson"`` (linear correlation) or ``"spearman"`` (Pearson correlation of column-wise ranks, which is
        invariant to monotone transformations of each latent).

    Returns
    -------
    dict
        ``"true_index"``
            Integer array of matched true-latent indices (sorted ascending).
        ``"est_index"``
            Integer array of the estimated latents matched to ``true_index`` (same length).
        ``"corr"``
            Signed correlation of each matched pair.
        ``"abs_corr"``
            Absolute correlation of each matched pair.
        ``"corr_matrix"``
            Absolute correlation matrix of shape ``(d_true, d_est)``.

        A constant column has correlation 0 with every other column.

    Raises
    ------
    ValueError
        If the inputs have different numbers of rows, fewer than 2 rows, contain NaN/inf, or ``method`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import match_latents
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(500, 3))
    >>> m = match_latents(z, -2.0 * z[:, [2, 0, 1]])
    >>> m["est_index"].tolist()
    [1, 2, 0]
    >>> np.allclose(m["corr"], -1.0)
    True
    """
    _check_method(method)
    a, b = _validate_pair(z_true, z_est)
    signed = _correlation_matrix(a, b, method)
    abs_corr_matrix = np.abs(signed)
    true_index, est_index = linear_sum_assignment(abs_corr_matrix, maximize=True)
    true_index = np.asarray(true_index, dtype=np.intp)
    est_index = np.asarray(est_index, dtype=np.intp)
    corr = signed[true_index, est_index]
    return {
        "true_index": true_index,
        "est_index": est_index,
        "corr": corr,
        "abs_corr": np.abs(corr),
        "corr_matrix": abs_corr_matrix,
    }


def mcc(z_true: ArrayLike, z_est: ArrayLike, *, method: CorrelationMethod = "pearson") -> float:
    """Mean correlation coefficient between true and estimated latents.

    The latents are matched with :func:`match_latents` and the absolute correlations of the
    ``min(d_true, d_est)`` matched pairs are averaged (the ``mean_corr_coef`` recipe of iVAE / ICE-BeeM).
    The score lies in ``[0, 1]`` and is invariant to permutations and nonzero rescaling (including sign flips)
    of the latent coordinates.

    Parameters
    ----------
    z_true
        True latents, shape ``(n_cells, d_true)`` or ``(n_cells,)``.
    z_est
        Estimated latents, shape ``(n_cells, d_est)`` or ``(n_cells,)``.
    method
        ``"pearson"`` or ``"spearman"``, see :func:`match_latents`.

    Returns
    -------
    float
        Mean absolute correlation of the matched pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import mcc
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(1000, 3))
    >>> round(mcc(z, z[:, [1, 2, 0]] * np.array([3.0, -0.5, 2.0])), 6)
    1.0
    >>> round(mcc(z, np.exp(z), method="spearman"), 6)
    1.0
    """
    matching = match_latents(z_true, z_est, method=method)
    return float(np.mean(matching["abs_corr"]))


def mcc_out_of_sample(
    z_true_fit: ArrayLike,
    z_est_fit: ArrayLike,
    z_true_eval: ArrayLike,
    z_est_eval: ArrayLike,
    *,
    method: CorrelationMethod = "pearson",
) -> float:
    """MCC with the latent matching fitted on one split and scored on another.

    The permutation is found with :func:`match_latents` on ``(z_true_fit, z_est_fit)``; the mean absolute
    correlation of those same pairs is then computed on ``(z_true_eval, z_est_eval)``. This avoids the optimistic
    bias of choosing the matching on the data used for scoring.

    Parameters
    ----------
    z_true_fit, z_est_fit
        True and estimated latents of the split used to find the matching (same number of rows).
    z_true_eval, z_est_eval
        True and estimated latents of the evaluation split (same number of rows, same number of columns as the
        corresponding fit arrays).
    method
        ``"pearson"`` or ``"spearman"``, used both for matching and for scoring.

    Returns
    -------
    float
        Mean absolute correlation of the fit-split pairs evaluated on the eval split.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import mcc_out_of_sample
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 2))
    >>> z_hat = z[:, ::-1] + 0.1 * rng.normal(size=z.shape)
    >>> score = mcc_out_of_sample(z[:1000], z_hat[:1000], z[1000:], z_hat[1000:])
    >>> bool(score > 0.99)
    True
    """
    _check_method(method)
    fit_true, fit_est = _validate_pair(z_true_fit, z_est_fit, ("z_true_fit", "z_est_fit"))
    eval_true, eval_est = _validate_pair(z_true_eval, z_est_eval, ("z_true_eval", "z_est_eval"))
    if fit_true.shape[1] != eval_true.shape[1] or fit_est.shape[1] != eval_est.shape[1]:
        raise ValueError(
            "Fit and eval arrays must have the same numbers of latents: got z_true_fit "
            f"{fit_true.shape}, z_est_fit {fit_est.shape}, z_true_eval {eval_true.shape}, z_est_eval {eval_est.shape}."
        )
    matching = match_latents(fit_true, fit_est, method=method)
    corr = _correlation_matrix(eval_true, eval_est, method)
    return float(np.mean(np.abs(corr[matching["true_index"], matching["est_index"]])))


def chance_mcc(
    z_true: ArrayLike,
    z_est: ArrayLike | None = None,
    *,
    n_draws: int = 100,
    random_state: int = 0,
    method: CorrelationMethod = "pearson",
) -> float:
    """MCC of random linear mixtures of the true latents: the score of an encoder that spans them but is not aligned.

    For each of ``n_draws`` Gaussian matrices ``A`` (``d x d``, columns normalised to unit length) the estimate
    ``z_true @ A`` is scored with :func:`mcc`; the mean is returned. A method's MCC means something only above this
    level; it is high when the true latents are correlated with each other (every mixture then correlates with
    every latent) and, even for independent latents, well above 0 for few latents (about 0.6 for 5 independent
    Gaussian latents).

    With ``z_est``, random mixtures of the *estimated* latents are scored against the true ones instead: the
    chance level of that estimate's span. An encoder that captures only part of the true latents scores below the
    first chance level whatever its basis; the second asks whether its basis beats a random basis of the same
    latent space (a method's MCC above it means its basis is aligned, not just its span).

    Parameters
    ----------
    z_true
        True latents, shape ``(n_cells, d)``.
    z_est
        Estimated latents of the same cells, shape ``(n_cells, k)``; ``None`` mixes the true latents.
    n_draws
        Number of random mixing matrices.
    random_state
        Seed of the mixing matrices.
    method
        ``"pearson"`` or ``"spearman"``, see :func:`mcc`.

    Returns
    -------
    float
        Mean MCC of the random mixtures.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import chance_mcc
    >>> z = np.random.default_rng(0).normal(size=(2000, 5))
    >>> bool(0.5 < chance_mcc(z) < 0.8)
    True
    >>> half = np.c_[z[:, :3], np.random.default_rng(1).normal(size=(2000, 2))]  # spans 3 of the 5 latents
    >>> bool(chance_mcc(z, half) < chance_mcc(z))
    True
    """
    _check_method(method)
    z = _as_2d(z_true, "z_true")
    if z_est is None:
        est = z
    else:
        z, est = _validate_pair(z, z_est)
    if int(n_draws) < 1:
        raise ValueError(f"`n_draws` must be at least 1, got {n_draws!r}.")
    rng = np.random.default_rng(random_state)
    d = est.shape[1]
    scores = []
    for _ in range(int(n_draws)):
        mixing = rng.normal(size=(d, d))
        mixing /= np.linalg.norm(mixing, axis=0, keepdims=True)
        scores.append(mcc(z, est @ mixing, method=method))
    return float(np.mean(scores))
