"""Minimise the TBR penalty along the symmetry of the prediction term.

The prediction term of TBR is unchanged when the latents are mapped by any invertible matrix ``M``
(``Z -> Z M``, heads ``W -> W M^-T``) and when the heads of unobserved nodes change; the sparsity penalty is
not. Gradient steps move slowly along these flat directions, so a fit can predict well while its latents are
still mixed. :func:`refine_basis` solves the small problem

    min_{M, V_unobserved}  sum over arcs a=(p, c) of  rho(V_c - V_p),   V_observed = W_observed M^-T,

under the constraint that the new latents keep unit variance (``diag(M^T C M) = 1`` with ``C`` the latents'
correlation), from several starts (the identity among them), and returns the best ``M`` and node weights.
``rho`` is a smoothed l1 or log penalty. The problem has ``d * d`` plus ``n_unobserved * d`` unknowns, so it
takes milliseconds to seconds even for large trees.
"""

from __future__ import annotations

import numpy as np
import torch

from sctbr.model._basis_lp import lp_starts, polish


@torch.enable_grad()
def refine_basis(
    node_weights: np.ndarray,
    parent_index: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    *,
    penalty: str = "l1",
    log_eps: float = 0.1,
    n_starts: int = 32,
    n_steps: int = 500,
    lr: float = 0.05,
    random_state: int = 0,
    lp_start: bool = False,
    n_polish: int = 8,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Find the latent basis and unobserved node weights with the sparsest arc changes.

    Parameters
    ----------
    node_weights
        Current heads of all nodes (nodes x d), in the current latent basis; with several targets (heads sharing
        the latents), an array ``(targets, nodes, d)``: one map ``M`` serves all of them and their penalties add.
    parent_index
        Index of each node's parent (-1 for the root); nodes in breadth-first order.
    observed
        Boolean mask of nodes whose head is fixed by data (environments with cells).
    corr
        Correlation matrix (d x d) of the current latents on training cells.
    penalty, log_eps
        ``"l1"`` or ``"log"`` and the latter's epsilon (relative to the mean absolute head weight).
    n_starts
        Number of starts, optimised together; the first is the identity (the current basis).
    n_steps, lr
        Adam steps and learning rate; the penalty's smoothing is annealed to (almost) zero.
    random_state
        Seed of the random starts.
    lp_start
        Replace half of the random starts by sets of the sparsest head directions, found exactly by linear programs
        (:func:`~sctbr.model._basis_lp.lp_starts`), and round the ``n_polish`` best results exactly onto a vertex of
        the l1 objective (:func:`~sctbr.model._basis_lp.polish`). This solves the l1 problem much better: with the
        true heads (a perfect encoder, no noise) it finds the truth where plain starts stop short (see
        ``benchmarks/l1_oracle.py``). With heads fitted on a few hundred cells per environment, though, the exact
        l1 optimum sat further from the truth than the plain refinement's answer, so fits use ``False``
        (:doc:`/training`, "Small data").
    n_polish
        With ``lp_start``: how many of the best results are polished.

    Returns
    -------
    ``(M, new_node_weights, best_penalty, input_penalty)``: the map of the latents (``Z_new = Z M``), heads in
    the new basis (same shape as ``node_weights``), the penalty reached, and the exact penalty of the input. The
    input is returned unchanged when no start improves on it.

    Examples
    --------
    Heads of ``root -> A, B`` and ``A -> A1`` that change in one latent per arc, seen in a mixed basis of the
    latents (``Z_mixed = Z @ mix``): refinement finds a basis with a much smaller penalty.

    >>> import numpy as np
    >>> from sctbr.model import refine_basis
    >>> heads = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 1.5]])  # root, A, B, A1
    >>> mix = np.array([[1.0, 0.6, 0.2], [0.3, 1.0, 0.4], [0.1, 0.5, 1.0]])
    >>> cov = mix.T @ mix
    >>> corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    >>> parents, observed = np.array([-1, 0, 0, 1]), np.array([False, True, True, True])
    >>> m, new_heads, best, before = refine_basis(heads @ np.linalg.inv(mix).T, parents, observed, corr)
    >>> bool(best < 0.5 * before)
    True
    """
    node_weights = np.asarray(node_weights)
    if node_weights.ndim == 3:
        # Several heads on the same latents: W_t -> W_t M^-T for every target t, so stacking the targets' trees
        # as disjoint copies (rows) turns the problem into the single-head one on a forest.
        n_targets, n_nodes, _ = node_weights.shape
        offsets = np.repeat(np.arange(n_targets) * n_nodes, n_nodes)
        parents = np.tile(np.asarray(parent_index), n_targets)
        parents = np.where(parents >= 0, parents + offsets, -1)
        m, v, best, start = refine_basis(
            node_weights.reshape(n_targets * n_nodes, -1),
            parents,
            np.tile(np.asarray(observed, dtype=bool), n_targets),
            corr,
            penalty=penalty,
            log_eps=log_eps,
            n_starts=n_starts,
            n_steps=n_steps,
            lr=lr,
            random_state=random_state,
            lp_start=lp_start,
            n_polish=n_polish,
        )
        return m, v.reshape(node_weights.shape), best, start
    m, v, vals, input_value = optimise_starts(
        node_weights,
        parent_index,
        observed,
        corr,
        penalty=penalty,
        log_eps=log_eps,
        n_starts=n_starts,
        n_steps=n_steps,
        lr=lr,
        random_state=random_state,
        lp_start=lp_start,
    )
    d = node_weights.shape[1]
    best = int(torch.argmin(vals))
    if input_value <= float(vals[best]):
        return np.eye(d), node_weights.astype(np.float64).copy(), input_value, input_value
    m_best, v_best, best_value = m[best].numpy(), v[best].numpy(), float(vals[best])
    if lp_start and penalty == "l1":
        # gradient steps stop near a vertex of the l1 objective: round the best few onto one exactly
        for i in torch.argsort(vals)[:n_polish].tolist():
            if not np.isfinite(float(vals[i])):
                break
            exact = polish(m[i].numpy(), node_weights, np.asarray(parent_index), np.asarray(observed, dtype=bool), corr)
            if exact is not None and exact[2] < best_value * (1 - 1e-9):
                m_best, v_best, best_value = exact[0], exact[1], exact[2]
    return m_best, v_best, best_value, input_value


@torch.enable_grad()
def optimise_starts(
    node_weights: np.ndarray,
    parent_index: np.ndarray,
    observed: np.ndarray,
    corr: np.ndarray,
    *,
    penalty: str = "l1",
    log_eps: float = 0.1,
    n_starts: int = 32,
    n_steps: int = 500,
    lr: float = 0.05,
    random_state: int = 0,
    lp_start: bool = False,
    starts: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Every start of :func:`refine_basis` (one target), optimised together: ``(M, heads, penalty, input_penalty)``.

    ``M`` (starts x d x d) maps the latents of each start's result, ``heads`` (starts x nodes x d) are its heads,
    ``penalty`` (starts) the exact penalty reached (``inf`` where the result is not finite), ``input_penalty`` that of
    the input. :func:`refine_basis` returns the best of them; benchmarks compare other choices among them.
    ``starts`` (starts x d x d), when given, are the starting maps instead of the identity and ``n_starts - 1``
    random ones (``n_starts``, ``random_state`` and ``lp_start`` are then unused).
    """
    g = torch.Generator().manual_seed(int(random_state))
    d = node_weights.shape[1]
    if starts is not None:
        n_starts, lp_start = len(starts), False
    w = torch.as_tensor(node_weights, dtype=torch.float64)
    c = torch.as_tensor(corr, dtype=torch.float64)
    child = torch.as_tensor(np.flatnonzero(parent_index >= 0))
    par = torch.as_tensor(parent_index[parent_index >= 0])
    obs_idx = torch.as_tensor(np.flatnonzero(observed))
    free_idx = torch.as_tensor(np.flatnonzero(~observed))
    scale = float(np.abs(node_weights[observed]).mean()) or 1.0
    eye = torch.eye(d, dtype=torch.float64)
    a0 = eye.expand(n_starts, d, d).clone()
    if starts is None:
        a0[1:] += torch.randn(n_starts - 1, d, d, generator=g, dtype=torch.float64)
    else:
        a0 = torch.as_tensor(np.asarray(starts), dtype=torch.float64).clone()
    if lp_start and n_starts > 1:
        # half of the random starts are replaced by sets of sparse head directions from linear programs
        lp_sets = lp_starts(node_weights, parent_index, observed, corr, n_starts // 2, random_state=random_state)
        for i, start in enumerate(lp_sets[: n_starts - 1]):
            a0[1 + i] = torch.as_tensor(start, dtype=torch.float64)
    a = a0.requires_grad_(True)
    v_free = torch.as_tensor(_init_unobserved(node_weights, parent_index, observed))
    v_free = v_free.expand(n_starts, -1, -1).clone()
    # the random starts begin their unobserved nodes from the transformed initial guess
    with torch.no_grad():
        m0 = _normalise(a0, c)
        v_free = torch.linalg.solve(m0, v_free.transpose(1, 2)).transpose(1, 2)
    v_free.requires_grad_(True)

    def assemble(a_: torch.Tensor, v_free_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = _normalise(a_, c)
        w_obs = torch.linalg.solve(m, w[obs_idx].T.expand(n_starts, -1, -1)).transpose(1, 2)  # W M^-T
        v = torch.zeros(n_starts, w.shape[0], d, dtype=torch.float64)
        v = v.index_copy(1, obs_idx, w_obs)
        if len(free_idx):
            v = v.index_copy(1, free_idx, v_free_)
        return m, v

    def value(v: torch.Tensor, smooth: float) -> torch.Tensor:
        diff = v[:, child] - v[:, par]
        x = torch.sqrt(diff * diff + smooth * smooth) - smooth
        if penalty == "log":
            eps = log_eps * scale
            x = eps * torch.log1p(x / eps)
        return x.sum(dim=(1, 2))

    opt = torch.optim.Adam([a, v_free], lr=lr)
    for step in range(n_steps):
        smooth = scale * max(1e-3, 0.1 * (1 - step / n_steps))
        _, v = assemble(a, v_free)
        loss = value(v, smooth).sum() / scale
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m, v = assemble(a, v_free)
        vals = value(v, 0.0)
        vals[~torch.isfinite(vals)] = float("inf")
        vals[~torch.isfinite(v).all(dim=2).all(dim=1)] = float("inf")
        # the input itself (identity map, given unobserved heads) is a candidate too: never return worse
        input_value = float(value(w.unsqueeze(0), 0.0)[0])
    return m, v, vals, input_value


def _normalise(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Scale the columns of ``a`` so that the new latents ``Z a`` have unit variance."""
    norms = torch.sqrt(torch.einsum("sij,ik,skj->sj", a, c, a).clamp_min(1e-12))
    return a / norms.unsqueeze(1)


def _init_unobserved(v: np.ndarray, parent_index: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Mean head of each unobserved node's observed descendants (0 when it has none)."""
    n, d = v.shape
    total = np.where(observed[:, None], v, 0.0)
    count = observed.astype(float).copy()
    # nodes are in BFS order: children after parents, so a reverse sweep accumulates subtrees
    for i in range(n - 1, 0, -1):
        p = parent_index[i]
        if p >= 0:
            total[p] += total[i]
            count[p] += count[i]
    free = ~observed
    return total[free] / np.maximum(count[free], 1.0)[:, None]
