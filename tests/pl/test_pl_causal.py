"""``sctbr.pl.causal_effects``: one interval per environment and latent."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import sctbr  # noqa: E402
from tests.tl.helpers import with_latents  # noqa: E402


def test_pl_causal_effects_draws_one_interval_per_environment_and_latent(make_adata):
    adata = with_latents(make_adata(), np.asarray(make_adata().obsm["Z_true"]))
    table = sctbr.tl.causal_effects(adata)
    ax = sctbr.pl.causal_effects(table, show=False)
    assert isinstance(ax, Axes)
    assert len(ax.containers) == 2  # one errorbar container per latent
    for container, latent in zip(ax.containers, ["latent_0", "latent_1"], strict=True):
        x = container.lines[0].get_xdata()
        assert np.allclose(x, table.loc[table["latent"] == latent, "effect"])
    envs = [t.get_text() for t in ax.get_yticklabels()]
    assert envs == table["environment"].cat.categories.tolist()
    # from the AnnData, a subset, into given axes, and as a Figure
    fig, given = plt.subplots()
    assert sctbr.pl.causal_effects(adata, latents=["latent_1"], environments=envs[:3], ax=given, show=False) is given
    assert len(given.containers) == 1
    assert len(given.containers[0].lines[0].get_xdata()) == 3
    assert isinstance(sctbr.pl.causal_effects(table, return_fig=True), Figure)
    with pytest.raises(KeyError, match="latent_9"):
        sctbr.pl.causal_effects(table, latents=["latent_9"])
    with pytest.raises(KeyError, match="causal_effects"):
        sctbr.pl.causal_effects(table.drop(columns="ci_low"))
