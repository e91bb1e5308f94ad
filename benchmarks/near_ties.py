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

    OMP_NUM_THREADS=1 python benchmarks/near_ties.py                  # 5 trees x 5 seeds, 2 jobs, ~6 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from small_data import map_jobs

TAUS = (0.01, 0.02, 0.03, 0.05, 0.1)


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


def run(job: tuple[str, int, int]) -> dict:
    import small_data

    from sctbr.metrics import mcc
    from sctbr.model._basis import refine_basis

    shape, seed, n_starts = job
    store: dict = {}

    def record(z_all, idx, heads, observed, corr, parents, random_state):
        chosen, _, penalty, _ = refine_basis(heads, parents, observed, corr, random_state=random_state)
        maps, penalties = local_optima(heads, parents, observed, corr, n_starts, random_state + 1000)
        store.update(chosen=chosen, penalty=penalty, maps=maps, penalties=penalties, corr=corr)

    adata, held = small_data.fit_recording_final(shape, seed, record)
    out = {"shape": shape, "seed": seed, "mcc": mcc(adata.obsm["Z_true"][held], adata.obsm["X_tbr"][held])}
    ok = np.isfinite(store["penalties"])
    agree = np.array([agreement(store["chosen"], m, store["corr"]) for m in store["maps"][ok]])
    for first in (16, 32, n_starts):
        pen = store["penalties"][ok][: first - int((~ok[:first]).sum())]
        best = min(float(pen.min()), store["penalty"])
        for tau in TAUS:
            near = pen <= best * (1 + tau)
            out[f"agree_{first}_{tau}"] = float(agree[: len(pen)][near].min()) if near.any() else 1.0
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}), flush=True)
    return out


def main(argv=None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="balanced3,yule8,yule12,yule16,pbmc")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--starts", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/small_data/near_ties.csv")
    args = p.parse_args(argv)
    jobs = [(s, k, args.starts) for s in args.shapes.split(",") for k in range(args.seeds)]
    rows = map_jobs(run, jobs, args.jobs)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
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
