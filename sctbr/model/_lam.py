"""The lambda-selection rule, written once: ``TBR.train(lam="auto")``, ``adapt``'s CV and the experiments use it."""

from __future__ import annotations

import numpy as np


def one_standard_error_rule(mean, se=None) -> int:
    """Index of the last (largest-lambda) entry whose mean error is within one SE of the smallest mean.

    The lasso's one-standard-error rule: among the values of a path ordered by increasing lambda, keep the sparsest
    one whose error is not distinguishably worse than the best; the SE is that of the best entry. Without ``se``
    (or with zeros) it is the entry with the smallest mean error (ties go to the largest lambda).

    Parameters
    ----------
    mean
        Mean validation (or cross-validation) error of every lambda, ordered by increasing lambda.
    se
        Its standard error, in the same order; ``None`` for the plain minimum.

    Returns
    -------
    The index of the chosen lambda.

    Examples
    --------
    >>> from sctbr.model import one_standard_error_rule
    >>> one_standard_error_rule([0.30, 0.20, 0.22, 0.40], [0.01, 0.03, 0.01, 0.01])
    2
    >>> one_standard_error_rule([0.30, 0.20, 0.22, 0.40])
    1
    """
    mean = np.asarray(mean, dtype=float)
    se = np.zeros_like(mean) if se is None else np.asarray(se, dtype=float)
    best = int(np.nanargmin(mean))
    within = np.flatnonzero(mean <= mean[best] + se[best])
    return int(within.max())
