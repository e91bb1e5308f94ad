"""Draw the images of docs/plots.md into docs/_static/plots/ (a few minutes on 2 CPU cores).

    python docs/make_plots.py

The fits are small (short training on small simulations): the images show what each plot looks like, not the
paper's numbers. The transfer image uses illustrative numbers until the transfer experiment is in sctbr.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import sctbr  # noqa: E402

OUT = Path(__file__).parent / "_static" / "plots"
DPI = 90
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def save(obj, name: str) -> None:
    fig = obj if isinstance(obj, plt.Figure) else obj.figure
    fig.savefig(OUT / f"{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name}.png")


def one_fit() -> None:
    """TBR and the baseline on one simulation: tree, weights, latents vs truth, history."""
    adata = sctbr.datasets.simulate(depth=4, n_obs_per_env=300, k=1, random_state=0)
    common = {"train_size": 0.5, "validation_size": 0.25, "random_state": 0, **QUIET}
    sctbr.tl.tbr(adata, **common)
    sctbr.tl.baseline(adata, **common)
    save(sctbr.pl.tree(adata, return_fig=True), "tree")
    save(sctbr.pl.tree(adata, radial=True, return_fig=True), "tree_radial")
    save(sctbr.pl.weights(adata, include_internal=True, return_fig=True), "weights")
    save(sctbr.pl.latents_vs_truth(adata, return_fig=True), "latents_vs_truth")
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    sctbr.pl.history(adata, key="tbr", metrics=["train_loss", "validation_loss", "mse_validation"], ax=axs[0])
    sctbr.pl.history(adata, key="baseline", ax=axs[1])
    fig.tight_layout()
    save(fig, "history")


def sweep() -> pd.DataFrame:
    """A small version of the paper's Fig. 3: MCC and test MSE per k, 2 seeds, in sctbr's tidy results form."""
    rows = []
    for k in (0, 1, 2):
        for seed in (0, 1):
            adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=200, n_latent=3, k=k, random_state=seed)
            test = None
            for method, fit in (("tbr", sctbr.tl.tbr), ("baseline", sctbr.tl.baseline)):
                fit(adata, n_latent=3, max_epochs=40, train_size=0.5, validation_size=0.25, random_state=seed, **QUIET)
                test = adata.uns[method]["split"] == "test"
                err = adata.obs[f"{method}_prediction"].to_numpy() - adata.obs["y"].to_numpy()
                rows.append(
                    {
                        "method": method,
                        "k": k,
                        "seed": seed,
                        "mcc": sctbr.metrics.mcc(adata.obsm["Z_true"][test], adata.obsm[f"X_{method}"][test]),
                        "test_mse": float(np.mean(err[test] ** 2)),
                        "transfer_mse": np.nan,
                        "n_latent": 3,
                        "experiment": "docs",
                    }
                )
            print(f"k={k} seed={seed} done")
    return pd.DataFrame(rows)


def illustrative_transfer() -> pd.DataFrame:
    """Made-up transfer errors in the tidy form (the transfer experiment is not in sctbr yet)."""
    rng = np.random.default_rng(0)
    rows = [
        {"method": m, "k": k, "seed": s, "transfer_mse": float(rng.lognormal(np.log(base * (1 + 0.3 * k)), 0.3))}
        for k in (1, 2, 3)
        for s in range(5)
        for m, base in (("tbr", 0.15), ("baseline", 0.5))
    ]
    return pd.DataFrame(rows)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    one_fit()
    results = sweep()
    save(sctbr.pl.mcc(results, return_fig=True), "mcc")
    save(sctbr.pl.prediction_error(results, log=True, return_fig=True), "prediction_error")
    save(sctbr.pl.transfer(illustrative_transfer(), title="illustrative numbers", return_fig=True), "transfer")


if __name__ == "__main__":
    main()
