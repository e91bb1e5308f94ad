"""Which latent changed on which arc: the support of Delta re-estimated with the latents fixed, with confidence.

After training, the latents are fixed and the heads are a linear model in ``(bias, w0, Delta)``
(:mod:`sctbr._heads_lasso`). :func:`estimate_changes` fits that model exactly (default ``method="adaptive"``):

1. a lasso path over ``lam`` on the training cells (every entry of Delta penalised, the root not); the ``lam``
   with the smallest error on the validation cells gives a first estimate;
2. an *adaptive* lasso (Zou 2006): entry ``(a, j)`` penalised by ``1 / |first estimate|`` (entries the first
   estimate zeroed stay zero), its own path, ``lam`` again chosen on the validation cells;
3. the same adaptive fit (same weights and ``lam``) on ``n_bootstrap`` bootstrap samples of the training cells:
   the *selection frequency* of every entry;
4. a *test* on the unpenalised least-squares fit of the training cells (:func:`_tested`): an entry whose change
   the observed environments identify on its own, and whose estimate exceeds ``z * se`` with ``z`` the Bonferroni
   bound for ``test_alpha`` (1e-4) over all entries. The residual variance in ``se`` is that of the *validation*
   cells under this fit, which charges the encoder's fit to its own training cells;
5. **intervals**: the least-squares estimate of step 4 and its standard error (``estimate``, ``se``) for every entry
   identified on its own; ``estimate +- z se`` is a confidence interval with the latents taken as fixed (nominal 90%
   covered 89% / 94% of the entries on the balanced depth-4 simulations with fitted latents and 300 cells per
   environment, 81% with 1 000, where the latents' remaining mixture outweighs the noise; ``benchmarks/changes.py``).
   Entries the observed environments identify only jointly (every entry of a tree with cells at its leaves only) get
   none;
6. **the rule**: an entry is *called* when the fit on all training cells keeps it (non-zero) and its frequency
   is at least ``min_frequency`` (0.9), or when the test calls it. Nodes without cells have free heads, so other
   Delta, as sparse as the called one, can give the same heads at the observed environments; per latent an exact
   parsimony count (:func:`sparsest_status`) finds, for every arc, whether the sparsest of them change it. A called
   entry is *changed* when every sparsest Delta changes it; an entry that some but not all of them change (or a
   called one that none does) is *unresolved*: the data place a change there or on a neighbouring arc. On a tree
   where every node but the root has cells this is the root's two arcs (:func:`unresolved_pairs`); with cells at
   the leaves only, also, for example, two changes of one latent on arcs that meet at an inner node.

The lasso shrinks small changes to zero where the latents are well identified and the cells many; the test finds
them (``benchmarks/changes.py``: F1 0.899 -> 0.929 with 1 000 cells per environment), and adds nothing where the
encoder's error dominates (none of 25 fits at 300 cells; nothing at k = 0).

The method and the rule were picked by measurement on simulations (``docs/using_latents.md``, "Which latent
changed on which arc").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sctbr import _heads_lasso as hl
from sctbr._tree import EnvironmentTree

#: Default frequency an entry needs over the bootstrap to count as changed.
MIN_FREQUENCY = 0.9
#: Default number of bootstrap samples.
N_BOOTSTRAP = 20
#: Default family-wise level of the least-squares test (Bonferroni over all entries of Delta).
TEST_ALPHA = 1e-4
METHODS = ("relaxed", "relaxed_min", "lasso", "lasso_1se", "adaptive")


@dataclass
class Changes:
    """The support estimate of one target: arcs x latents frames and the chosen penalty."""

    delta: pd.DataFrame
    frequency: pd.DataFrame
    tested: pd.DataFrame
    changed: pd.DataFrame
    unresolved: pd.DataFrame
    estimate: pd.DataFrame
    se: pd.DataFrame
    lam: float
    method: str
    min_frequency: float
    n_bootstrap: int
    test_alpha: float
    extra: dict = field(default_factory=dict)

    def interval(self, level: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(lower, upper)``: the confidence interval ``estimate +- z se`` at ``level`` (NaN where ``se`` is)."""
        from scipy.stats import norm

        if not 0 < level < 1:
            raise ValueError(f"`level` must lie in (0, 1), got {level!r}.")
        half = float(norm.isf((1 - level) / 2)) * self.se
        return self.estimate - half, self.estimate + half

    def tidy(self, level: float = 0.9) -> pd.DataFrame:
        """One row per arc x latent: ``arc``, ``latent``, ``delta``, ``frequency``, ``tested``, ``changed``,
        ``unresolved``, ``estimate``, ``se``, ``ci_low``, ``ci_high`` (the interval at ``level``)."""
        out = self.delta.stack().rename("delta").to_frame()
        out["frequency"] = self.frequency.stack()
        out["tested"] = self.tested.stack().astype(bool)
        out["changed"] = self.changed.stack().astype(bool)
        out["unresolved"] = self.unresolved.stack().astype(bool)
        lower, upper = self.interval(level)
        for name, frame in (("estimate", self.estimate), ("se", self.se), ("ci_low", lower), ("ci_high", upper)):
            out[name] = np.asarray(frame, dtype=float).ravel()  # row-major, as stack() orders arc x latent
        out.index = out.index.set_names(["arc", "latent"])
        return out.reset_index()


def unresolved_pairs(tree: EnvironmentTree, observed) -> list[tuple[int, int, int]]:
    """Pairs of arcs whose changes the observed heads cannot tell apart, as ``(arc_a, arc_b, sign)``.

    A node without cells and with exactly two incident arcs (the root with two children; a node with one child)
    has a free head: a change ``c`` on one of its arcs fits the data as well as ``sign * c`` on the other, at the
    same l1 cost. Only their sum (``sign = +1``: parent arc and child arc) or difference (``sign = -1``: the root's
    two arcs) is identified.
    """
    observed = set(map(str, observed))
    pairs = []
    for node in tree.nodes:
        if node in observed:
            continue
        children = list(tree.children(node))
        parent = tree.parent(node)
        if parent is None and len(children) == 2:
            pairs.append((tree.arc_index(children[0]), tree.arc_index(children[1]), -1))
        elif parent is not None and len(children) == 1:
            pairs.append((tree.arc_index(node), tree.arc_index(children[0]), 1))
    return pairs


def sparsest_status(parent_index, observed, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which arcs change in the sparsest Δ that give the same heads as ``delta`` at the observed nodes.

    Nodes without cells have free heads, so many Δ fit the observed heads equally well: the data identify only
    the sparsest (fewest non-zero entries), and on a tree with cells at its leaves several can tie. Per latent
    (column of ``delta``, arcs in the tree's arc order: the arc into node ``i`` is row ``i - 1``), an exact
    parsimony count over the tree (Sankoff's algorithm with unit costs; the states are the distinct heads of the
    observed nodes, which every sparsest solution uses) gives, for every arc, whether *some* sparsest solution
    changes it and whether some leaves it unchanged. Returns ``(some_change, some_unchanged)``, boolean arrays
    shaped like ``delta``: an arc changes in every sparsest solution when ``some_change & ~some_unchanged``.

    Examples
    --------
    A root without cells and two observed children: a change on either arc explains the data.

    >>> some_change, some_unchanged = sparsest_status([-1, 0, 0], [False, True, True], np.array([[0.5], [0.0]]))
    >>> some_change.ravel().tolist(), some_unchanged.ravel().tolist()
    ([True, True], [True, True])
    """
    parent = np.asarray(parent_index, dtype=np.int64)
    observed = np.asarray(observed, dtype=bool)
    delta = np.asarray(delta, dtype=np.float64).reshape(len(parent) - 1, -1)
    some_change = np.zeros(delta.shape, dtype=bool)
    some_unchanged = np.zeros(delta.shape, dtype=bool)
    big = 4 * len(parent) + 4  # larger than any count of changes
    for j in range(delta.shape[1]):
        values = np.zeros(len(parent))
        for i in range(1, len(parent)):  # breadth-first order: every parent before its children
            values[i] = values[parent[i]] + delta[i - 1, j]
        scale = float(np.abs(values[observed]).max()) if observed.any() else 0.0
        key = np.round(values / scale, 9) if scale > 0 else np.zeros_like(values)
        states, state_of = np.unique(key[observed], return_inverse=True)
        if len(states) == 0:
            some_unchanged[:, j] = True
            continue
        restrict = np.zeros((len(parent), len(states)), dtype=np.int64)
        restrict[np.flatnonzero(observed)] = big
        restrict[np.flatnonzero(observed), state_of] = 0
        down = restrict.copy()  # changes in the subtree of each node, given its state
        into = np.zeros_like(down)  # the subtree of a child plus its arc, given the parent's state
        for i in range(len(parent) - 1, 0, -1):
            into[i] = np.minimum(down[i], down[i].min() + 1)
            down[parent[i]] += into[i]
        best = down[0].min()
        up = np.zeros_like(down)  # changes outside each node's subtree, arc into it included, given its state
        for i in range(1, len(parent)):
            rest = up[parent[i]] + down[parent[i]] - into[i]  # the parent's side, given the parent's state
            up[i] = np.minimum(rest, rest.min() + 1)
            some_unchanged[i - 1, j] = (rest + down[i]).min() == best
            some_change[i - 1, j] = _min_apart(rest, down[i]) + 1 == best
    return some_change, some_unchanged


def _min_apart(a: np.ndarray, b: np.ndarray) -> int:
    """``min(a[s] + b[t])`` over ``s != t`` (a large value when there is one state)."""
    if len(a) < 2:
        return 2**40
    ia, ib = np.argsort(a)[:2], np.argsort(b)[:2]
    if ia[0] != ib[0]:
        return int(a[ia[0]] + b[ib[0]])
    return int(min(a[ia[0]] + b[ib[1]], a[ia[1]] + b[ib[0]]))


def _cell_errors(z, y, env, path, root, delta) -> np.ndarray:
    heads = np.asarray(path @ delta) + root[None, 1:]
    return (y - root[0] - np.einsum("ij,ij->i", z, heads[env])) ** 2


class _Problem:
    """The training moments, the validation cells and the lambda path of one support estimate."""

    def __init__(self, z, y, env, path, train, validation, weights=None):
        self.z, self.y, self.env, self.path = z, y, env, path
        self.train, self.validation = train, validation
        self.quad = hl.Problem(hl.moments(z[train], y[train], env[train], path, weights))

    def errors(self, theta):
        v = self.validation
        root, delta = self.quad.split(theta)
        return _cell_errors(self.z[v], self.y[v], self.env[v], self.path, root, delta)

    def reweighted(self, weights) -> _Problem:
        """The same problem with the training cells weighted by ``weights`` (a bootstrap sample)."""
        return _Problem(self.z, self.y, self.env, self.path, self.train, self.validation, weights=weights)


def support_problem(
    latents, y, nodes, tree: EnvironmentTree, split, *, standardize_latents: bool = False, variance: str = "validation"
) -> tuple[_Problem, list[str], float]:
    """The heads' linear model of one fit, with the latents fixed: ``(problem, observed environments, y's scale)``.

    ``y`` is standardised on the training cells (``scale`` is its standard deviation, to bring Delta back to target
    units); ``standardize_latents`` does the same for the latents. ``variance`` names the cells whose errors choose
    ``lam`` and give the standard errors: ``"validation"`` (the training cells when there are fewer than 10
    validation cells, in which case ``problem.validation is problem.train``) or ``"training"``.
    """
    if variance not in ("validation", "training"):
        raise ValueError(f"`variance` must be 'validation' or 'training', got {variance!r}.")
    z = np.asarray(latents, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    split = np.asarray(split).astype(str)
    nodes = np.asarray(nodes).astype(str)
    observed = sorted(set(nodes))
    train = np.flatnonzero(split == "train")
    validation = np.flatnonzero(split == "validation")
    if validation.size < 10 or variance == "training":
        validation = train
    if standardize_latents:
        z = (z - z[train].mean(axis=0)) / z[train].std(axis=0)
    std = float(y[train].std()) or 1.0
    env = pd.Index(observed).get_indexer(nodes)
    path = tree.path_matrix(observed, dtype=np.float64)
    return _Problem(z, (y - float(y[train].mean())) / std, env, path, train, validation), observed, std


def _least_squares(prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares estimates of Delta and their standard errors (arcs x latents; ``se`` NaN where not identified).

    ``(w0, Delta)`` unpenalised on the training cells (minimum norm where the tree leaves them free). An entry has a
    standard error only when its change is identified on its own: its unit vector lies in the row space of the Gram
    matrix (not, e.g., only as a sum with the other arc of an unresolved pair). ``se`` comes from the inverse Gram
    matrix and the residual variance of the *validation* cells under this fit. With a few hundred cells per
    environment the encoder fits its training cells' noise (their residual variance is 3x-18x below the validation
    cells'); their own variance would call changes where there are none.
    """
    quad = prob.quad
    root, delta = quad.split(quad.refit(np.ones((quad.n_arcs, quad.d1 - 1), dtype=bool)))
    sigma2 = float(prob.errors(np.concatenate([root, delta.ravel()])).mean())
    g_pinv = np.linalg.pinv(quad.g)
    alone = (np.abs(np.diag(g_pinv @ quad.g) - 1) < 1e-6)[quad.d1 :].reshape(delta.shape)
    se = np.sqrt(np.clip(np.diag(g_pinv), 0.0, None) * sigma2 / quad.mom.n)[quad.d1 :].reshape(delta.shape)
    return delta, np.where(alone, se, np.nan)


def _tested(delta: np.ndarray, se: np.ndarray, alpha: float) -> np.ndarray:
    """Entries of Delta a least-squares test calls changed: ``|Delta| > z * se``, ``z`` the two-sided Bonferroni
    bound for ``alpha`` over all entries (entries without a standard error are never called)."""
    from scipy.stats import norm

    bound = float(norm.isf(alpha / (2 * delta.size)))
    return np.nan_to_num(np.abs(delta) - bound * se, nan=-1.0) > 0


def _path(prob: _Problem, penalty, n_lambda: int, ratio: float, relaxed: bool):
    """Fits along a decreasing lambda grid: list of ``(lam, support, theta, mean_err, se_err)``."""
    top = prob.quad.lam_max(penalty)
    grid = top * np.logspace(0, np.log10(ratio), n_lambda) if top > 0 else np.zeros(1)
    out, start = [], None
    for lam in grid:
        theta = prob.quad.solve(lam, penalty, start=start)
        start = theta
        support = prob.quad.split(theta)[1] != 0
        if relaxed:
            theta = prob.quad.refit(support)
        err = prob.errors(theta)
        out.append((float(lam), support, theta, float(err.mean()), float(err.std(ddof=1) / np.sqrt(len(err)))))
    return out


def _choose(path, one_se: bool):
    best = int(np.argmin([p[3] for p in path]))
    if not one_se:
        return path[best]
    bar = path[best][3] + path[best][4]
    for p in path:  # decreasing lambda: the first within one SE is the sparsest
        if p[3] <= bar:
            return p
    return path[best]


def _select(
    prob: _Problem, method: str, n_lambda: int, ratio: float, lam: float | None = None, penalty=None, start=None
):
    """``(lam, support, delta, penalty, theta)`` of one method; with ``lam`` given no path is run (the bootstrap).

    ``start``: where the solver starts with ``lam`` given (the bootstrap starts from the full data's solution, which
    lies close to its own: the same optimum in fewer iterations).
    """
    relaxed = method.startswith("relaxed")
    if method == "adaptive" and penalty is None:
        init = prob.quad.split(_choose(_path(prob, None, n_lambda, ratio, False), False)[2])[1]
        penalty = np.where(init != 0, 1.0 / np.maximum(np.abs(init), 1e-12), np.inf)
    if lam is None:
        lam, support, theta = _choose(
            _path(prob, penalty, n_lambda, ratio, relaxed), method in ("relaxed", "lasso_1se")
        )[:3]
    else:
        theta = prob.quad.solve(lam, penalty, start=start)
        support = prob.quad.split(theta)[1] != 0
        if relaxed:
            theta = prob.quad.refit(support)
    return lam, support, prob.quad.split(theta)[1], penalty, theta


def estimate_changes(
    latents: np.ndarray,
    y: np.ndarray,
    nodes: np.ndarray,
    tree: EnvironmentTree,
    split: np.ndarray,
    *,
    method: str = "adaptive",
    n_bootstrap: int = N_BOOTSTRAP,
    min_frequency: float = MIN_FREQUENCY,
    test_alpha: float = TEST_ALPHA,
    n_lambda: int = 30,
    lambda_ratio: float = 1e-3,
    latent_names=None,
    random_state: int = 0,
) -> Changes:
    """Estimate which entries of Delta are non-zero, with the latents fixed (module docstring: the procedure).

    Parameters
    ----------
    latents
        Cells x latents, as the model's heads read them (standardised).
    y
        The target of every cell (one target, squared error).
    nodes
        Every cell's environment (a node of ``tree``).
    tree
        The fit's environment tree.
    split
        ``"train"``, ``"validation"`` or ``"test"`` per cell; the lasso fits the training cells and ``lam`` is
        chosen on the validation cells (the training cells when there are none).
    method
        ``"adaptive"`` (default, above), ``"lasso"`` (smallest validation error), ``"lasso_1se"`` (the sparsest
        lasso within one standard error of it), ``"relaxed"`` / ``"relaxed_min"`` (the lasso's support refitted
        without penalty, one-standard-error rule / smallest validation error).
    n_bootstrap
        Bootstrap samples of the training cells for the frequencies (0: frequency 1 on the selected entries).
    min_frequency
        Frequency an entry selected by the full fit needs to count as changed.
    test_alpha
        Family-wise level of the least-squares test (step 4 of the module docstring); ``0`` turns it off. It runs
        only with at least 10 validation cells (its variance comes from them).
    n_lambda, lambda_ratio
        The lambda grid: ``n_lambda`` values from the smallest lambda that zeros Delta down by ``lambda_ratio``.
    latent_names
        Column names (default ``latent_0``, ...).
    random_state
        Seed of the bootstrap.

    Returns
    -------
    :class:`Changes`; ``delta`` is in target units per standard deviation of a latent, like
    :meth:`sctbr.model.TBR.get_deltas`.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if not 0 <= test_alpha < 1:
        raise ValueError(f"`test_alpha` must lie in [0, 1) (0 turns the test off), got {test_alpha!r}.")
    prob, observed, std = support_problem(latents, y, nodes, tree, split)
    has_validation = prob.validation is not prob.train
    lam, support, delta, penalty, theta = _select(prob, method, n_lambda, lambda_ratio)
    tested = np.zeros_like(support)
    least_squares, se = np.full(delta.shape, np.nan), np.full(delta.shape, np.nan)
    if has_validation:
        least_squares, se = _least_squares(prob)
        least_squares = np.where(np.isnan(se), np.nan, least_squares)
        if test_alpha > 0:
            tested = _tested(least_squares, se, test_alpha)
            delta = np.where(tested & ~support, least_squares, delta)  # what the lasso zeroed: the test's estimate
    freq = support.astype(float)
    if n_bootstrap > 0:
        rng = np.random.default_rng(random_state)
        counts = np.zeros(support.shape)
        for _ in range(n_bootstrap):
            n = prob.train.size
            boot = prob.reweighted(rng.multinomial(n, np.full(n, 1.0 / n)).astype(float))
            counts += _select(boot, method, n_lambda, lambda_ratio, lam=lam, penalty=penalty, start=theta)[1]
        freq = counts / n_bootstrap
    called = (support & (freq >= min_frequency)) | tested
    has_cells = np.isin(np.asarray(tree.nodes), observed)
    some_change, some_unchanged = sparsest_status(tree.parent_index, has_cells, np.where(called, delta, 0.0))
    changed = called & some_change & ~some_unchanged
    unresolved = (called | some_change) & ~changed

    names = list(latent_names) if latent_names is not None else [f"latent_{i}" for i in range(prob.z.shape[1])]
    arcs = list(tree.arc_labels)

    def frame(values):
        return pd.DataFrame(values, index=arcs, columns=names)

    return Changes(
        delta=frame(delta * std),
        frequency=frame(freq),
        tested=frame(tested),
        changed=frame(changed),
        unresolved=frame(unresolved),
        estimate=frame(least_squares * std),
        se=frame(se * std),
        lam=float(lam),
        method=method,
        min_frequency=float(min_frequency),
        n_bootstrap=int(n_bootstrap),
        test_alpha=float(test_alpha) if has_validation else 0.0,
    )
