"""Why do some small-data fits miss a latent? The weakest latent's share of the phenotype, next to each fit.

For every default fit of ``small_data.py`` (``benchmarks/results/small_data/fits.csv``: 5 latents, k = 1, MLP),
this re-simulates the data (same seeds, no fitting) and computes how much of the phenotype's signal each true
latent carries: with unit-variance latents and the head ``w_e`` of each cell's environment, latent ``j``'s share
is ``mean_cells(w_ej^2) / sum_j mean_cells(w_ej^2)``. It prints, per cells per environment, the rank correlation
between the weakest latent's share and the fit's span R² (the smallest R² of a true latent regressed on the fitted
latents: 1 when the encoder captured every latent) and MCC, and the median weakest share of the fits whose
encoder missed a latent (span R² < 0.85) against the others. Writes ``weak_latents.csv`` next to ``fits.csv``.

    python benchmarks/weak_latents.py          # seconds: simulations only
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def latent_shares(adata) -> np.ndarray:
    """Each true latent's share of the phenotype's signal variance (unit-variance latents, cells' own heads)."""
    sim = adata.uns["simulation"]
    weights = np.asarray(sim["weights"]) * adata.obsm["Z_true"].std(axis=0)
    row = {str(n): i for i, n in enumerate(np.asarray(sim["nodes"]).astype(str))}
    per_cell = weights[[row[e] for e in adata.obs["environment"].astype(str)]]
    power = (per_cell**2).mean(axis=0)
    return power / power.sum()


def main(argv=None) -> pd.DataFrame:
    from small_data import simulate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fits", type=Path, default=Path(__file__).parent / "results" / "small_data" / "fits.csv")
    p.add_argument("--missed", type=float, default=0.85, help="span R² below which the encoder missed a latent")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    fits = pd.read_csv(args.fits)
    fits = fits[(fits.latents == 5) & (fits.changes == "k1") & (fits.psi == "mlp") & (fits.recipe == "default")]
    rows = []
    for r in fits.itertuples():
        shares = latent_shares(simulate(r.shape, r.cells, 5, "k1", "mlp", r.seed))
        rows.append(
            {"shape": r.shape, "cells": r.cells, "seed": r.seed, "tbr_mcc": r.tbr_mcc, "span_r2": r.tbr_span_r2}
            | {"weakest_share": float(shares.min()), "shares": ";".join(f"{s:.4f}" for s in shares)}
        )
    df = pd.DataFrame(rows)
    df.to_csv(args.fits.parent / "weak_latents.csv", index=False)
    print(
        f"{'cells':>5} {'fits':>4} {'rho(share, span)':>17} {'rho(share, MCC)':>16} {'missed':>6} "
        f"{'median share: missed':>21} {'others':>7}"
    )
    for cells, s in df.groupby("cells"):
        missed = s.span_r2 < args.missed
        print(
            f"{cells:>5} {len(s):>4} {s.weakest_share.corr(s.span_r2, method='spearman'):>17.2f} "
            f"{s.weakest_share.corr(s.tbr_mcc, method='spearman'):>16.2f} {int(missed.sum()):>6} "
            f"{s.weakest_share[missed].median():>21.3f} {s.weakest_share[~missed].median():>7.3f}"
        )
    return df


if __name__ == "__main__":
    main()
