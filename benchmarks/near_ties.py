"""Near-ties of the sparsity objective as a sign that the latents are not identified (issue 14, the diagnostic).

``sctbr.tl.stability`` refits with other seeds and asks whether the runs agree. On leaves-only trees every seed can
find the *same* wrong basis (the l1 optimum of the fitted heads is off the truth), so agreement is an upper bound on
identification, not a measure of it (``docs/cells_needed.md``). This benchmark asks whether the final refinement's
own search already tells, without refits: does another basis, far from the chosen one, reach almost the same
penalty?

For each default fit (``sctbr.tl.tbr``) of the 300-cell grid of ``small_data.py`` (5 latents, k = 1, MLP), at the
final refinement, the l1 basis search is re-run on the same least-squares heads from ``--starts`` starts (seeded
apart from the fit's own), every start's local optimum kept. For a tolerance ``tau``, the *near-tie agreement* is
the smallest agreement (mean absolute correlation of the matched latents, as MCC) between the chosen basis and any
local optimum whose penalty is within ``(1 + tau)`` of the best found; a value below 0.9 says "a clearly different
basis is almost as sparse". It is compared with the truth (MCC >= 0.9 on the validation cells), for the first 16 and
32 starts too.

It also asks whether a *cell-level* count picks the true basis among those near-ties (issue 14: "candidates
scored on the cells rather than on the fitted heads"). Every distinct local optimum within 10% of the best penalty
(agreement < 0.98 with those kept) becomes a basis of the fit's latents; with the latents fixed, the support
estimate's own machinery (``sctbr.tl._support``) scores it on the cells: the entries of Delta the adaptive lasso
and the plain lasso keep (lambda chosen on the validation cells), the lasso's validation error, and the entries the
least-squares test calls at family-wise levels 1e-4 and 0.1. Each rule picks the candidate with the smallest score
(ties: smaller penalty); "medoid" picks the one that agrees most with the others; "oracle" the one closest to the
truth (the most any rule could reach). One row per candidate in ``--out-candidates``.

    OMP_NUM_THREADS=1 python benchmarks/near_ties.py                  # 5 trees x 5 seeds, 2 jobs, ~12 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from small_data import map_jobs

TAUS = (0.01, 0.02, 0.03, 0.05, 0.1)
#: Candidates for the cell-level rules: local optima within this factor of the best penalty, pairwise distinct.
CANDIDATE_TAU, DISTINCT = 0.1, 0.98
RULES = ("adaptive", "lasso", "lasso_err", "test_0.0001", "test_0.1")


def local_optima(heads, parents, observed, corr, n_starts: int, random_state: int):
    """Every start's map and l1 penalty: the plain refinement's search (``refine_basis``), none discarded."""
    import torch

    from sctbr.model._basis import _init_unobserved, _normalise

    g = torch.Generator().manual_seed(int(random_state))
    d = heads.shape[1]
    w, c = torch.as_tensor(heads, dtype=torch.float64), torch.as_tensor(corr, dtype=torch.float64)
    child = torch.as_tensor(np.flatnonzero(parents >= 0))
    par = torch.as_tensor(parents[parents >= 0])
    obs_idx, free_idx = torch.as_tensor(np.flatnonzero(observed)), torch.as_tensor(np.flatnonzero(~observed))
    scale = float(np.abs(heads[observed]).mean()) or 1.0
    a0 = torch.eye(d, dtype=torch.float64).expand(n_starts, d, d).clone()
    a0[1:] += torch.randn(n_starts - 1, d, d, generator=g, dtype=torch.float64)
    free = torch.as_tensor(_init_unobserved(heads, parents, observed)).expand(n_starts, -1, -1).clone()
    with torch.no_grad():
        free = torch.linalg.solve(_normalise(a0, c), free.transpose(1, 2)).transpose(1, 2)
    a, free = a0.requires_grad_(True), free.requires_grad_(True)

    def assemble():
        m = _normalise(a, c)
        w_obs = torch.linalg.solve(m, w[obs_idx].T.expand(n_starts, -1, -1)).transpose(1, 2)
        v = torch.zeros(n_starts, w.shape[0], d, dtype=torch.float64).index_copy(1, obs_idx, w_obs)
        return m, (v.index_copy(1, free_idx, free) if len(free_idx) else v)

    def value(v, smooth):
        diff = v[:, child] - v[:, par]
        return (torch.sqrt(diff * diff + smooth * smooth) - smooth).sum(dim=(1, 2))

    opt = torch.optim.Adam([a, free], lr=0.05)
    for step in range(500):
        loss = value(assemble()[1], scale * max(1e-3, 0.1 * (1 - step / 500))).sum() / scale
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m, v = assemble()
        return m.numpy(), value(v, 0.0).numpy()


def agreement(ma, mb, corr) -> float:
    """Mean absolute correlation of the matched latents ``Z ma`` and ``Z mb`` (``corr``: that of ``Z``)."""
    from scipy.optimize import linear_sum_assignment

    sa = np.sqrt(np.einsum("ij,ik,kj->j", ma, corr, ma))
    sb = np.sqrt(np.einsum("ij,ik,kj->j", mb, corr, mb))
    r = np.abs(ma.T @ corr @ mb) / np.outer(sa, sb)
    i, j = linear_sum_assignment(-r)
    return float(r[i, j].mean())


def cell_scores(z_all, m, y, nodes, tree, split) -> dict:
    """Cell-level sparsity of the basis ``m`` of the latents ``z_all`` (``z_all @ m``), the latents then fixed."""
    from sctbr.tl import _support as sp

    prob = sp.support_problem(z_all @ m, y, nodes, tree, split, standardize_latents=True)[0]
    delta, se = sp._least_squares(prob)
    out = {f"test_{a}": int(sp._tested(delta, se, a).sum()) for a in (1e-4, 0.1)}
    out["adaptive"] = int(sp._select(prob, "adaptive", 30, 1e-3)[1].sum())
    _, support, _, _, theta = sp._select(prob, "lasso", 30, 1e-3)
    out["lasso"], out["lasso_err"] = int(support.sum()), float(prob.errors(theta).mean())
    return out


def candidates(store: dict) -> list[tuple[np.ndarray, float]]:
    """The chosen basis, then every local optimum within ``CANDIDATE_TAU`` of the best penalty not already kept."""
    ok = np.isfinite(store["penalties"])
    maps, pens = store["maps"][ok], store["penalties"][ok]
    best = min(float(pens.min()), store["penalty"])
    kept = [(store["chosen"], store["penalty"] / best)]
    for i in np.argsort(pens):
        if pens[i] > best * (1 + CANDIDATE_TAU):
            break
        if all(agreement(maps[i], m, store["corr"]) < DISTINCT for m, _ in kept):
            kept.append((maps[i], float(pens[i]) / best))
    return kept


def run(job: tuple[str, int, int]) -> dict:
    import small_data

    from sctbr.metrics import mcc
    from sctbr.model._basis import refine_basis

    shape, seed, n_starts = job
    store: dict = {}

    def record(z_all, idx, heads, observed, corr, parents, random_state, tree, nodes):
        chosen, _, penalty, _ = refine_basis(heads, parents, observed, corr, random_state=random_state)
        maps, penalties = local_optima(heads, parents, observed, corr, n_starts, random_state + 1000)
        store.update(chosen=chosen, penalty=penalty, maps=maps, penalties=penalties, corr=corr, z_all=z_all)
        store.update(tree=tree, nodes=nodes)

    adata, held = small_data.fit_recording_final(shape, seed, record, context=True)
    z_true = adata.obsm["Z_true"]
    out = {"shape": shape, "seed": seed, "mcc": mcc(z_true[held], adata.obsm["X_tbr"][held])}
    split, y = np.asarray(adata.obs["tbr_split"]).astype(str), adata.obs["y"].to_numpy(dtype=np.float64)
    kept = candidates(store)
    rows = []
    for k, (m, ratio) in enumerate(kept):
        z = store["z_all"] @ m
        mean_agree = np.mean([agreement(m, m2, store["corr"]) for j, (m2, _) in enumerate(kept) if j != k] or [1.0])
        rows.append(
            {
                "shape": shape,
                "seed": seed,
                "candidate": k,
                "penalty_ratio": ratio,
                "mcc": mcc(z_true[held], z[held]),
                "mean_agreement": float(mean_agree),
                **cell_scores(store["z_all"], m, y, store["nodes"], store["tree"], split),
            }
        )
    out["candidates"] = rows
    ok = np.isfinite(store["penalties"])
    agree = np.array([agreement(store["chosen"], m, store["corr"]) for m in store["maps"][ok]])
    for first in (16, 32, n_starts):
        pen = store["penalties"][ok][: first - int((~ok[:first]).sum())]
        best = min(float(pen.min()), store["penalty"])
        for tau in TAUS:
            near = pen <= best * (1 + tau)
            out[f"agree_{first}_{tau}"] = float(agree[: len(pen)][near].min()) if near.any() else 1.0
    print(
        json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items() if k != "candidates"}),
        flush=True,
    )
    return out


def pick(group, rule: str) -> float:
    """MCC of the candidate a rule picks in one fit's candidates (a DataFrame)."""
    if rule == "default":
        return float(group["mcc"].iloc[0])
    if rule == "oracle":
        return float(group["mcc"].max())
    if rule == "medoid":
        return float(group.sort_values(["mean_agreement", "penalty_ratio"], ascending=[False, True])["mcc"].iloc[0])
    return float(group.sort_values([rule, "penalty_ratio"])["mcc"].iloc[0])


def main(argv=None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="balanced3,yule8,yule12,yule16,pbmc")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--starts", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/small_data/near_ties.csv")
    p.add_argument("--out-candidates", default="benchmarks/results/small_data/near_ties_candidates.csv")
    args = p.parse_args(argv)
    jobs = [(s, k, args.starts) for s in args.shapes.split(",") for k in range(args.seeds)]
    rows = map_jobs(run, jobs, args.jobs)
    cands = pd.DataFrame([c for r in rows for c in r.pop("candidates")])
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    cands.to_csv(args.out_candidates, index=False)
    picked = pd.DataFrame(
        {
            rule: cands.groupby(["shape", "seed"]).apply(pick, rule=rule, include_groups=False)
            for rule in ("default", *RULES, "medoid", "oracle")
        }
    )
    table = picked.groupby(level="shape").agg(["mean", "min"]).round(3)
    print(f"candidates within {CANDIDATE_TAU:.0%} of the best penalty: {len(cands) / len(df):.1f} per fit")
    print("MCC of the candidate each rule picks (mean, worst):")
    print(table.to_string())
    diff = picked.sub(picked["default"], axis=0)
    print("paired difference to the default:", diff.mean().round(3).to_dict())
    truth = df["mcc"] >= 0.9
    print(
        f"identified (MCC >= 0.9): {int(truth.sum())} of {len(df)}; 'never identified' is right on {int((~truth).sum())}"
    )
    for first in (16, 32, args.starts):
        for tau in TAUS:
            verdict = df[f"agree_{first}_{tau}"] >= 0.9
            right = verdict == truth
            low = df["seed"] <= 2
            print(
                f"starts {first:3d} tau {tau:.2f}: right on {int(right.sum())} of {len(df)} (seeds 0-2: {int(right[low].sum())} of {int(low.sum())})"
            )


if __name__ == "__main__":
    main()
