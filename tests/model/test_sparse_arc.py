"""The sparse solvers of few-shot adaptation (:mod:`sctbr.model._sparse_arc`) match scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from sctbr.model._sparse_arc import lasso, logistic_lasso


def test_lasso_solver_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 5))
    y = z @ np.array([1.0, 0, 0, -0.5, 0]) + 0.3 * rng.normal(size=60)
    lam = 0.1
    ours, ok = lasso(z, y, lam, None, 10_000, 1e-12)
    # sklearn: (1 / 2n) |y - z b|^2 + alpha |b|_1, i.e. alpha = lam / 2
    ref = sklearn.Lasso(alpha=lam / 2, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(z, y).coef_
    assert ok
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    assert (ours == 0).sum() >= 2


def test_logistic_solver_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4))
    y = (rng.random(200) < 1 / (1 + np.exp(-(z @ np.array([2.0, 0, -1.0, 0]))))).astype(float)
    lam = 0.02
    ours, ok = logistic_lasso(z, y, np.zeros(200), lam, None, 100_000, 1e-12)
    # sklearn: |b|_1 + C * sum(logistic loss), i.e. C = 1 / (n lam)
    import sklearn as sk

    l1 = {"l1_ratio": 1.0} if tuple(int(v) for v in sk.__version__.split(".")[:2]) >= (1, 8) else {"penalty": "l1"}
    ref = sklearn.LogisticRegression(
        C=1 / (200 * lam), fit_intercept=False, solver="liblinear", tol=1e-10, max_iter=100_000, **l1
    ).fit(z, y)
    assert ok
    np.testing.assert_allclose(ours, ref.coef_[0], atol=1e-3)
