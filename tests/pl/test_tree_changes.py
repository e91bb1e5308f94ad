"""``sctbr.pl.tree`` draws the support estimate: only changed entries, area proportional to |Delta|, a size legend;
``sctbr.pl.weights`` frames the same entries."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

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


def _frames(ax) -> list:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_weights_frames_the_changes_tree_draws():
    adata, changes = _adata_with_changes()
    tree = sctbr.EnvironmentTree.from_dict(adata.uns["tbr"]["tree"])
    ax = sctbr.pl.weights(adata, include_internal=True, show=False)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    values = np.abs(changes.delta.to_numpy())
    called, unres = changes.changed.to_numpy() & (values > 0), changes.unresolved.to_numpy() & (values > 0)
    # one frame per entry pl.tree marks: the column of the latent, from the arc's child down its subtree
    expected = set()
    for i, j in zip(*np.nonzero(called | unres), strict=True):
        child = tree.arcs[i][1]
        expected.add((j, rows.index(child), bool(unres[i, j])))
    got = set()
    for frame in _frames(ax):
        x, y = frame.get_xy()
        got.add((round(x + frame.get_width() / 2), round(y + 0.3), frame.get_linestyle() == "--"))
    assert len(_frames(ax)) == len(_marker_sizes(sctbr.pl.tree(adata, show=False))) == len(expected)
    assert got == expected
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "changed" in labels


def test_weights_frames_cover_the_subtree_below_the_arc():
    adata, changes = _adata_with_changes()
    tree = sctbr.EnvironmentTree.from_dict(adata.uns["tbr"]["tree"])
    ax = sctbr.pl.weights(adata, show=False)  # leaves only: a change into an internal node frames its leaves
    rows = [t.get_text() for t in ax.get_yticklabels()]
    for frame in _frames(ax):
        x, y = frame.get_xy()
        top, bottom = round(y + 0.3), round(y + frame.get_height() - 0.3)
        j = round(x + frame.get_width() / 2)
        arcs = [
            i
            for i, (_, child) in enumerate(tree.arcs)
            if sorted(rows.index(leaf) for leaf in tree.leaves if leaf in _below(tree, child))
            == list(range(top, bottom + 1))
        ]
        assert any(changes.changed.to_numpy()[i, j] or changes.unresolved.to_numpy()[i, j] for i in arcs)


def test_weights_can_frame_the_trained_deltas_or_nothing():
    adata, _ = _adata_with_changes()
    n_trained = np.count_nonzero(pd.DataFrame(adata.uns["tbr"]["deltas"]).to_numpy())
    assert len(_frames(sctbr.pl.weights(adata, include_internal=True, changes=False, show=False))) == n_trained
    ax = sctbr.pl.weights(adata, changes=None, show=False)
    assert not _frames(ax)
    assert ax.get_legend() is None


def _below(tree, node: str) -> set[str]:
    out, stack = set(), [node]
    while stack:
        n = stack.pop()
        out.add(n)
        stack.extend(tree.children(n))
    return out
