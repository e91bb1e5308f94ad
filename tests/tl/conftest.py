"""Fixtures of the ``sctbr.tl`` tests."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import sctbr  # noqa: E402
from tests.tl.helpers import FIT, STABILITY_EPOCHS, simulate  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def fitted_k1() -> ad.AnnData:
    """tl.tbr on the k = 1 simulation of the stability test, with the settings and seed of its first run
    (shared by the causal-effects and the stability tests, so fitted once; on one torch thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        adata = simulate(n_latent=2)
        sctbr.tl.tbr(adata, n_latent=2, max_epochs=STABILITY_EPOCHS, random_state=0, enable_progress_bar=False, **FIT)
    finally:
        torch.set_num_threads(before)
    return adata
