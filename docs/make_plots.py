"""Draw the images of docs/plots.md into docs/_static/plots/ (a few minutes on 2 CPU cores).

    python docs/make_plots.py                      # fit, then draw
    python docs/make_plots.py --fit-cache fit.h5ad  # reuse (or write) the fit, to redraw without refitting

One default fit on a depth-4 simulation (tree, weights, latents, history), and the quick profile of the
``sparsity_sweep`` and ``transfer`` experiments (results plots): real outputs at a small scale, not the paper's.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import sctbr  # noqa: E402

OUT = Path(__file__).parent / "_static" / "plots"
DPI = 90
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def save(obj, name: str) -> None:
    fig = obj if isinstance(obj, plt.Figure) else obj.figure
    fig.savefig(OUT / f"{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name}.png")


def one_fit(cache: Path | None = None) -> ad.AnnData:
    """TBR and the baseline on one simulation (read from ``cache`` when it exists, else fitted and written there)."""
    if cache is not None and cache.exists():
        return ad.read_h5ad(cache)
    adata = sctbr.datasets.simulate(depth=4, n_obs_per_env=300, k=1, random_state=0)
    common = {"train_size": 0.5, "validation_size": 0.25, "random_state": 0, **QUIET}
    sctbr.tl.tbr(adata, **common)
    sctbr.tl.baseline(adata, **common)
    if cache is not None:
        adata.write_h5ad(cache)
    return adata


def plot_fit(adata: ad.AnnData) -> None:
    """Tree, weights, latents vs truth and history of the fit."""
    save(sctbr.pl.tree(adata, return_fig=True), "tree")
    save(sctbr.pl.tree(adata, radial=True, return_fig=True), "tree_radial")
    save(sctbr.pl.weights(adata, include_internal=True, return_fig=True), "weights")
    save(sctbr.pl.latents_vs_truth(adata, return_fig=True), "latents_vs_truth")
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    sctbr.pl.history(
        adata, key="tbr", metrics=["train_loss", "validation_loss", "mse_validation"], ax=axs[0], show=False
    )
    sctbr.pl.history(adata, key="baseline", ax=axs[1], show=False)
    fig.tight_layout()
    save(fig, "history")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-cache", type=Path, help="h5ad of the fit: read when it exists, else written")
    parser.add_argument("--fit-only", action="store_true", help="draw the fit's plots, not the experiments'")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    plot_fit(one_fit(args.fit_cache))
    if args.fit_only:
        return
    # the paper's Fig. 3 and Fig. 4b at the quick profile (python -m sctbr.experiments ... --profile quick)
    results = sctbr.experiments.sparsity_sweep("quick")
    save(sctbr.pl.mcc(results, return_fig=True), "mcc")
    save(sctbr.pl.prediction_error(results, log=True, return_fig=True), "prediction_error")
    save(sctbr.pl.transfer(sctbr.experiments.transfer("quick"), return_fig=True), "transfer")


if __name__ == "__main__":
    main()
