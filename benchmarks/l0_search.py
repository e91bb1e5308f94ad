"""An l0 basis search: can the fewest non-zero arc changes pick the true latent basis where l1 does not?

Issue 14's open direction "an l0-like objective in the basis refinement". ``l1_oracle.py --l0`` showed that with
the true heads the true basis is the l0 optimum on 12-leaf trees, but that the linear programs' candidate directions
miss true directions. This benchmark builds candidates from the *supports* instead:

- a true latent's head is equal at many pairs of observed environments (no change on the path between them), so
  its direction ``n`` (the new latent's heads are ``H n``) is orthogonal to ``H_e - H_f`` for those pairs: every
  ``d - 1`` differences of close observed pairs (tree distance <= ``--max-dist``) give a candidate (their null
  vector; ``--samples`` random draws);
- each candidate is scored by its **parsimony**: the fewest arcs with a change given its head values at the
  observed nodes, the unobserved heads free (Sankoff's algorithm with unit costs; values within ``tol`` of each
  other, chained, count as equal);
- the basis is the well-conditioned set of ``d`` candidates with the smallest total (a pruned search over the
  best-scored unique candidates); ties are broken by the smallest l1 penalty with unit-variance latents.

Two modes, on ``small_data.py``'s simulations (5 latents, k = 1, MLP):

- ``--mode oracle``: the simulation's true heads seen through a random mix of the latents (as ``l1_oracle.py``),
  ``tol`` 1e-6 of the values' spread, next to the exact l1 refinement (``refine_basis(lp_start=True)``) on the same
  heads;
- ``--mode fitted``: the heads of the default fit (``tl.fit``; cached as ``.npz`` under ``--cache``), ``tol`` =
  ``--tol`` times the spread of each candidate's values; compared with the default fit's own MCC.

    OMP_NUM_THREADS=1 python benchmarks/l0_search.py --mode oracle
    OMP_NUM_THREADS=1 python benchmarks/l0_search.py --mode fitted --tol 0.05 --cache /tmp/l0_fits
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from sctbr.model._basis_log import best_sets, parsimony
from sctbr.model._basis_log import support_directions as candidates


def choose(heads, parent, observed, corr, tol_rel, seed, **kwargs):
    """The l0 basis: ``(M, total count, number of tied sets)``, new latents ``Z @ M`` (unit variance)."""
    from l1_oracle import l1_with_free_nodes

    d = heads.shape[1]
    dirs, counts = candidates(heads, parent, observed, tol_rel=tol_rel, random_state=seed, **kwargs)
    sets, total = best_sets(dirs, counts, d)
    best, best_l1 = None, np.inf
    for n in sets:
        m = np.linalg.inv(n).T
        s = np.sqrt(np.einsum("ij,ik,kj->j", m, corr, m))
        value = l1_with_free_nodes(heads @ (n * s), parent, observed)
        if value < best_l1:
            best, best_l1 = m / s, value
    return best, total, len(sets)


def _fit(shape: str, seed: int, cells: int, cache: Path | None) -> dict:
    """The default fit's latents and heads (and the truth) on one setting, from ``cache`` when there."""
    path = cache / f"{shape}_{cells}_{seed}.npz" if cache else None
    if path is not None and path.exists():
        return dict(np.load(path))
    from l1_oracle import _tree_arrays
    from small_data import simulate

    import sctbr

    adata = simulate(shape, cells, 5, "k1", "mlp", seed)
    parent, observed = _tree_arrays(adata)
    res = sctbr.tl.fit(adata, random_state=seed, accelerator="cpu", train_kwargs={"enable_progress_bar": False})
    nodes = list(sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"]).nodes)
    out = {
        "latents": res.latents,
        "split": np.asarray(res.split).astype(str),
        "z_true": np.asarray(adata.obsm["Z_true"]),
        "heads": res.environment_weights.loc[nodes].to_numpy(float),
        "parent": parent,
        "observed": observed,
        "true_heads": np.asarray(adata.uns["simulation"]["weights"], float),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **out)
    return out


def run(shape: str, seed: int, args) -> dict:
    from sctbr.metrics import mcc

    data = _fit(shape, seed, args.cells, args.cache)
    parent, observed = data["parent"], data["observed"]
    kwargs = {"n_samples": args.samples, "max_dist": args.max_dist}
    t = time.perf_counter()
    row = {"mode": args.mode, "shape": shape, "cells": args.cells, "seed": seed}
    if args.mode == "oracle":
        from l1_oracle import mixed_truth

        truth = mixed_truth(data["z_true"], data["true_heads"], seed)
        zs, zm, heads, corr = (truth[key] for key in ("zs", "zm", "heads", "corr"))
        m, total, ties = choose(heads, parent, observed, corr, 1e-6, seed, **kwargs)
        row |= {"tol": 1e-6, "l0_mcc": mcc(zs, zm @ m) if m is not None else np.nan}
        from sctbr.model import refine_basis

        m_l1 = refine_basis(heads, parent, observed, corr, random_state=seed, lp_start=True)[0]
        row["l1_mcc"] = mcc(zs, zm @ m_l1)  # the exact l1 refinement on the same heads, side by side
        true_heads = truth["w_true"][observed]
        obs = np.flatnonzero(observed)
        row["truth_count"] = int(parsimony(true_heads.T, parent, obs, 1e-6 * np.abs(true_heads).max(0)).sum())
    else:
        valid = data["split"] == "validation"
        latents = data["latents"].astype(float)
        heads = data["heads"]
        corr = np.corrcoef(latents[data["split"] == "train"].T)
        m, total, ties = choose(heads, parent, observed, corr, args.tol, seed, **kwargs)
        obs = np.flatnonzero(observed)
        values = heads[obs].T
        row |= {
            "tol": args.tol,
            "default_mcc": mcc(data["z_true"][valid], latents[valid]),
            "l0_mcc": mcc(data["z_true"][valid], latents[valid] @ m) if m is not None else np.nan,
            "default_basis_count": int(parsimony(values, parent, obs, args.tol * values.std(1)).sum()),
        }
    return row | {"l0_count": total, "tied_sets": ties, "seconds": round(time.perf_counter() - t, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["oracle", "fitted"], default="oracle")
    p.add_argument("--shapes", default="balanced3,yule8,yule12,yule16,pbmc")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cells", type=int, default=300)
    p.add_argument("--tol", type=float, default=0.05, help="fitted mode: tolerance relative to the values' spread")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--max-dist", type=int, default=6)
    p.add_argument("--cache", type=Path, default=None, help="folder of cached default fits (fitted mode)")
    p.add_argument("--out", type=Path, default=None, help="JSON-lines file the rows are appended to")
    args = p.parse_args(argv)
    run_grid(run, args.shapes.split(","), range(args.seeds), args)


def run_grid(run, shapes, seeds, args) -> None:
    """Quietly, with one torch thread, ``emit(run(shape, seed, args), args.out)`` for every shape and seed."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    for shape in shapes:
        for seed in seeds:
            emit(run(shape, seed, args), args.out)


def emit(row: dict, out: Path | None) -> None:
    """Print one result row as a JSON line (floats to 4 decimals) and append it to ``out`` when given."""
    row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    line = json.dumps(row, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(line, flush=True)
    if out:
        with out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
