"""The few-shot adaptation's convex problem (:meth:`sctbr.model.TBR.adapt`), solved exactly.

With the encoder and every other weight frozen, the new arc's change ``Delta`` is an l1-penalised regression on the
latents with the parent's head as offset: :class:`sklearn.linear_model.Lasso` on the response minus the offset for a
squared-error target (:func:`lasso`), statsmodels' l1-penalised binomial GLM with the offset for a binary one
(:func:`logistic_lasso`; sklearn's logistic regression takes no offset), and lambda by K-fold cross-validation
(:class:`sklearn.model_selection.PredefinedSplit` folds of a seeded permutation) over a warm-started lambda path
with the one-standard-error rule (:func:`cv_lambda`); the target it fits (:func:`target_matrix`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr.model._lam import one_standard_error_rule

#: Length of the lambda path searched by cross-validation (log-spaced over three decades below lambda_max).
N_LAMBDAS = 25


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lasso(z: np.ndarray, r: np.ndarray, lam: float, start, max_iter: int, tol: float) -> tuple[np.ndarray, bool]:
    """Minimise ``mean((r - z b)^2) + lam * |b|_1`` with :class:`sklearn.linear_model.Lasso` (``alpha = lam / 2``).

    sklearn's objective is ``|r - z b|^2 / (2 n) + alpha |b|_1``; ``start`` warm-starts the coordinate descent.
    ``lam = 0`` is least squares. Returns the coefficients and whether the solver converged (no
    :class:`~sklearn.exceptions.ConvergenceWarning`).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso, LinearRegression

    if lam <= 0:
        return LinearRegression(fit_intercept=False).fit(z, r).coef_.astype(np.float64), True
    model = Lasso(alpha=lam / 2.0, fit_intercept=False, max_iter=int(max_iter), tol=float(tol), warm_start=True)
    if start is not None:
        model.coef_ = np.array(start, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(z, r)
    ok = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return np.asarray(model.coef_, dtype=np.float64), ok


def logistic_lasso(
    z: np.ndarray, y: np.ndarray, offset: np.ndarray, lam: float, start, max_iter: int, tol: float
) -> tuple[np.ndarray, bool]:
    """Minimise the mean logistic loss of ``offset + z b`` plus ``lam * |b|_1`` with statsmodels' GLM.

    sklearn's logistic regression takes no offset, so this is :meth:`statsmodels.genmod.generalized_linear_model.GLM.
    fit_regularized` (``method="elastic_net"``, ``L1_wt=1``, whose objective is the mean negative log-likelihood
    plus ``alpha |b|_1``: ``alpha = lam``), warm-started at ``start``. Convergence is judged by the optimality
    (KKT) conditions: the largest violation, relative to ``max(1, lam)``, at most ``max(tol, 1e-6)``.
    """
    import statsmodels.api as sm

    n, p = z.shape
    start = np.zeros(p) if start is None else np.array(start, dtype=np.float64)
    model = sm.GLM(y, z, family=sm.families.Binomial(), offset=offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' perfect-separation and convergence chatter: judged below
        fit = model.fit_regularized(
            method="elastic_net",
            alpha=float(lam),
            L1_wt=1.0,
            start_params=start,
            maxiter=int(max_iter),
            cnvrg_tol=max(float(tol), 1e-12),
            zero_tol=1e-10,
        )
    b = np.asarray(fit.params, dtype=np.float64)
    grad = z.T @ (sigmoid(offset + z @ b) - y) / n
    nz = b != 0
    violation = max(
        float(np.abs(grad[nz] + lam * np.sign(b[nz])).max(initial=0.0)),
        float((np.abs(grad[~nz]) - lam).max(initial=0.0)),
    )
    return b, violation <= max(float(tol), 1e-6) * max(1.0, lam)


class Problem:
    """One target's adaptation problem: latents ``z`` (cells x latents), response and offset."""

    def __init__(self, z: np.ndarray, y: np.ndarray, offset: np.ndarray, logistic: bool, max_iter: int, tol: float):
        self.z, self.y, self.offset, self.logistic = z, y, offset, logistic
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.not_converged = 0

    def subset(self, idx: np.ndarray) -> Problem:
        return Problem(self.z[idx], self.y[idx], self.offset[idx], self.logistic, self.max_iter, self.tol)

    def gradient_at_zero(self) -> np.ndarray:
        """Gradient of the data term at ``Delta = 0``; ``lam >= max |gradient|`` gives ``Delta = 0``."""
        n = len(self.y)
        if self.logistic:
            return self.z.T @ (sigmoid(self.offset) - self.y) / n
        return -2.0 * self.z.T @ (self.y - self.offset) / n

    def solve(self, lam: float, start=None) -> np.ndarray:
        if self.logistic:
            b, ok = logistic_lasso(self.z, self.y, self.offset, lam, start, self.max_iter, self.tol)
        else:
            b, ok = lasso(self.z, self.y - self.offset, lam, start, self.max_iter, self.tol)
        self.not_converged += not ok
        return b

    def refit(self, b: np.ndarray) -> np.ndarray:
        """Relaxed lasso: refit the non-zero entries of ``b`` without penalty (squared error only)."""
        support = b != 0
        if self.logistic or not support.any():
            return b
        from sklearn.linear_model import LinearRegression

        out = np.zeros_like(b)
        out[support] = LinearRegression(fit_intercept=False).fit(self.z[:, support], self.y - self.offset).coef_
        return out

    def error(self, b: np.ndarray) -> float:
        """Mean data term (squared error, or logistic loss) of ``Delta = b``."""
        eta = self.offset + self.z @ b
        if self.logistic:
            return float(np.mean(np.logaddexp(0.0, eta) - self.y * eta))
        return float(np.mean((self.y - eta) ** 2))


def cv_lambda(problem: Problem, folds: int, rng: np.random.Generator, refit: bool) -> tuple[float, pd.DataFrame]:
    """K-fold CV over a warm-started lambda path; the largest lambda within one standard error of the best.

    With ``refit``, each lambda is scored by the relaxed fit (the unpenalised refit on its support).
    """
    lam_max = float(np.abs(problem.gradient_at_zero()).max(initial=0.0))
    if lam_max <= 0:
        return 0.0, pd.DataFrame({"lam": [0.0], "cv_error": [np.nan], "cv_se": [np.nan]})
    from sklearn.model_selection import PredefinedSplit

    grid = lam_max * np.logspace(0, -3, N_LAMBDAS)
    n = len(problem.y)
    # K folds of a seeded permutation (sklearn's KFold(shuffle=True) draws the same fold sizes; the folds come from
    # ``rng``, a numpy Generator, which KFold does not take)
    test_fold = np.empty(n, dtype=int)
    for f, part in enumerate(np.array_split(rng.permutation(n), folds)):
        test_fold[part] = f
    errors = np.empty((folds, len(grid)))
    for f, (train, test) in enumerate(PredefinedSplit(test_fold).split()):
        fit, held = problem.subset(train), problem.subset(test)
        b = None
        for i, lam in enumerate(grid):
            b = fit.solve(float(lam), b)
            errors[f, i] = held.error(fit.refit(b) if refit else b)
        problem.not_converged += fit.not_converged
    mean = errors.mean(0)
    se = errors.std(0, ddof=1) / np.sqrt(folds)
    chosen = len(grid) - 1 - one_standard_error_rule(mean[::-1], se[::-1])  # the rule takes increasing lambdas
    path = pd.DataFrame({"lam": grid, "cv_error": mean, "cv_se": se, "chosen": np.arange(len(grid)) == chosen})
    return float(grid[chosen]), path


def target_matrix(adata: AnnData, target, names: list[str], logistic: np.ndarray) -> np.ndarray:
    """The adaptation's target (cells x targets): ``obs`` column(s) or an array; ``names``, the model's targets."""
    n_t = len(names)
    if target is None:
        target = names if n_t > 1 else names[0]
    if isinstance(target, str) or (isinstance(target, Sequence) and target and all(isinstance(t, str) for t in target)):
        cols = [target] if isinstance(target, str) else list(target)
        missing = [c for c in cols if c not in adata.obs]
        if missing:
            raise KeyError(
                f"Target column(s) {missing} not in adata.obs (columns: {list(adata.obs.columns)[:10]}); pass "
                "target=<column> or an array with one value per cell."
            )
        for c in cols:
            if not pd.api.types.is_numeric_dtype(adata.obs[c]) or pd.api.types.is_bool_dtype(adata.obs[c]):
                raise TypeError(f"Target {c!r} must be numeric, got {adata.obs[c].dtype}; use .astype(float).")
        y = adata.obs[cols].to_numpy(dtype=np.float64)
    else:
        y = np.asarray(target, dtype=np.float64)
        y = y.reshape(-1, 1) if y.ndim == 1 else y
    if y.shape != (adata.n_obs, n_t):
        raise ValueError(f"The target must give {n_t} value(s) per cell for {adata.n_obs} cells, got {y.shape}.")
    if not np.isfinite(y).all():
        raise ValueError(f"The target has {int((~np.isfinite(y)).sum())} NaN or infinite values; drop those cells.")
    if logistic.any() and not np.isin(y[:, logistic], (0.0, 1.0)).all():
        raise ValueError("A binary (logistic) target must contain only 0 and 1.")
    return y
