"""A search of the log penalty after the l1 basis refinement: ``TBR.train(final_objective="log")``.

On leaves-only trees the l1 optimum of the heads' changes can sit off the true basis even with a perfect encoder
(``benchmarks/head_errors.py --l1``); a concave, l0-like penalty ``sum eps log(1 + |change| / eps)`` prefers the
truth more often (:doc:`/cells_needed`). It has many local optima, so the search here starts from many bases and
scores every result exactly:

* :func:`support_directions`: candidate head directions from *supports*. A latent whose head does not change on the
  path between two close observed environments has equal heads there, so its direction is orthogonal to their head
  difference: the null vector of ``d - 1`` such differences is a candidate, scored by tree parsimony (the fewest
  arcs with a change, :func:`parsimony`), and :func:`best_sets` picks well-conditioned sets of ``d`` of them;
* :func:`log_search`: Adam on the smoothed penalty from the identity, random maps and those sets
  (:func:`~sctbr.model._basis.optimise_starts`), every result scored by :func:`exact_log_value`;
* :func:`mm_polish`: the exact penalty descended from a basis, one head direction at a time (majorise-minimise:
  weighted l1 programs of :class:`~sctbr.model._basis_lp._DirectionProgram`);
* :func:`log_refine`: the search's best basis replaces the l1 basis only when its polished value is at least
  ``margin`` below the polished l1 basis's (measured: a switch on smaller gains as often hurts as helps).

``benchmarks/head_errors.py``, ``l0_search.py`` and ``small_data.py`` measure these pieces; they import them from here.
"""

from __future__ import annotations

import numpy as np
import torch

from sctbr.model._basis import _normalise as _normalise_maps
from sctbr.model._basis import optimise_starts
from sctbr.model._basis_lp import _DirectionProgram, _free_heads

#: Scale of the log penalty, relative to the mean absolute observed head.
LOG_EPS = 0.03
#: Relative drop of the exact log value that the search's basis needs to replace the l1 basis.
LOG_MARGIN = 0.05
#: Most environments ``final_objective="log"`` takes: its cost grows with the tree (about 10 s at 16 and 20 s at 64
#: leaves on one CPU thread), and large trees identify with l1 alone.
LOG_MAX_ENVIRONMENTS = 64


def check_log_environments(n_environments: int) -> None:
    """Raise before training when a fit with ``final_objective="log"`` has more than ``LOG_MAX_ENVIRONMENTS``."""
    if n_environments > LOG_MAX_ENVIRONMENTS:
        raise ValueError(
            f"`final_objective='log'` takes at most {LOG_MAX_ENVIRONMENTS} environments, this model has "
            f"{n_environments}: its search grows with the tree. Use final_objective='l1' (the default)."
        )


def exact_log_value(heads: np.ndarray, parent: np.ndarray, observed: np.ndarray, eps: float) -> float:
    """``sum eps log(1 + |change| / eps)`` over arcs and latents with the unobserved heads at their optimum.

    The penalty is concave in each unobserved head between the observed values, so an optimum puts every unobserved
    head at one of the observed values of its latent: a dynamic programme over those values is exact. ``heads``
    (nodes x latents) in breadth-first order (parents first); ``parent`` -1 at the root.
    """
    n, d = heads.shape
    obs = np.flatnonzero(observed)
    children: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        if parent[i] >= 0:
            children[parent[i]].append(i)
    total = 0.0
    for j in range(d):
        values = heads[obs, j]
        pair = eps * np.log1p(np.abs(values[:, None] - values[None, :]) / eps)
        cost = np.zeros((n, len(values)))
        for i in range(n - 1, -1, -1):  # children after parents
            c = np.zeros(len(values))
            for ch in children[i]:
                c += (cost[ch][None, :] + pair).min(axis=1)
            if observed[i]:
                k = int(np.searchsorted(obs, i))
                c = np.where(np.arange(len(values)) == k, c, np.inf)
            cost[i] = c
        total += float(cost[0].min())
    return total


def parsimony(values: np.ndarray, parent: np.ndarray, obs_idx: np.ndarray, tol) -> np.ndarray:
    """Fewest arcs whose head changes, per candidate: Sankoff's algorithm with unit costs.

    ``values`` (candidates x observed nodes) are fixed at the observed nodes ``obs_idx``, the other nodes free;
    values within ``tol`` (per candidate) of each other, chained, are one state. All candidates at once: states are
    padded to the largest count, which changes no minimum (with unit costs an optimal labelling uses only states
    that some observed node has).
    """
    values = np.atleast_2d(values)
    n_cand, n_obs = values.shape
    tol = np.broadcast_to(np.asarray(tol, float), (n_cand,))
    chunk = max(1, 2**22 // (len(parent) * n_obs))  # cost below: at most 32 MB at a time
    if n_cand == 0:
        return np.zeros(0, dtype=int)
    if n_cand > chunk:
        return np.concatenate(
            [parsimony(values[i : i + chunk], parent, obs_idx, tol[i : i + chunk]) for i in range(0, n_cand, chunk)]
        )
    order = np.argsort(values, axis=1)
    gaps = np.diff(np.take_along_axis(values, order, axis=1), axis=1) > tol[:, None]
    states = np.empty((n_cand, n_obs), dtype=int)
    np.put_along_axis(states, order, np.concatenate([np.zeros((n_cand, 1), int), np.cumsum(gaps, axis=1)], 1), 1)
    n_states = int(states.max()) + 1
    cost = np.zeros((len(parent), n_cand, n_states))
    own = np.full((n_cand, n_states), np.inf)
    rows = np.arange(n_cand)
    for k, node in enumerate(np.asarray(obs_idx)):
        fixed = own.copy()
        fixed[rows, states[:, k]] = 0.0
        cost[node] += fixed
    for node in range(len(parent) - 1, 0, -1):  # children after parents
        ch = cost[node]
        cost[parent[node]] += np.minimum(ch, ch.min(axis=1, keepdims=True) + 1.0)
    return cost[0].min(axis=1).astype(int)


def close_pairs(parent: np.ndarray, obs_idx: np.ndarray, max_dist: int) -> np.ndarray:
    """Pairs of observed nodes at most ``max_dist`` arcs apart, shape (pairs, 2)."""
    depth = np.zeros(len(parent), dtype=int)
    for i, p in enumerate(parent):
        depth[i] = 0 if p < 0 else depth[p] + 1

    def path(i):
        out = [i]
        while parent[out[-1]] >= 0:
            out.append(parent[out[-1]])
        return out

    paths = {int(i): path(int(i)) for i in obs_idx}
    pairs = []
    for a in range(len(obs_idx)):
        for b in range(a + 1, len(obs_idx)):
            ia, ib = int(obs_idx[a]), int(obs_idx[b])
            pb = set(paths[ib])
            lca = next(x for x in paths[ia] if x in pb)
            if depth[ia] + depth[ib] - 2 * depth[lca] <= max_dist:
                pairs.append((ia, ib))
    return np.array(pairs)


def support_directions(
    heads: np.ndarray,
    parent: np.ndarray,
    observed: np.ndarray,
    *,
    tol_rel: float,
    n_samples: int = 12000,
    max_dist: int = 6,
    n_keep: int = 400,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Unique head directions, fewest changes first: null vectors of ``d - 1`` differences of close observed heads.

    Returns ``(directions, counts)``: unit directions (rows) and their :func:`parsimony` counts, with ``tol_rel``
    times the spread of each direction's values as the tolerance.
    """
    rng = np.random.default_rng(random_state)
    d = heads.shape[1]
    obs_idx = np.flatnonzero(observed)
    pairs = close_pairs(parent, obs_idx, max_dist)
    if len(pairs) < d - 1:  # too few close pairs of environments for a null vector
        return np.zeros((0, d)), np.zeros(0, dtype=int)
    diffs = heads[pairs[:, 0]] - heads[pairs[:, 1]]
    sel = np.array([rng.choice(len(pairs), size=d - 1, replace=False) for _ in range(n_samples)])
    _, _, vt = np.linalg.svd(diffs[sel])
    cand = vt[:, -1, :]
    vals = cand @ heads[obs_idx].T
    scale = vals.std(axis=1)
    keep = scale > 1e-12
    cand, vals, scale = cand[keep], vals[keep], scale[keep]
    counts = parsimony(vals, parent, obs_idx, tol_rel * scale)
    order = np.argsort(counts, kind="stable")
    uniq, ucount = [], []
    for i in order:
        c = cand[i] / np.linalg.norm(cand[i])
        if all(abs(c @ u) < 0.999 for u in uniq):
            uniq.append(c)
            ucount.append(int(counts[i]))
        if len(uniq) >= n_keep:
            break
    return np.array(uniq), np.array(ucount)


def best_sets(
    dirs: np.ndarray,
    counts: np.ndarray,
    d: int,
    *,
    min_resid: float = 0.05,
    max_sets: int = 64,
    max_nodes: int = 200000,
) -> tuple[list[np.ndarray], float]:
    """Sets of ``d`` well-conditioned directions with the smallest total count (all ties, up to ``max_sets``).

    A pruned depth-first search over ``dirs`` sorted by count; each direction must leave at least ``min_resid`` of
    its norm outside the span of those chosen before it. Returns ``(sets, total)``, each set a ``(d, d)`` matrix of
    directions as columns.
    """
    best = [np.inf]
    found: list[list[int]] = []
    nodes = [0]

    def dfs(start, chosen, q, total):
        nodes[0] += 1
        if nodes[0] > max_nodes:
            return
        k = len(chosen)
        if k == d:
            if total < best[0]:
                best[0] = total
                found.clear()
            if total == best[0] and len(found) < max_sets:
                found.append(list(chosen))
            return
        for i in range(start, len(dirs)):
            if total + counts[i] * (d - k) > best[0]:  # lower bound: this and the next d - k - 1 counts
                break
            c = dirs[i]
            if q is not None:
                r = c - q @ (q.T @ c)
                if np.linalg.norm(r) < min_resid:
                    continue
                q2 = np.column_stack([q, r / np.linalg.norm(r)])
            else:
                q2 = c[:, None]
            chosen.append(i)
            dfs(i + 1, chosen, q2, total + counts[i])
            chosen.pop()

    dfs(0, [], None, 0)
    return [dirs[s].T for s in found], best[0]


def normalise(m: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """One map ``m`` with its columns scaled so that the latents ``Z m`` have unit variance (``corr``: of ``Z``)."""
    maps = torch.as_tensor(m, dtype=torch.float64)[None]
    return _normalise_maps(maps, torch.as_tensor(corr, dtype=torch.float64))[0].numpy()


def heads_in(m: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Heads of the latents ``Z m``: ``W m^-T``."""
    return np.linalg.solve(m, heads.T).T


def log_search(
    heads: np.ndarray,
    parent: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    eps_rel: float,
    seed: int,
    top: int = 1,
    n_starts: int = 96,
):
    """The basis with the smallest exact log penalty among ``n_starts`` refined starts: ``(M, value)``.

    Starts: the identity, 31 random maps, up to 32 :func:`best_sets` of :func:`support_directions` and random
    well-conditioned sets of the 40 best directions; all run together through Adam on the smoothed penalty
    (:func:`~sctbr.model._basis.optimise_starts`, 800 steps), then scored by :func:`exact_log_value` with
    ``eps = eps_rel`` times the mean absolute observed head. With ``top`` > 1 the ``top`` best as
    ``(maps, values)``.
    """
    rng = np.random.default_rng(seed)
    d = heads.shape[1]
    eps = eps_rel * float(np.abs(heads[observed]).mean())
    starts = [np.eye(d)] + [np.eye(d) + rng.normal(size=(d, d)) for _ in range(31)]
    dirs, counts = support_directions(heads, parent, observed, tol_rel=0.05, random_state=seed, n_samples=4000)
    starts += [np.linalg.inv(n).T for n in best_sets(dirs, counts, d, max_sets=32)[0]]
    pool = dirs[:40]
    for _ in range(5000 if len(pool) >= d else 0):  # no candidates when the observed heads do not vary
        if len(starts) >= n_starts:
            break
        n = pool[rng.choice(len(pool), d, replace=False)].T
        if np.linalg.cond(n) < 50:
            starts.append(np.linalg.inv(n).T)
    m, _, _, _ = optimise_starts(
        heads, parent, observed, corr, penalty="log", log_eps=eps_rel, n_steps=800, lr=0.05, starts=np.stack(starts)
    )
    maps = m.numpy()
    values = np.array(
        [
            exact_log_value(heads_in(mm, heads), parent, observed, eps) if np.isfinite(mm).all() else np.inf
            for mm in maps
        ]
    )
    if top > 1:
        order = np.argsort(values)[:top]
        return maps[order], values[order]
    best = int(np.argmin(values))
    return maps[best], float(values[best])


def mm_polish(
    m: np.ndarray,
    heads: np.ndarray,
    parent: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    eps: float,
    n_sweeps: int = 6,
    *,
    from_current: bool = True,
) -> tuple[np.ndarray, float]:
    """Descend the exact log penalty from the basis ``m``: majorise-minimise steps, one head direction at a time.

    Each step replaces one head direction ``n_j`` by the solution of a *weighted* l1 program (normalised by the
    dual row of ``n_j`` as :func:`~sctbr.model._basis_lp.polish` does; weights ``1 / (|change| + eps)`` of the
    changes at unit variance), reweighted three times, and keeps it when the exact value (unit-variance latents)
    drops. The first weights are those of the current direction (its unobserved heads at their l1 optimum), so the
    step stays near it; ``from_current=False`` starts from the unweighted l1 program instead, which jumps to the l1
    optimum's direction (measured: on leaves-only trees that pulls near-true bases back to mixtures; the rule of
    the benchmarks' rows before 2026-12-02). Returns ``(M, value)``.
    """
    prog = _DirectionProgram(heads, parent, observed)
    m = normalise(m, corr)
    best = exact_log_value(heads_in(m, heads), parent, observed, eps)
    dirs = np.linalg.inv(m).T

    def weights_of(trial, j, n, changes):
        unit = np.linalg.inv(normalise(np.linalg.inv(trial).T, corr)).T  # the direction at unit variance
        return 1.0 / (np.abs(changes) * np.linalg.norm(unit[:, j]) / np.linalg.norm(n) + eps)

    for _ in range(n_sweeps):
        improved = False
        for j in range(dirs.shape[1]):
            r = np.linalg.inv(dirs)[j]
            weights, n = None, None
            if from_current:
                weights = weights_of(dirs, j, dirs[:, j], _changes(prog, dirs[:, j]))
            for _ in range(3):
                out = prog.solve_weighted(r, weights)
                if out is None:
                    break
                n, changes = out
                trial = dirs.copy()
                trial[:, j] = n
                weights = weights_of(trial, j, n, changes)
            if n is None:
                continue
            trial = dirs.copy()
            trial[:, j] = n
            if np.linalg.cond(trial) > 1e6:
                continue
            m_new = normalise(np.linalg.inv(trial).T, corr)
            value = exact_log_value(heads_in(m_new, heads), parent, observed, eps)
            if value < best - 1e-9:
                best, m, dirs, improved = value, m_new, np.linalg.inv(m_new).T, True
        if not improved:
            break
    return m, best


def _changes(prog: _DirectionProgram, n: np.ndarray) -> np.ndarray:
    """Arc changes of the head direction ``n``, the unobserved heads at their l1 optimum."""
    if prog.n_free == 0:
        return prog.a_dir @ n
    _, free = _free_heads(prog, n[:, None])
    return prog.a_dir @ n + prog.a_free @ free[:, 0]


def log_refine(
    heads: np.ndarray,
    parent: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    m_l1: np.ndarray,
    *,
    eps_rel: float = LOG_EPS,
    margin: float = LOG_MARGIN,
    random_state: int = 0,
) -> tuple[np.ndarray, float]:
    """The basis after the l1 refinement's ``m_l1``: the log search's, when clearly better, else ``m_l1``.

    The 16 best results of :func:`log_search` and ``m_l1`` are each polished by :func:`mm_polish`; the best
    polished search result replaces ``m_l1`` when its exact log value is below ``(1 - margin)`` times the polished
    ``m_l1``'s. Returns ``(M, ratio)``: the map and that ratio of values (< 1: the search found a sparser basis).
    ``heads`` (nodes x latents) of one target.
    """
    parent, observed = np.asarray(parent), np.asarray(observed, dtype=bool)
    eps = eps_rel * float(np.abs(heads[observed]).mean())
    if not eps > 0 or observed.sum() < 2 or heads.shape[1] < 2:  # one latent, or no heads to compare
        return m_l1, 1.0
    maps, _ = log_search(heads, parent, observed, corr, eps_rel, random_state, top=16)
    polished = [mm_polish(m, heads, parent, observed, corr, eps) for m in [*maps, m_l1]]
    found = int(np.argmin([v for _, v in polished[:-1]]))
    if polished[-1][1] <= 1e-12 * eps:  # the l1 basis has no changes at all (e.g. k = 0): nothing sparser exists
        return m_l1, 1.0
    ratio = float(polished[found][1] / polished[-1][1])
    return (polished[found][0] if ratio < 1 - margin else m_l1), ratio
