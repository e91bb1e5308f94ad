"""Starts for the basis refinement from linear programs: the sparsest head directions, found exactly.

The basis refinement (:func:`sctbr.model.refine_basis`) minimises a non-convex penalty over the map ``M`` of the
latents, and from random starts it often stops in a worse basis than the true one (measured with the true latents
linearly mixed: the refinement reached a larger penalty than the truth's on every tree tried). One *direction*
at a time the problem is convex: a head direction ``n`` (the latent it weights is ``Z M`` with ``M = N^-T``) gives
the arc changes ``D W n`` (plus the free heads of unobserved nodes), and

    min_{n, u} || D_obs W n + D_free u ||_1   subject to   r^T n = 1

is a linear program. With ``r`` the difference of two observed heads (the sum of the changes on the path between
them, itself sparse), its solution is a sparse direction: the recipe of sparse dictionary recovery (Spielman, Wang
and Wright 2012), where such programs recover the sparse rows exactly. :func:`lp_starts` solves one program per
normalisation, rounds each solution (the program again with ``r`` the solution itself, which moves it to the
sparsest nearby direction) and assembles the sparsest well-conditioned sets of ``d`` directions into starts for
the refinement.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

#: Trees with more arcs than this get no linear-programming starts (the programs grow with the tree).
MAX_ARCS = 4000


class _DirectionProgram:
    """The l1 program of one head direction on one tree (forest for several targets)."""

    def __init__(self, node_weights: np.ndarray, parent_index: np.ndarray, observed: np.ndarray):
        child = np.flatnonzero(parent_index >= 0)
        n_arcs, n_nodes = len(child), node_weights.shape[0]
        rows = np.arange(n_arcs)
        diff = sp.csr_matrix(
            (np.r_[np.ones(n_arcs), -np.ones(n_arcs)], (np.r_[rows, rows], np.r_[child, parent_index[child]])),
            shape=(n_arcs, n_nodes),
        )
        obs, free = np.flatnonzero(observed), np.flatnonzero(~observed)
        self.d, self.n_free, self.n_arcs = node_weights.shape[1], len(free), n_arcs
        self.a_dir = np.asarray(diff[:, obs] @ node_weights[obs])  # arcs x d
        self.a_free = diff[:, free].tocsr()  # arcs x free
        self.observed_heads = node_weights[obs]
        eye = sp.identity(n_arcs, format="csr")
        block = sp.hstack([sp.csr_matrix(self.a_dir), self.a_free])
        self._a_ub = sp.vstack([sp.hstack([block, -eye]), sp.hstack([-block, -eye])]).tocsr()
        self._cost = np.r_[np.zeros(self.d + self.n_free), np.ones(n_arcs)]
        self._bounds = [(None, None)] * (self.d + self.n_free) + [(0, None)] * n_arcs

    def solve(self, r: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The direction ``n`` minimising the l1 norm of its arc changes subject to ``r^T n = 1``, and its sparsity.

        The sparsity is the scale-free ratio l1 / l2 of the arc changes (smaller is sparser).
        """
        out = self.solve_weighted(r, None)
        if out is None:
            return None
        n, changes = out
        l2 = float(np.linalg.norm(changes))
        return (n, float(np.abs(changes).sum()) / l2) if l2 > 1e-12 else None

    def solve_weighted(self, r: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The direction ``n`` minimising the (``weights``-weighted, per arc) l1 norm of its arc changes subject to
        ``r^T n = 1``, and those changes (unobserved heads at their optimum); ``None`` when the program fails."""
        cost = self._cost if weights is None else np.r_[np.zeros(self.d + self.n_free), weights]
        a_eq = sp.csr_matrix(np.r_[r, np.zeros(self.n_free + self.n_arcs)][None, :])
        res = linprog(
            cost,
            A_ub=self._a_ub,
            b_ub=np.zeros(2 * self.n_arcs),
            A_eq=a_eq,
            b_eq=[1.0],
            bounds=self._bounds,
            method="highs",
        )
        if res.status != 0:
            return None
        changes = self.a_dir @ res.x[: self.d] + self.a_free @ res.x[self.d : self.d + self.n_free]
        return res.x[: self.d], np.asarray(changes)


def sparse_directions(
    node_weights: np.ndarray,
    parent_index: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    *,
    max_programs: int = 100,
    n_rounds: int = 3,
    random_state: int = 0,
) -> tuple[list[tuple[np.ndarray, float]], list[tuple[np.ndarray, float]]]:
    """Sparse head directions from linear programs, each with its sparsity (l1 / l2 of its arc changes).

    Returns ``(raw, rounded)``: one solution per normalisation (differences of observed heads, the heads themselves
    and random vectors), and the distinct directions they round to. Directions are scaled to unit norm in the
    metric of the latents' inverse correlation.
    """
    rng = np.random.default_rng(random_state)
    program = _DirectionProgram(node_weights, parent_index, observed)
    heads = program.observed_heads
    d = heads.shape[1]
    cinv = np.linalg.inv(corr)
    i, j = np.triu_indices(len(heads), k=1)
    rs = np.vstack([heads[i] - heads[j], heads, rng.normal(size=(2 * d * d, d)) @ np.linalg.cholesky(cinv).T])
    if len(rs) > max_programs:
        rs = rs[rng.choice(len(rs), max_programs, replace=False)]

    def unit(n: np.ndarray) -> np.ndarray:
        n = n / np.sqrt(n @ cinv @ n)
        return -n if n[np.argmax(np.abs(n))] < 0 else n

    raw: list[tuple[np.ndarray, float]] = []
    rounded: list[tuple[np.ndarray, float]] = []
    for r in rs:
        if np.linalg.norm(r) < 1e-9:
            continue
        out = program.solve(r)
        if out is None or not np.isfinite(out[0]).all():
            continue
        n, score = out
        raw.append((unit(n), score))
        for _ in range(n_rounds):
            q = cinv @ n
            nxt = program.solve(q / (q @ n))
            if nxt is None:
                break
            done = abs(unit(nxt[0]) @ cinv @ unit(n)) > 1 - 1e-9
            n, score = nxt
            if done:
                break
        n = unit(n)
        if all(abs(n @ cinv @ m) < 0.999 for m, _ in rounded):
            rounded.append((n, score))
    return raw, rounded


def _greedy_sets(dirs: list[np.ndarray], scores: np.ndarray, cinv: np.ndarray, n_sets: int, rng) -> list[np.ndarray]:
    """Sets of ``d`` well-conditioned directions, picked greedily in (randomly perturbed) order of sparsity."""
    d = cinv.shape[0]
    sets, seen = [], set()
    spread = scores.std() if len(scores) > 1 else 0.0
    for t in range(n_sets):
        order = np.argsort(scores + (0.0 if t == 0 else rng.gumbel(size=len(scores)) * 0.3 * spread))
        for min_sv in (0.5, 0.3, 0.1, 0.03):
            chosen: list[int] = []
            for k in order:
                trial = np.array([dirs[c] for c in [*chosen, k]])
                if np.linalg.eigvalsh(trial @ cinv @ trial.T).min() > min_sv**2:
                    chosen.append(int(k))
                if len(chosen) == d:
                    break
            if len(chosen) == d:
                break
        key = tuple(sorted(chosen))
        if len(chosen) == d and key not in seen:
            seen.add(key)
            sets.append(np.array([dirs[c] for c in chosen]).T)
    return sets


def lp_starts(
    node_weights: np.ndarray,
    parent_index: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    n_starts: int,
    *,
    random_state: int = 0,
) -> list[np.ndarray]:
    """Up to ``n_starts`` maps ``M`` (``Z -> Z M``) whose head directions are sparse directions of the tree.

    Parameters are those of :func:`sctbr.model.refine_basis` (one target: ``node_weights`` is nodes x d). Returns
    an empty list for trees with more than :data:`MAX_ARCS` arcs.
    """
    if int((np.asarray(parent_index) >= 0).sum()) > MAX_ARCS:
        return []
    rng = np.random.default_rng(random_state)
    raw, rounded = sparse_directions(node_weights, parent_index, observed, corr, random_state=random_state)
    cinv = np.linalg.inv(corr)
    sets: list[np.ndarray] = []
    d = node_weights.shape[1]
    for found, n_sets in ((rounded, max(1, n_starts // 4)), (raw, n_starts)):
        if len(found) >= d:
            dirs, scores = [n for n, _ in found], np.array([s for _, s in found])
            sets += _greedy_sets(dirs, scores, cinv, n_sets - len(sets) if found is raw else n_sets, rng)
    # head directions N (columns) -> latent map M = N^-T
    return [np.linalg.inv(n).T for n in sets[:n_starts]]


def _free_heads(program: _DirectionProgram, directions: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact l1 penalty of the head directions (columns) with the unobserved heads at their optimum, and those heads.

    One linear program per direction: ``min_u || D_obs W n + D_free u ||_1``.
    """
    d = directions.shape[1]
    if program.n_free == 0:
        return float(np.abs(program.a_dir @ directions).sum()), np.zeros((0, d))
    eye = sp.identity(program.n_arcs, format="csr")
    a_ub = sp.vstack([sp.hstack([program.a_free, -eye]), sp.hstack([-program.a_free, -eye])]).tocsr()
    cost = np.r_[np.zeros(program.n_free), np.ones(program.n_arcs)]
    bounds = [(None, None)] * program.n_free + [(0, None)] * program.n_arcs
    total, free = 0.0, np.zeros((program.n_free, d))
    for j in range(d):
        a = program.a_dir @ directions[:, j]
        res = linprog(cost, A_ub=a_ub, b_ub=np.r_[-a, a], bounds=bounds, method="highs")
        if res.status != 0:
            return float("inf"), free
        free[:, j] = res.x[: program.n_free]
        total += float(res.fun)
    return total, free


def polish(
    m: np.ndarray,
    node_weights: np.ndarray,
    parent_index: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    *,
    n_sweeps: int = 2,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Move a refined basis exactly onto the sparsest nearby head directions.

    Gradient steps on the smoothed penalty stop *near* a vertex of the l1 objective, not on it. Each head direction
    of ``m`` in turn (``n_sweeps`` times) is replaced by the sparsest direction of the form ``n_j`` plus a
    combination of the others (the direction program normalised by the dual row of ``n_j``), the latents are
    rescaled to unit variance, and the heads of unobserved nodes are
    set to their exact optimum. Returns ``(M, node_weights_in_new_basis, penalty, penalty_of_m)``, both penalties
    exact (with optimal unobserved heads), or ``None`` for trees with more than :data:`MAX_ARCS` arcs.
    """
    parent_index = np.asarray(parent_index)
    if int((parent_index >= 0).sum()) > MAX_ARCS:
        return None
    observed = np.asarray(observed, dtype=bool)
    program = _DirectionProgram(node_weights, parent_index, observed)
    before, _ = _free_heads(program, np.linalg.inv(m).T)
    dirs = np.linalg.inv(m).T.copy()  # heads in the new basis are W @ dirs
    for _ in range(n_sweeps):
        for j in range(dirs.shape[1]):
            # normalise by the dual row: r^T n_k = 0 for the other directions, so the program can only replace n_j
            # by n_j plus a combination of the others (a coordinate step), never by another direction
            r = np.linalg.inv(dirs)[j]
            out = program.solve(r)
            if out is not None and np.isfinite(out[0]).all():
                dirs[:, j] = out[0]
    if np.linalg.cond(dirs) > 1e8:
        return None
    new_m = np.linalg.inv(dirs).T
    new_m = new_m / np.sqrt(np.einsum("ij,ik,kj->j", new_m, corr, new_m))  # unit-variance latents
    dirs = np.linalg.inv(new_m).T
    value, free = _free_heads(program, dirs)
    heads = np.asarray(node_weights, dtype=np.float64) @ dirs
    heads[~observed] = free
    return new_m, heads, value, before
