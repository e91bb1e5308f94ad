"""The few-shot adaptation's convex problem (:meth:`sctbr.model.TBR.adapt`), solved exactly.

With the encoder and every other weight frozen, the new arc's change ``Delta`` is an l1-penalised regression on the
latents with the parent's head as offset: cyclic coordinate descent for a squared-error target
(:func:`_lasso_cd`), accelerated proximal gradient with restarts for a binary one (:func:`_logistic_fista`), and
lambda by K-fold cross-validation with the one-standard-error rule (:func:`cv_lambda`); the target it fits
(:func:`target_matrix`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr.model._lam import one_standard_error_rule

#: Length of the lambda path searched by cross-validation (log-spaced over three decades below lambda_max).
N_LAMBDAS = 25


def _soft(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _lasso_cd(
    gram: np.ndarray, corr: np.ndarray, lam: float, start: np.ndarray | None, max_iter: int, tol: float
) -> tuple[np.ndarray, bool]:
    """Minimise ``b' G b - 2 c' b + lam * |b|_1`` (= mean squared error + l1 up to a constant) by cyclic CD."""
    p = len(corr)
    b = np.zeros(p) if start is None else np.array(start, dtype=np.float64)
    diag = np.diag(gram)
    for _ in range(max_iter):
        biggest = 0.0
        for j in range(p):
            if diag[j] <= 0:
                new = 0.0
            else:
                rho = corr[j] - gram[j] @ b + diag[j] * b[j]
                new = _soft(rho, lam / 2.0) / diag[j]
            biggest = max(biggest, abs(new - b[j]))
            b[j] = new
        if biggest <= tol * max(1.0, float(np.abs(b).max(initial=0.0))):
            return b, True
    return b, False


def _logistic_fista(
    z: np.ndarray, y: np.ndarray, offset: np.ndarray, lam: float, start, max_iter: int, tol: float
) -> tuple[np.ndarray, bool]:
    """Minimise the mean logistic loss of ``offset + z b`` plus ``lam * |b|_1`` (FISTA with restarts)."""
    n, p = z.shape
    lipschitz = float(np.linalg.eigvalsh(z.T @ z / n).max(initial=0.0)) / 4.0
    if lipschitz <= 0:
        return np.zeros(p), True
    step = 1.0 / lipschitz
    b = np.zeros(p) if start is None else np.array(start, dtype=np.float64)
    v, t = b.copy(), 1.0
    for _ in range(max_iter):
        grad = z.T @ (sigmoid(offset + z @ v) - y) / n
        new = _soft(v - step * grad, step * lam)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        if (new - b) @ (v - new) > 0:  # adaptive restart (O'Donoghue & Candes)
            v, t_new = new.copy(), 1.0
        else:
            v = new + (t - 1.0) / t_new * (new - b)
        change = float(np.abs(new - b).max(initial=0.0))
        b, t = new, t_new
        if change <= tol * max(1.0, float(np.abs(b).max(initial=0.0))):
            return b, True
    return b, False


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
            b, ok = _logistic_fista(self.z, self.y, self.offset, lam, start, self.max_iter, self.tol)
        else:
            n = len(self.y)
            gram = self.z.T @ self.z / n
            corr = self.z.T @ (self.y - self.offset) / n
            b, ok = _lasso_cd(gram, corr, lam, start, self.max_iter, self.tol)
        self.not_converged += not ok
        return b

    def refit(self, b: np.ndarray) -> np.ndarray:
        """Relaxed lasso: refit the non-zero entries of ``b`` without penalty (squared error only)."""
        support = b != 0
        if self.logistic or not support.any():
            return b
        out = np.zeros_like(b)
        out[support] = np.linalg.lstsq(self.z[:, support], self.y - self.offset, rcond=None)[0]
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
    grid = lam_max * np.logspace(0, -3, N_LAMBDAS)
    n = len(problem.y)
    parts = np.array_split(rng.permutation(n), folds)
    errors = np.empty((folds, len(grid)))
    for f, test in enumerate(parts):
        train = np.setdiff1d(np.arange(n), test)
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
