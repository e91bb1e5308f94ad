"""MCC and fit time of ``lam="auto"`` (one-standard-error rule on a warm-started path) vs the fixed default lambda.

For each tree shape, seed and sparsity ``k``, simulates data (5 latents, ``sctbr.datasets.simulate``), fits
``sctbr.tl.tbr`` twice with the same seed (``lam=1e-3``, the default, and ``lam="auto"``) on the paper's 50/25/25
split, and scores the MCC of the latents against ``obsm["Z_true"]`` on the test cells. Prints one row per fit
pair and a summary (mean MCC of each, median fit-time ratio auto/fixed).

    OMP_NUM_THREADS=1 nice python benchmarks/lam_auto.py              # 3 shapes x 2 seeds x k in {1, 0}
    OMP_NUM_THREADS=1 nice python benchmarks/lam_auto.py --quick      # a few-minute smoke run

Shapes: ``balanced4`` (balanced binary tree of depth 4, all 30 non-root nodes observed), ``yule16`` (a random
unbalanced 16-leaf tree from ``sctbr.datasets.random_tree``, cells at the leaves only), ``balanced3`` (depth 3,
all 14 non-root nodes observed).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pandas as pd
import torch

import sctbr
from sctbr.metrics import mcc

SHAPES = ("balanced4", "yule16", "balanced3")
SPLIT = {"train_size": 0.5, "validation_size": 0.25}
QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def simulate(shape: str, k: int, seed: int, n_obs_per_env: int):
    common = {"n_latent": 5, "k": k, "n_obs_per_env": n_obs_per_env, "random_state": seed}
    if shape == "balanced4":
        return sctbr.datasets.simulate(depth=4, **common)
    if shape == "balanced3":
        return sctbr.datasets.simulate(depth=3, **common)
    if shape == "yule16":
        tree = sctbr.datasets.random_tree(16, random_state=seed)
        return sctbr.datasets.simulate(tree=tree, leaves_only=True, **common)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def fit(adata, key: str, lam, seed: int, max_epochs: int | None) -> dict:
    t = time.perf_counter()
    sctbr.tl.tbr(adata, lam=lam, key_added=key, random_state=seed, max_epochs=max_epochs, **SPLIT, **QUIET)
    seconds = time.perf_counter() - t
    res = adata.uns[key]
    test = (adata.obs[f"{key}_split"] == "test").to_numpy()
    deltas = res["deltas"].to_numpy()
    return {
        "mcc": mcc(adata.obsm["Z_true"][test], adata.obsm[key][test]),  # key_added names the obsm entry
        "seconds": seconds,
        "lam": float(res["params"]["lam"]),
        "zeros": float((deltas == 0).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--cells", type=int, default=300, help="cells per observed environment")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (default: tl.tbr's heuristic)")
    parser.add_argument("--quick", action="store_true", help="balanced3 only, 100 cells, 30 epochs, seed 0")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.seeds, args.cells, args.epochs = ["balanced3"], [0], 100, 30

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    rows = []
    header = (
        f"{'shape':<10} {'k':>2} {'seed':>4} | {'MCC fixed':>9} {'MCC auto':>9} | {'lam auto':>8} "
        f"{'zeros fix':>9} {'zeros auto':>10} | {'s fixed':>7} {'s auto':>7} {'ratio':>5}"
    )
    print(header, flush=True)
    for shape in args.shapes:
        for k in args.k:
            for seed in args.seeds:
                adata = simulate(shape, k, seed, args.cells)
                fixed = fit(adata, "fixed", 1e-3, seed, args.epochs)
                auto = fit(adata, "auto", "auto", seed, args.epochs)
                row = {
                    "shape": shape,
                    "k": k,
                    "seed": seed,
                    "n_obs": adata.n_obs,
                    "mcc_fixed": fixed["mcc"],
                    "mcc_auto": auto["mcc"],
                    "lam_auto": auto["lam"],
                    "zeros_fixed": fixed["zeros"],
                    "zeros_auto": auto["zeros"],
                    "seconds_fixed": fixed["seconds"],
                    "seconds_auto": auto["seconds"],
                }
                row["time_ratio"] = row["seconds_auto"] / row["seconds_fixed"]
                rows.append(row)
                print(
                    f"{shape:<10} {k:>2} {seed:>4} | {row['mcc_fixed']:>9.3f} {row['mcc_auto']:>9.3f} | "
                    f"{row['lam_auto']:>8.1e} {row['zeros_fixed']:>9.2f} {row['zeros_auto']:>10.2f} | "
                    f"{row['seconds_fixed']:>7.0f} {row['seconds_auto']:>7.0f} {row['time_ratio']:>5.2f}",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print()
    for k, part in frame.groupby("k"):
        diff = part["mcc_auto"] - part["mcc_fixed"]
        print(
            f"k={k}: mean MCC fixed {part['mcc_fixed'].mean():.3f}, auto {part['mcc_auto'].mean():.3f} "
            f"(auto - fixed: mean {diff.mean():+.3f}, worst {diff.min():+.3f}, {int((diff < 0).sum())}/{len(diff)} "
            "lower)"
        )
    print(f"fit-time ratio auto/fixed: median {frame['time_ratio'].median():.2f}, max {frame['time_ratio'].max():.2f}")
    print(f"lambdas chosen: {sorted(frame['lam_auto'].round(6).tolist())}")


if __name__ == "__main__":
    main()
