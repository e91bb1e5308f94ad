"""Draw the images of docs/using_latents.md into docs/_static/plots/ and print the numbers quoted there.

    python docs/make_using_latents.py

Small simulations (depth-3 tree, 100 cells per environment, linear Psi, phenotype noise 0.3) and short fits on CPU
(about 25 fits, a few minutes on 2 cores): real outputs at a small scale, the settings of tests/tl/helpers.py.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import sctbr  # noqa: E402

OUT = Path(__file__).parent / "_static" / "plots"
DPI = 90
SIM = {"depth": 3, "n_obs_per_env": 100, "n_inputs": 6, "psi": "linear", "noise_y": 0.3, "random_state": 0}
FIT = {"hidden": (32,), "lr": 1e-2, "batch_size": 64, "max_epochs": 60, "accelerator": "cpu"}


def save(fig, name: str) -> None:
    fig.savefig(OUT / f"{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name}.png")


def main() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)

    # 1. the number of latents: 3 true latents, candidates 1..6
    adata = sctbr.datasets.simulate(n_latent=3, k=1, **SIM)
    sctbr.tl.select_n_latent(adata, candidates=range(1, 7), **FIT)
    res = adata.uns["tbr_n_latent"]
    print(res["curve"].round(4).to_string(), "\nchosen:", res["n_latent"], "threshold:", round(res["threshold"], 4))
    save(sctbr.pl.n_latent(adata, return_fig=True), "n_latent")

    # 2. stability: one change per arc (identified) and none (not identified), 4 seeds, 3 latents
    fig, axs = plt.subplots(1, 3, figsize=(12, 3.4))
    for k, ax in zip((1, 0), axs[:2], strict=True):
        sim = sctbr.datasets.simulate(n_latent=3, k=k, **SIM)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sctbr.tl.stability(sim, n_seeds=4, n_latent=3, **FIT)
        res = sim.uns["tbr_stability"]
        runs = sim.obsm["X_tbr_stability"].reshape(sim.n_obs, 4, 3)  # cells x (runs * latents), run by run
        true = [sctbr.metrics.mcc(sim.obsm["Z_true"], runs[:, i]) for i in range(4)]
        shown = [str(w.message)[:90] for w in caught if "stable" in str(w.message)]
        print(f"k={k}: summary {res['summary']}\n  true MCC per run {np.round(true, 3)}\n  warnings {shown}")
        print(res["per_latent"].round(3).to_string())
        sctbr.pl.stability(sim, ax=ax, show=False)
        ax.set_title(f"k = {k}: mean MCC {res['summary']['mean_mcc']:.2f}", fontsize="medium")
        if k == 0:
            sctbr.pl.stability(sim, kind="latents", ax=axs[2], show=False)
            axs[2].set_title("k = 0: per latent", fontsize="medium")
    fig.tight_layout()
    save(fig, "stability")

    # 3. effects per environment: a TBR fit on the k = 1 simulation with 3 latents
    sctbr.tl.tbr(adata, n_latent=3, random_state=0, enable_progress_bar=False, **FIT)
    effects = sctbr.tl.causal_effects(adata)
    print(effects.head(6).round(3).to_string())
    save(sctbr.pl.causal_effects(effects, return_fig=True), "causal_effects")


if __name__ == "__main__":
    main()
