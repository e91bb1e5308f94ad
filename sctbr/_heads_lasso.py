"""The heads as a linear model once the latents are fixed: a weighted l1 problem over ``(bias, w0, Delta)``.

With the latents ``z`` (cells x d) of a trained encoder held fixed, the standardised prediction of a cell of
environment ``e`` is ``bias + z . (w0 + P[e] @ Delta)`` (``P`` the path matrix of the tree), linear in
``(bias, w0, Delta)``. Its squared error depends on the cells only through per-environment moments
(:func:`moments`: ``sum z~ z~^T`` and ``sum z~ y`` with ``z~ = [1, z]``), so a fit, a lambda path or a bootstrap
(cells reweighted) costs ``O(environments x d^2)`` per iteration, whatever the number of cells.

:func:`solve` minimises ``1/(2n) sum (y - prediction)^2 + lam * sum_aj omega_aj |Delta_aj|`` by FISTA (accelerated
proximal gradient, Beck & Teboulle 2009); the soft-thresholding step returns exact zeros. Used by the support
estimate (:mod:`sctbr.tl._support`) and by the final refinement's exact re-solve of the heads
(:func:`sctbr.model._heads.refine_final`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Moments:
    """Per-environment sufficient statistics of the squared error with fixed latents.

    ``s``: (environments, d+1, d+1), ``b``: (environments, d+1), ``yy``: sum of squared targets, ``n``: total
    weight of the cells; ``path``: (environments, arcs) path indicator (sparse).
    """

    s: np.ndarray
    b: np.ndarray
    yy: float
    n: float
    path: sp.csr_matrix


def moments(
    z: np.ndarray, y: np.ndarray, env: np.ndarray, path: sp.csr_matrix, weights: np.ndarray | None = None
) -> Moments:
    """Moments of the cells ``z`` (cells x d), ``y`` (cells,) of environments ``env`` (row indices of ``path``).

    ``weights`` (cells,) reweights the cells (a bootstrap draws them from a multinomial); default 1.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    zt = np.column_stack([np.ones(len(y)), z])
    n_env, d1 = path.shape[0], zt.shape[1]
    s = np.zeros((n_env, d1, d1))
    b = np.zeros((n_env, d1))
    env = np.asarray(env, dtype=int)
    for e in np.unique(env):
        rows = env == e
        zw = zt[rows] * w[rows, None]
        s[e] = zw.T @ zt[rows]
        b[e] = zw.T @ y[rows]
    return Moments(s=s, b=b, yy=float(np.sum(w * y * y)), n=float(w.sum()), path=sp.csr_matrix(path, dtype=np.float64))


def gram(mom: Moments) -> tuple[np.ndarray, np.ndarray]:
    """The loss as ``theta^T G theta / 2 - c^T theta`` (+ const, scaled by ``1/n``), ``theta = [bias, w0, vec(Delta)]``.

    ``vec(Delta)`` is row-major (arc by arc). Built from a square root of every environment's moments: each
    environment contributes ``d + 1`` rows of a design whose Gram matrix is ``G``.
    """
    n_env, d1 = mom.b.shape
    n_arcs, d = mom.path.shape[1], d1 - 1
    p = d1 + n_arcs * d
    path = mom.path.toarray()
    rows = np.zeros((n_env, d1, p))
    for e in range(n_env):
        vals, vecs = np.linalg.eigh(mom.s[e])
        half = vecs * np.sqrt(np.clip(vals, 0.0, None))  # S_e = half @ half.T
        rows[e, :, :d1] = half.T
        rows[e, :, d1:] = (half[1:].T[:, None, :] * path[e][None, :, None]).reshape(d1, -1)
    design = rows.reshape(-1, p)
    g = design.T @ design / mom.n
    c = np.concatenate([mom.b.sum(axis=0), (path.T @ mom.b[:, 1:]).reshape(-1)]) / mom.n
    return g, c


class Problem:
    """The quadratic problem of one set of moments: its Gram matrix, linear term and step size."""

    def __init__(self, mom: Moments):
        self.mom = mom
        self.g, self.c = gram(mom)
        self.d1 = mom.b.shape[1]
        self.n_arcs = mom.path.shape[1]
        self.step = 1.0 / (1.01 * float(np.linalg.eigvalsh(self.g)[-1]) + 1e-12)

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(root, delta)`` of a parameter vector."""
        return theta[: self.d1].copy(), theta[self.d1 :].reshape(self.n_arcs, self.d1 - 1).copy()

    def lam_max(self, penalty: np.ndarray | None = None) -> float:
        """Smallest lambda at which every entry of Delta is zero (root fitted unpenalised)."""
        r = slice(0, self.d1)
        theta = np.zeros_like(self.c)
        theta[r] = np.linalg.lstsq(self.g[r, r], self.c[r], rcond=None)[0]
        grad = np.abs(self.g[self.d1 :] @ theta - self.c[self.d1 :])
        omega = np.ones_like(grad) if penalty is None else np.asarray(penalty, dtype=np.float64).reshape(-1)
        ok = np.isfinite(omega) & (omega > 0)
        return float((grad[ok] / omega[ok]).max()) if ok.any() else 0.0

    def solve(
        self,
        lam: float,
        penalty: np.ndarray | None = None,
        *,
        start: np.ndarray | None = None,
        max_iter: int = 20000,
        tol: float = 1e-6,
    ) -> np.ndarray:
        """Minimise the loss plus ``lam * sum omega |Delta|`` by FISTA; returns ``theta``.

        ``penalty``: per-entry weights ``omega`` (arcs x d, default 1); ``inf`` fixes an entry at 0. Stops when a step
        moves ``theta`` by less than ``tol`` relative to its norm (1e-6: on issue 17's 12 000-cell fit the called
        changes and their bootstrap frequencies were identical to those at 1e-8, in a third of the time).
        """
        p = self.c.size
        omega = np.ones(p - self.d1) if penalty is None else np.asarray(penalty, dtype=np.float64).reshape(-1)
        fixed = np.r_[np.zeros(self.d1, dtype=bool), ~np.isfinite(omega)]
        thresh = self.step * lam * np.r_[np.zeros(self.d1), np.where(np.isfinite(omega), omega, 0.0)]
        theta = np.zeros(p) if start is None else np.array(start, dtype=np.float64)
        theta[fixed] = 0.0
        y, t = theta.copy(), 1.0
        for _ in range(max_iter):
            v = y - self.step * (self.g @ y - self.c)
            new = np.sign(v) * np.maximum(np.abs(v) - thresh, 0.0)
            new[fixed] = 0.0
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            diff = new - theta
            y = new + ((t - 1.0) / t_new) * diff
            theta, t = new, t_new
            if np.sqrt(diff @ diff) <= tol * (np.sqrt(theta @ theta) + 1e-12):
                break
        return theta

    def refit(self, support: np.ndarray) -> np.ndarray:
        """Unpenalised least squares with Delta zero off ``support`` (arcs x d); minimum norm where not unique."""
        keep = np.r_[np.ones(self.d1, dtype=bool), np.asarray(support, dtype=bool).reshape(-1)]
        theta = np.zeros(self.c.size)
        theta[keep] = np.linalg.lstsq(self.g[np.ix_(keep, keep)], self.c[keep], rcond=1e-10)[0]
        return theta
