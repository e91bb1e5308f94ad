"""A real-cell benchmark where the MCC means something: PBMC3k sub-clusters, weakly correlated latent genes.

The paper's semi-synthetic design on the bundled PBMC3k (no download), with two changes that make the MCC
informative (issue 14):

- environments: Louvain sub-clusters of every annotated cell type (``sctbr.pp.subclusters``; about 30 instead of
  9), on a tree that follows the cell types (the cell-type dendrogram with each type's sub-clusters attached below
  it as their own dendrogram: ``sctbr.pp.environment_tree(..., within="cell_type")``);
- latents: genes picked by ``sctbr.datasets.weakly_correlated_genes`` (detected in >= 10% of cells, >= 3
  regulators in the data, every pair's |correlation| after MAGIC < 0.3), their regulators the inputs.

Both methods use their default calls (profile ``local``: the default number of epochs and sparsity weight).
Next to every result: ``chance_mcc``, the mean MCC of 100 random Gaussian mixtures of the true latents, and
``span_r2``, the mean R² of each true latent regressed linearly on the fitted latents (test cells).

    OMP_NUM_THREADS=1 python benchmarks/real_cells.py                 # 10 repetitions at k = 1, about 15 minutes
    OMP_NUM_THREADS=1 python benchmarks/real_cells.py --reps 3 --latents house_keeping --environments cell_types

Prints the table and writes ``benchmarks/results/real_cells/<environments>_<latents>.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import sctbr

OUT = Path(__file__).parent / "results" / "real_cells"


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd of the MCC per method, with the chance level, span R² and environment sizes."""
    return results.groupby("method", sort=False).agg(
        mcc_mean=("mcc", "mean"),
        mcc_sd=("mcc", "std"),
        chance_mcc=("chance_mcc", "mean"),
        chance_mcc_fit=("chance_mcc_fit", "mean"),
        span_r2=("span_r2", "mean"),
        n=("mcc", "size"),
        n_environments=("n_environments", "first"),
        median_cells_per_env=("median_cells_per_environment", "first"),
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="repetitions (seeds 0..reps-1)")
    parser.add_argument("--k", type=int, default=1, help="changes per arc")
    parser.add_argument("--profile", default="local", help="experiment profile (default: local)")
    parser.add_argument("--environments", default="subclusters", choices=["subclusters", "cell_types"])
    parser.add_argument("--latents", default="weakly_correlated", choices=["weakly_correlated", "house_keeping"])
    parser.add_argument("--max-corr", type=float, default=None, help="cap on the latent genes' |correlation|")
    parser.add_argument("--min-r2", type=float, default=None, help="smallest CV R² of a latent gene on the inputs")
    parser.add_argument("--resolution", type=float, default=None, help="Louvain resolution of the sub-clusters")
    parser.add_argument("--n-genes", type=int, default=None, help="number of latent genes (default: the profile's 5)")
    parser.add_argument("--tag", default="", help="suffix of the CSV's name")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    results = sctbr.experiments.semisynthetic_sweep(
        args.profile,
        environments=args.environments,
        latents=args.latents,
        semi_ks=(args.k,),
        semi_n_repeats=args.reps,
        **{
            field: value
            for field, value in {
                "max_latent_corr": args.max_corr,
                "min_latent_r2": args.min_r2,
                "subcluster_resolution": args.resolution,
                "n_latent_genes": args.n_genes,
            }.items()
            if value is not None
        },
    )
    minutes = (time.perf_counter() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.environments}_{args.latents}{args.tag}.csv"
    results.to_csv(path, index=False)

    first = results.iloc[0]
    print(
        f"{args.environments} x {args.latents}, k = {args.k}, profile {args.profile}: {first['n_environments']} "
        f"environments (median {first['median_cells_per_environment']:.0f} cells), {first['n_obs']} cells, "
        f"{first['n_inputs']} inputs, latent genes {first['latent_genes']}; {minutes:.1f} min"
    )
    pd.set_option("display.width", 160)
    print("\nper repetition:")
    wide = results.pivot_table(index="seed", columns="method", values=["mcc", "chance_mcc_fit", "span_r2"])
    wide.columns = [f"{m}_{v}" for v, m in wide.columns]
    wide["chance_mcc"] = results.groupby("seed")["chance_mcc"].first()
    print(wide.round(3).to_string())
    table = summary(results)
    print("\nsummary (mean ± sd over repetitions):")
    for method, row in table.iterrows():
        print(
            f"  {method:9s} MCC {row['mcc_mean']:.3f} ± {row['mcc_sd']:.3f}   span R² {row['span_r2']:.3f}   "
            f"chance of its span {row['chance_mcc_fit']:.3f}   (chance {row['chance_mcc']:.3f}, n = {row['n']})"
        )
    if {"tbr", "baseline"} <= set(table.index):
        gap = table.loc["tbr", "mcc_mean"] - table.loc["baseline", "mcc_mean"]
        print(f"  TBR - baseline: {gap:+.3f}")
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    main()
