"""``sctbr.pl.stability`` and ``sctbr.pl.n_latent``: the matrix or the latents, the chosen size."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import sctbr  # noqa: E402
from tests.tl.helpers import fake_fit_once  # noqa: E402


def _fake_stability() -> dict:
    matrix = pd.DataFrame([[1.0, 0.95, 0.5], [0.95, 1.0, 0.55], [0.5, 0.55, 1.0]], index=["0", "1", "2"])
    matrix.columns = ["0", "1", "2"]
    per = pd.DataFrame({"latent": ["latent_0", "latent_1"], "mean_abs_corr": [0.97, 0.5], "min_abs_corr": [0.9, 0.3]})
    per["stable"] = per["mean_abs_corr"] >= 0.9
    return {"matrix": matrix, "per_latent": per, "summary": {"mean_mcc": 0.667, "threshold": 0.9}}


def test_pl_stability_draws_the_matrix_or_the_latents():
    res = _fake_stability()
    ax = sctbr.pl.stability(res, show=False)
    assert np.allclose(ax.images[0].get_array(), res["matrix"].to_numpy())
    assert "0.67" in ax.get_title()
    assert len(ax.texts) == 9
    ax = sctbr.pl.stability(res, kind="latents", show=False)
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.97, 0.5])
    assert any(np.allclose(line.get_ydata(), 0.9) for line in ax.get_lines())  # the threshold
    adata = ad.AnnData(np.zeros((3, 1)))
    adata.uns["tbr_stability"] = res
    assert isinstance(sctbr.pl.stability(adata, return_fig=True), Figure)
    with pytest.raises(KeyError, match=r"sctbr.tl.stability\(adata"):
        sctbr.pl.stability(ad.AnnData(np.zeros((3, 1))))
    with pytest.raises(ValueError, match="kind"):
        sctbr.pl.stability(res, kind="bars")


def test_pl_n_latent_marks_the_chosen_size(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", fake_fit_once({1: 1.0, 2: 0.21, 3: 0.2, 4: 0.2}))
    adata = make_adata()
    sctbr.tl.select_n_latent(adata, candidates=range(1, 5))
    ax = sctbr.pl.n_latent(adata, show=False)
    assert isinstance(ax, Axes)
    vertical = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), 2) and len(line.get_xdata()) == 2]
    assert vertical, "the chosen size (2) is marked by a vertical line"
    assert any("chosen: 2" in t.get_text() for t in ax.get_legend().get_texts())
    fig, given = plt.subplots()
    assert sctbr.pl.n_latent(adata.uns["tbr_n_latent"], ax=given, log=True, show=False) is given
    assert given.get_yscale() == "log"
    with pytest.raises(KeyError, match="select_n_latent"):
        sctbr.pl.n_latent(ad.AnnData(np.zeros((3, 1))))
