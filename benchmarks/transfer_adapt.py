"""Few-shot adaptation (``TBR.adapt``) against the paper's nearest-environment rule on unseen cell types.

For each seed: simulate a balanced binary tree (k = 1 change per arc, observed at every non-root node), hold out
some leaves (their incoming arcs carry the simulation's 1-sparse change), train TBR on the rest, then for each
held-out leaf compare, on the same query cells of that leaf (the cells not in the adaptation pool):

* ``nearest``: the head of the closest observed environment in the tree (the paper's rule, Fig. 4b);
* ``adapt``: ``model.adapt`` on ``shots`` labelled cells of the leaf (default ``lam``: CV with >= 20 cells, else the
  universal threshold), i.e. a sparse change on the new arc from the parent's head;
* ``refit``: the same with ``lam=0`` (an unpenalised refit of the head on the latents, no sparsity);
* ``oracle``: the true head on the true latents (the noise floor).

Every shot count is drawn ``--draws`` times (different cells); the table shows the mean MSE over draws and the
mean number of non-zero entries of the adapted change. Runs on CPU in a few minutes.

    python benchmarks/transfer_adapt.py --seeds 0 1 --shots 10 30 100
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd
import torch

import sctbr
from sctbr.model import TBR


def held_out_leaves(tree: sctbr.EnvironmentTree, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` leaves with different parents (so each one's parent stays observed)."""
    leaves = list(rng.permutation(tree.leaves))
    chosen, parents = [], set()
    for leaf in leaves:
        if tree.parent(leaf) not in parents:
            chosen.append(str(leaf))
            parents.add(tree.parent(leaf))
        if len(chosen) == n:
            break
    return chosen


def run_seed(seed: int, args) -> list[dict]:
    adata = sctbr.datasets.simulate(
        depth=args.depth,
        n_obs_per_env=args.cells,
        n_inputs=args.n_inputs,
        n_latent=args.n_latent,
        k=1,
        noise_y=args.noise_y,
        random_state=seed,
    )
    tree = sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])
    held = held_out_leaves(tree, args.held_out, np.random.default_rng(seed))
    labels = adata.obs["environment"].astype(str).to_numpy()
    train = adata[~np.isin(labels, held)].copy()
    TBR.setup_anndata(train, target="y", groupby="environment")
    model = TBR(train, tree=tree, n_latent=args.n_latent, hidden=tuple(args.hidden), random_state=seed)
    start = time.perf_counter()
    model.train(max_epochs=args.epochs, accelerator="cpu", enable_progress_bar=False, random_state=seed)
    fit_s = time.perf_counter() - start
    sim = adata.uns["simulation"]
    true_w = pd.DataFrame(np.asarray(sim["weights"]), index=[str(n) for n in sim["nodes"]])
    rows = []
    for leaf in held:
        cells = adata[labels == leaf].copy()
        pool, query = cells[: args.pool], cells[args.pool :]
        y = query.obs["y"].to_numpy()
        neighbour = model.nearest_observed(leaf)
        nearest = float(np.mean((model.predict(query, environment=leaf) - y) ** 2))
        oracle = float(np.mean((np.asarray(query.obsm["Z_true"]) @ true_w.loc[leaf].to_numpy() - y) ** 2))
        for shots in args.shots:
            mse, refit, nnz, adapt_s = [], [], [], 0.0
            for draw in range(args.draws):
                idx = np.sort(np.random.default_rng([seed, shots, draw]).choice(args.pool, shots, replace=False))
                t0 = time.perf_counter()
                delta = model.adapt(pool[idx], leaf, random_state=draw)
                adapt_s += time.perf_counter() - t0
                mse.append(float(np.mean((model.predict(query, environment=leaf) - y) ** 2)))
                nnz.append(int((delta != 0).sum()))
                model.adapt(pool[idx], leaf, lam=0.0)
                refit.append(float(np.mean((model.predict(query, environment=leaf) - y) ** 2)))
                model.adapted_heads_.pop(leaf)
            rows.append(
                {
                    "seed": seed,
                    "held_out": leaf,
                    "neighbour": neighbour,
                    "shots": shots,
                    "nearest": nearest,
                    "adapt": float(np.mean(mse)),
                    "adapt_sd": float(np.std(mse)),
                    "refit_lam0": float(np.mean(refit)),
                    "oracle": oracle,
                    "nnz_delta": float(np.mean(nnz)),
                    "adapt_ms": 1000 * adapt_s / args.draws,
                    "fit_s": fit_s,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--draws", type=int, default=5, help="support sets drawn per shot count")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--n-latent", type=int, default=3)
    parser.add_argument("--n-inputs", type=int, default=8)
    parser.add_argument("--noise-y", type=float, default=0.1)
    parser.add_argument("--cells", type=int, default=400, help="cells per environment")
    parser.add_argument("--pool", type=int, default=150, help="cells of a held-out leaf the shots are drawn from")
    parser.add_argument("--held-out", type=int, default=2, help="leaves held out per seed")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 32])
    args = parser.parse_args()
    if max(args.shots) > args.pool or args.pool >= args.cells:
        parser.error("need max(shots) <= pool < cells")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)

    rows = [row for seed in args.seeds for row in run_seed(seed, args)]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    cols = ["seed", "held_out", "neighbour", "shots", "nearest", "adapt", "adapt_sd", "refit_lam0", "oracle"]
    print(table[[*cols, "nnz_delta", "adapt_ms"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    summary = table.groupby("shots")[["nearest", "adapt", "refit_lam0", "oracle", "nnz_delta"]].mean()
    summary["adapt / nearest"] = summary["adapt"] / summary["nearest"]
    summary["wins (adapt < nearest)"] = table.groupby("shots").apply(
        lambda t: f"{int((t['adapt'] < t['nearest']).sum())}/{len(t)}", include_groups=False
    )
    print(f"\nMean over {len(args.seeds)} seeds x {args.held_out} held-out leaves (MSE on the query cells):")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nTraining: {table.groupby('seed')['fit_s'].first().mean():.1f} s per model (CPU, {args.epochs} epochs).")


if __name__ == "__main__":
    main()
