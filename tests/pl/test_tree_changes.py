"""``sctbr.pl.tree`` draws the support estimate: only changed entries, area proportional to |Delta|, a size legend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

import sctbr
from sctbr.tl._support import estimate_changes
from sctbr.tl._write import changes_to_uns


def _adata_with_changes():
    adata = sctbr.datasets.simulate(depth=3, n_latent=3, k=1, n_obs_per_env=100, random_state=0)
    tree = sctbr.EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    split = np.where(np.arange(adata.n_obs) % 5 == 0, "validation", "train")
    z = adata.obsm["Z_true"]
    changes = estimate_changes(
        z, adata.obs["y"].to_numpy(), adata.obs["environment"].astype(str).to_numpy(), tree, split, n_bootstrap=5
    )
    deltas = changes.delta + 1e-3  # a trained Delta: every entry non-zero
    adata.obsm["X_tbr"] = z.astype(np.float32)
    adata.obs["tbr_split"] = pd.Categorical(split)
    adata.uns["tbr"] = {
        "params": {"method": "tbr", "target": "y", "groupby": "environment", "n_latent": 3},
        "obsm_key": "X_tbr",
        "deltas": deltas,
        "environment_weights": pd.DataFrame(0.0, index=list(tree.nodes), columns=deltas.columns),
        "tree": tree.to_dict(),
        "changes": changes_to_uns(changes),
    }
    return adata, changes


def _marker_sizes(ax) -> np.ndarray:
    sizes = [c.get_sizes() for c in ax.collections if c.get_zorder() == 3]  # the change markers
    return np.concatenate(sizes) if sizes else np.empty(0)


def test_tree_draws_only_changed_entries_with_area_proportional():
    adata, changes = _adata_with_changes()
    ax = sctbr.pl.tree(adata, show=False, marker_size=100.0)
    values = np.abs(changes.delta.to_numpy())
    called = (changes.changed.to_numpy() | changes.unresolved.to_numpy()) & (values > 0)
    sizes = _marker_sizes(ax)
    assert len(sizes) == called.sum()
    values = values[called]
    np.testing.assert_allclose(np.sort(sizes), np.sort(100.0 * values / values.max()), rtol=1e-6)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("|Δ| =") for label in labels)


def test_tree_can_draw_the_trained_deltas():
    adata, _ = _adata_with_changes()
    ax = sctbr.pl.tree(adata, show=False, changes=False)
    assert len(_marker_sizes(ax)) == np.count_nonzero(pd.DataFrame(adata.uns["tbr"]["deltas"]).to_numpy())
