"""Is the basis the problem on leaves-only trees, and can a criterion on the cells choose a better one?

Issue 14's last open direction (``docs/cells_needed.md``, "An l0 search"): "a criterion that uses each head's own
standard error, or candidates scored on the cells rather than on the fitted heads". On the default fit of each
setting (``small_data.py``'s simulations, 5 latents, k = 1, MLP, 300 cells per environment), with the fitted latents
``Z`` fixed, it measures:

- ``aligned_mcc``: the MCC of the best basis *of the fitted latents' span* (``Z M*``, ``M*`` the least-squares map
  of ``Z`` onto the true latents on the training cells, columns standardised): what a perfect basis choice would
  give with this encoder;
- a **cell criterion** of a basis (:func:`cell_bic`): with the latents fixed, the adaptive lasso of the heads (the
  support estimate's steps 1-2, ``sctbr.tl._support``), each support along its path refitted without penalty, and
  ``n_val log(validation MSE) + log(n_val) * non-zeros`` minimised over the path: a BIC of the sparsest heads on
  cells the encoder did not train on. Reported for the fit's basis, the aligned basis and two random perturbations
  of it (``mix0``, ``mix1``: ``M* (I + 0.15 G)``);
- ``potts``: a criterion on the fitted heads that uses each head's own **standard error**: per environment, least
  squares of the target on the latents (training cells; residual variance of the validation cells), and for a head
  direction ``n`` the smallest ``chi2 + beta * changes`` of a piecewise-constant fit on the tree (unobserved heads
  free; ``beta`` = 8 ~ log of the cells), candidates from the support-based generator of ``l0_search.py``, the set
  of 5 with the smallest total (``min_resid`` 0.2); its MCC, total and the largest correlation of its latents;
- ``starts``: the 33 results of the basis refinement's starts on the unpenalised heads (as the final refinement),
  plain and with LP starts (``lp_start=True``), distinct ones (MCC < 0.99 between them) scored by the cell
  criterion: MCC of the l1 pick (what the refinement returns), the criterion's pick, and the best candidate;
- ``--greedy N``: a greedy search on the cell criterion from the fit's basis, ``N`` steps, each replacing one
  latent's head direction by one of the 20 best ``potts`` candidates: the criterion and the MCC after each step.

    OMP_NUM_THREADS=1 python benchmarks/basis_criteria.py --out benchmarks/results/basis_criteria.jsonl
    OMP_NUM_THREADS=1 python benchmarks/basis_criteria.py --shapes yule12 --seeds 3,4 --greedy 2 --no-starts
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

BETA = 8.0


def _std(z, rows):
    return (z - z[rows].mean(0)) / z[rows].std(0)


def fit(shape: str, seed: int, cells: int) -> dict:
    """The default fit's latents and everything the criteria need."""
    from small_data import simulate

    import sctbr

    adata = simulate(shape, cells, 5, "k1", "mlp", seed)
    res = sctbr.tl.fit(
        adata, random_state=seed, accelerator="cpu", train_kwargs={"enable_progress_bar": False}, changes=False
    )
    return {
        "latents": np.asarray(res.latents, float),
        "split": np.asarray(res.split).astype(str),
        "y": np.asarray(res.y, float).reshape(-1),
        "nodes": adata.obs["environment"].astype(str).to_numpy(),
        "z_true": np.asarray(adata.obsm["Z_true"], float),
        "tree": sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"]),
    }


def cell_bic(z: np.ndarray, data: dict) -> tuple[float, int]:
    """``(criterion, non-zeros)`` of the basis ``z`` (cells x latents): the adaptive lasso path of the heads, each
    support refitted, ``n_val log(val MSE) + log(n_val) df`` at its minimum over the path."""
    from sctbr.tl._support import _choose, _path, support_problem

    prob = support_problem(z, data["y"], data["nodes"], data["tree"], data["split"], standardize_latents=True)[0]
    init = prob.quad.split(_choose(_path(prob, None, 30, 1e-3, False), False)[2])[1]
    penalty = np.where(init != 0, 1.0 / np.maximum(np.abs(init), 1e-12), np.inf)
    path = _path(prob, penalty, 30, 1e-3, True)
    n = prob.validation.size
    values = [n * np.log(p[3]) + np.log(n) * p[1].sum() for p in path]
    best = int(np.argmin(values))
    return float(values[best]), int(path[best][1].sum())


class Setting:
    """One fit with its tree arrays, standardised latents and target, and per-environment least-squares heads."""

    def __init__(self, data: dict):
        self.data = data
        tree = data["tree"]
        self.parent = np.asarray(tree.parent_index)
        nodes = list(tree.nodes)
        self.train = np.flatnonzero(data["split"] == "train")
        self.val = np.flatnonzero(data["split"] == "validation")
        self.z = _std(data["latents"], self.train)
        y = data["y"]
        self.y = (y - y[self.train].mean()) / y[self.train].std()
        names = sorted(set(data["nodes"]))
        self.obs_nodes = np.array([nodes.index(n) for n in names])
        self.env = np.array([names.index(n) for n in data["nodes"]])
        self.n_nodes = len(nodes)
        self.d = self.z.shape[1]

    def mcc(self, z) -> float:
        from sctbr.metrics import mcc

        return float(mcc(self.data["z_true"][self.val], z[self.val]))

    def mcc_between(self, a, b) -> float:
        from sctbr.metrics import mcc

        return float(mcc(a[self.val], b[self.val]))

    def aligned(self) -> np.ndarray:
        """``M*``: least-squares map of the fitted latents onto the true ones (training cells)."""
        return np.linalg.lstsq(self.z[self.train], self.data["z_true"][self.train], rcond=None)[0]

    def heads(self, rows) -> np.ndarray:
        out = np.zeros((len(self.obs_nodes), self.d))
        for e in range(len(out)):
            r = rows[self.env[rows] == e]
            out[e] = np.linalg.lstsq(np.column_stack([np.ones(len(r)), self.z[r]]), self.y[r], rcond=None)[0][1:]
        return out

    def heads_with_se(self):
        """Heads on the training cells and their covariances (residual variance of the validation cells)."""
        n_env = len(self.obs_nodes)
        heads, cov, coefs, res = np.zeros((n_env, self.d)), np.zeros((n_env, self.d, self.d)), [], []
        for e in range(n_env):
            r = self.train[self.env[self.train] == e]
            x = np.column_stack([np.ones(len(r)), self.z[r]])
            coefs.append(np.linalg.lstsq(x, self.y[r], rcond=None)[0])
            heads[e], cov[e] = coefs[-1][1:], np.linalg.inv(x.T @ x)[1:, 1:]
        for e in range(n_env):
            r = self.val[self.env[self.val] == e]
            res.append(self.y[r] - np.column_stack([np.ones(len(r)), self.z[r]]) @ coefs[e])
        return heads, cov * float(np.mean(np.concatenate(res) ** 2))


def potts_cost(dirs, heads, cov, parent, obs_nodes, beta=BETA, levels=80) -> np.ndarray:
    """Per head direction (rows of ``dirs``): the smallest chi2 + beta * changes of a piecewise-constant fit of its
    head values on the tree (observed nodes weighted by their standard errors, unobserved nodes free; a grid of
    ``levels`` values)."""
    vals = dirs @ heads.T
    ses = np.sqrt(np.einsum("cd,edf,cf->ce", dirs, cov, dirs))
    lo, hi = vals.min(1), vals.max(1)
    grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, levels)[None]
    cost = np.zeros((len(dirs), len(parent), levels))
    for i, node in enumerate(obs_nodes):
        cost[:, node] += ((vals[:, i : i + 1] - grid) / ses[:, i : i + 1]) ** 2
    for node in range(len(parent) - 1, 0, -1):
        child = cost[:, node]
        cost[:, parent[node]] += np.minimum(child, child.min(1, keepdims=True) + beta)
    return cost[:, 0].min(1)


def potts_candidates(s: Setting, heads, cov, n_keep: int, seed: int):
    """Unique candidate head directions (support-based, ``l0_search.py``), cheapest first, and their costs."""
    from sctbr.model._basis_log import close_pairs

    rng = np.random.default_rng(seed)
    full = np.zeros((s.n_nodes, s.d))
    full[s.obs_nodes] = heads
    pairs = close_pairs(s.parent, s.obs_nodes, 6)
    diffs = full[pairs[:, 0]] - full[pairs[:, 1]]
    sel = np.array([rng.choice(len(pairs), size=s.d - 1, replace=False) for _ in range(12000)])
    cand = np.linalg.svd(diffs[sel])[2][:, -1, :]
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    cost = potts_cost(cand, heads, cov, s.parent, s.obs_nodes)
    keep, kept_cost = [], []
    for i in np.argsort(cost):
        if all(abs(cand[i] @ u) < 0.995 for u in keep):
            keep.append(cand[i])
            kept_cost.append(cost[i])
        if len(keep) >= n_keep:
            break
    return np.array(keep), np.array(kept_cost)


def potts_choice(s: Setting, seed: int) -> dict:
    from sctbr.model._basis_log import best_sets

    heads, cov = s.heads_with_se()
    dirs, cost = potts_candidates(s, heads, cov, 300, seed)
    sets, total = best_sets(dirs, cost, s.d, min_resid=0.2)
    z = _std(s.z @ np.linalg.inv(sets[0]).T, s.train)  # heads H n_j  <->  latents Z M, M = N^-T
    own = potts_cost(np.eye(s.d), heads, cov, s.parent, s.obs_nodes).sum()
    n_star = np.linalg.inv(s.aligned()).T
    star = potts_cost((n_star / np.linalg.norm(n_star, axis=0)).T, heads, cov, s.parent, s.obs_nodes).sum()
    corr = np.abs(np.corrcoef(z[s.train].T) - np.eye(s.d)).max()
    return {
        "potts_mcc": s.mcc(z),
        "potts_total": float(total),
        "potts_fit_total": float(own),
        "potts_aligned_total": float(star),
        "potts_max_corr": float(corr),
    }


def start_results(heads_full, parent, observed, corr, lp_start: bool, seed: int):
    """Every start's map ``M`` and l1 value of the basis refinement (``sctbr.model._basis.optimise_starts``), the
    finite ones."""
    from sctbr.model._basis import optimise_starts

    maps, _, values, _ = optimise_starts(heads_full, parent, observed, corr, random_state=seed, lp_start=lp_start)
    ok = np.isfinite(values.numpy())
    return maps.numpy()[ok], values.numpy()[ok]


def starts_choice(s: Setting, lp_start: bool, seed: int) -> dict:
    rows = np.concatenate([s.train, s.val])
    heads = np.zeros((s.n_nodes, s.d))
    heads[s.obs_nodes] = s.heads(rows)
    observed = np.zeros(s.n_nodes, dtype=bool)
    observed[s.obs_nodes] = True
    maps, values = start_results(heads, s.parent, observed, np.corrcoef(s.z[rows].T), lp_start, seed)
    distinct = []
    for i in np.argsort(values):
        z = _std(s.z @ maps[i], s.train)
        if all(s.mcc_between(z, other) < 0.99 for _, other in distinct):
            distinct.append((values[i], z))
    scored = np.array([(v, cell_bic(z, s.data)[0], s.mcc(z)) for v, z in distinct])
    tag = "lp" if lp_start else "plain"
    return {
        f"starts_{tag}_n": len(distinct),
        f"starts_{tag}_l1_mcc": float(scored[np.argmin(scored[:, 0]), 2]),
        f"starts_{tag}_cell_mcc": float(scored[np.argmin(scored[:, 1]), 2]),
        f"starts_{tag}_best_mcc": float(scored[:, 2].max()),
    }


def greedy(s: Setting, steps: int, seed: int) -> list:
    heads, cov = s.heads_with_se()
    dirs = potts_candidates(s, heads, cov, 20, seed)[0]
    n = np.eye(s.d)
    current = cell_bic(s.z, s.data)[0]
    out = []
    for _ in range(steps):
        best = (current - 1.0, None)
        for j in range(s.d):
            for c in dirs:
                trial = n.copy()
                trial[:, j] = c
                if abs(np.linalg.det(trial)) < 1e-3:
                    continue
                value = cell_bic(_std(s.z @ np.linalg.inv(trial).T, s.train), s.data)[0]
                if value < best[0]:
                    best = (value, trial)
        if best[1] is None:
            break
        current, n = best
        out.append((round(current, 1), round(s.mcc(_std(s.z @ np.linalg.inv(n).T, s.train)), 4)))
    return out


def run(shape: str, seed: int, args) -> dict:
    t = time.perf_counter()
    s = Setting(fit(shape, seed, args.cells))
    row = {"shape": shape, "seed": seed, "cells": args.cells, "fit_mcc": s.mcc(s.z)}
    aligned = _std(s.z @ s.aligned(), s.train)
    row["aligned_mcc"] = s.mcc(aligned)
    rng = np.random.default_rng(seed)
    bases = {"fit": s.z, "aligned": aligned}
    for k in range(2):
        bases[f"mix{k}"] = _std(aligned @ (np.eye(s.d) + 0.15 * rng.standard_normal((s.d, s.d))), s.train)
    for name, z in bases.items():
        row[f"cell_{name}"], row[f"nonzero_{name}"] = cell_bic(z, s.data)
        if name.startswith("mix"):
            row[f"{name}_mcc"] = s.mcc(z)
    row |= potts_choice(s, seed)
    if not args.no_starts:
        row |= starts_choice(s, False, seed) | starts_choice(s, True, seed)
    if args.greedy:
        row["greedy"] = greedy(s, args.greedy, seed)
    return row | {"seconds": round(time.perf_counter() - t, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="yule12,yule16,balanced3")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--cells", type=int, default=300)
    p.add_argument("--greedy", type=int, default=0, help="steps of the greedy search on the cell criterion")
    p.add_argument("--no-starts", action="store_true", help="skip the refinement-starts comparison")
    p.add_argument("--out", type=Path, default=None, help="JSON-lines file the rows are appended to")
    args = p.parse_args(argv)
    from l0_search import run_grid

    run_grid(run, args.shapes.split(","), [int(x) for x in args.seeds.split(",")], args)


if __name__ == "__main__":
    main()
