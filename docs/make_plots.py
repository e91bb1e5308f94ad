"""Draw the images of docs/plots.md into docs/_static/plots/ (a few minutes on 2 CPU cores).

    python docs/make_plots.py

One default fit on a depth-4 simulation (tree, weights, latents, history), and the quick profile of the
``sparsity_sweep`` and ``transfer`` experiments (results plots): real outputs at a small scale, not the paper's.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

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
    sctbr.pl.history(
        adata, key="tbr", metrics=["train_loss", "validation_loss", "mse_validation"], ax=axs[0], show=False
    )
    sctbr.pl.history(adata, key="baseline", ax=axs[1], show=False)
    fig.tight_layout()
    save(fig, "history")


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    one_fit()
    # the paper's Fig. 3 and Fig. 4b at the quick profile (python -m sctbr.experiments ... --profile quick)
    results = sctbr.experiments.sparsity_sweep("quick")
    save(sctbr.pl.mcc(results, return_fig=True), "mcc")
    save(sctbr.pl.prediction_error(results, log=True, return_fig=True), "prediction_error")
    save(sctbr.pl.transfer(sctbr.experiments.transfer("quick"), return_fig=True), "transfer")


if __name__ == "__main__":
    main()
