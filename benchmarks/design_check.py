"""Does the design check make ``sctbr.tl.stability``'s verdict honest? (issue 14's diagnostic)

``sctbr.tl.stability`` refits with other seeds; runs that agree can still agree on the same wrong mixture when the
ℓ1 objective's optimum is not the truth. ``sctbr.tl.identifiability`` asks the design question without data: with
perfect heads drawn on the same tree (cells at the same nodes), does the exact basis refinement recover the latents?
``stability`` runs it at ``n_latent`` (``tree_mcc``) and calls the latents *identified* when the runs agree
(``mean_mcc >= 0.9``) and the design check does too (``tree_mcc >= 0.9``).

This script computes the design check of every fit of a ``small_data.py --stability`` run (the same trees, the
seed ``random_state`` = the data seed that ``small_data.py`` passes to ``stability``, so the numbers are those
``stability`` reports) and scores the verdicts against the truth (MCC of the fit >= 0.9):

- ``stable``: the runs agree and every latent is stable (the verdict before the design check);
- ``agree``: the runs' mean agreement alone;
- ``identified``: agreement and the design check (the default verdict);
- ``tree only``: the design check alone;
- ``never``: "not identified" for every fit (right on the fits below 0.9).

    OMP_NUM_THREADS=1 python benchmarks/design_check.py                      # the 50 fits of stability.csv, ~10 min
    OMP_NUM_THREADS=1 python benchmarks/design_check.py --stability /tmp/fresh/fits.csv --out /tmp/fresh/design.csv
    # the 3-latent fits of the grid (fits.csv: 300 cells, k = 1, MLP), design check and fit per tree
    OMP_NUM_THREADS=1 python benchmarks/design_check.py --stability benchmarks/results/small_data/fits.csv \
        --latents 3 --out benchmarks/results/small_data/design_check_3.csv
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

THRESHOLD = 0.9
N_SIMS = 8


def tree_mcc(job: tuple[str, int, int]) -> dict:
    """The design check of the tree of one grid setting, as ``tl.stability(random_state=seed)`` runs it."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import small_data

    import sctbr

    shape, latents, seed = job
    adata = small_data.simulate(shape, 4, latents, "k1", "mlp", seed)  # the tree and its observed nodes only
    t = time.perf_counter()
    res = sctbr.tl.identifiability(adata, n_latent=latents, n_sims=N_SIMS, random_state=seed, inplace=False)
    row = res["table"].iloc[0]
    return {
        "shape": shape,
        "latents": latents,
        "seed": seed,
        "tree_mcc": float(row["mean_mcc"]),
        "tree_worst": float(row["worst_mcc"]),
        "tree_seconds": time.perf_counter() - t,
    }


def verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """How often each verdict matches the truth (fit MCC >= 0.9): per tree, and in total per block of 5 seeds."""
    truth = df["tbr_mcc"] >= THRESHOLD
    rules = {
        "stable": df["stability_stable"].astype(bool),
        "agree": df["stability_mcc"] >= THRESHOLD,
        "identified": (df["stability_mcc"] >= THRESHOLD) & (df["tree_mcc"] >= THRESHOLD),
        "tree only": df["tree_mcc"] >= THRESHOLD,
        "never": pd.Series(False, index=df.index),
    }
    out = pd.DataFrame({name: (rule == truth) for name, rule in rules.items()})
    out["fits"] = 1
    block = df["seed"].floordiv(5).map(lambda b: f"all, seeds {5 * b}-{5 * b + 4}")
    table = out.groupby(df["shape"], sort=False).sum()
    for name, rows in out.groupby(block, sort=True):
        table.loc[name] = rows.sum()
    table.loc["all"] = out.sum()
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stability", default="benchmarks/results/small_data/stability.csv", help="small_data fits.csv")
    p.add_argument("--out", default="benchmarks/results/small_data/design_check.csv")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--latents", type=int, default=None, help="only the fits with this many latents")
    args = p.parse_args(argv)
    fits = pd.read_csv(args.stability)
    if "recipe" in fits:  # one row per tree: the default call at 300 cells, k = 1, the simulator's MLP
        keep = (
            (fits["recipe"] == "default") & (fits["cells"] == 300) & (fits["changes"] == "k1") & (fits["psi"] == "mlp")
        )
        fits = fits[keep]
    if args.latents:
        fits = fits[fits["latents"] == args.latents]
    jobs = sorted({(r.shape, int(r.latents), int(r.seed)) for r in fits.itertuples()})
    done = pd.read_csv(args.out) if Path(args.out).exists() else pd.DataFrame(columns=["shape", "latents", "seed"])
    have = {(r.shape, int(r.latents), int(r.seed)) for r in done.itertuples()}
    todo = [j for j in jobs if j not in have]
    print(f"{len(todo)} design checks to run ({len(have)} already in {args.out})", flush=True)
    rows = list(done.to_dict("records"))
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(tree_mcc, todo):
            rows.append(row)
            print(
                f"{row['shape']:>9} d={row['latents']} seed={row['seed']}  tree MCC {row['tree_mcc']:.3f}", flush=True
            )
            pd.DataFrame(rows).to_csv(args.out, index=False)
    design = pd.DataFrame(rows)
    df = fits.merge(design, on=["shape", "latents", "seed"], how="left")
    pd.set_option("display.width", 200)
    cols = ["shape", "seed", "tbr_mcc", "stability_mcc", "stability_stable", "tree_mcc"]
    print(df[[c for c in cols if c in df]].round(3).to_string(index=False))
    by_tree = df.groupby("shape", sort=False).agg(
        tree_mean=("tree_mcc", "mean"),
        tree_min=("tree_mcc", "min"),
        tree_max=("tree_mcc", "max"),
        fit_mean=("tbr_mcc", "mean"),
        fit_worst=("tbr_mcc", "min"),
        fits_identified=("tbr_mcc", lambda m: int((m >= THRESHOLD).sum())),
        fits=("tbr_mcc", "size"),
    )
    print("\ndesign check and default fit per tree")
    print(by_tree.round(3).to_string())
    if "stability_mcc" in df:
        print("\nverdicts right (truth: fit MCC >= 0.9)")
        print(verdicts(df).to_string())


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    main()
