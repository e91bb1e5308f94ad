"""The support estimate of Delta with the latents fixed (``sctbr.tl._support``, ``sctbr._heads_lasso``).

No training: the latents are the simulation's true ones (a perfect encoder), slightly mixed, so the tests check the
estimator itself. Bars measured on these settings (seeds 0-2): F1 1.0 on all-nodes trees with a 2% mixing; they
fail when the estimator drifts back to "every non-zero entry is a change" (F1 ~0.4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sctbr
from sctbr import _heads_lasso as hl
from sctbr.metrics import support_recovery
from sctbr.tl._support import estimate_changes, unresolved_pairs
from sctbr.tl._write import changes_to_uns


def _split(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.8, "train", "validation")


def _estimate(adata, seed: int, mixing: float = 0.02, **kwargs):
    rng = np.random.default_rng(seed)
    z = adata.obsm["Z_true"]
    z = z @ (np.eye(z.shape[1]) + mixing * rng.normal(size=(z.shape[1], z.shape[1])))
    z = (z - z.mean(0)) / z.std(0)
    tree = sctbr.EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    changes = estimate_changes(
        z,
        adata.obs["y"].to_numpy(),
        adata.obs["environment"].astype(str).to_numpy(),
        tree,
        _split(adata.n_obs, seed),
        n_bootstrap=10,
        **kwargs,
    )
    truth = pd.DataFrame(
        np.asarray(adata.uns["simulation"]["deltas"], dtype=float),
        index=np.asarray(adata.uns["simulation"]["arc_labels"]).astype(str),
    ).loc[list(tree.arc_labels)]
    return changes, truth.to_numpy(), tree


@pytest.mark.parametrize("seed", [0, 1])
def test_changed_set_recovers_the_truth(seed):
    adata = sctbr.datasets.simulate(depth=3, n_latent=3, k=1, n_obs_per_env=150, random_state=seed)
    changes, truth, tree = _estimate(adata, seed)
    called = changes.changed.to_numpy() | changes.unresolved.to_numpy()
    res = support_recovery(truth, called.astype(float))
    assert res["f1"] >= 0.85, res
    # the trained-Delta habit of many tiny non-zero entries is what the estimate removes
    assert called.sum() <= 1.3 * (truth != 0).sum()


def test_no_changes_called_when_nothing_changes():
    adata = sctbr.datasets.simulate(depth=3, n_latent=3, k=0, n_obs_per_env=150, random_state=0)
    changes, truth, _ = _estimate(adata, 0)
    assert (truth == 0).all()
    assert changes.changed.to_numpy().mean() < 0.05


def test_root_pair_is_unresolved_and_never_changed():
    adata = sctbr.datasets.simulate(depth=3, n_latent=3, k=1, n_obs_per_env=150, random_state=0)
    changes, _, tree = _estimate(adata, 0)
    pairs = unresolved_pairs(tree, adata.obs["environment"].astype(str).unique())
    root_arcs = {tree.arc_index(c) for c in tree.children(tree.root)}
    assert pairs
    assert {pairs[0][0], pairs[0][1]} == root_arcs
    assert not (changes.changed.to_numpy() & changes.unresolved.to_numpy()).any()
    assert changes.unresolved.to_numpy()[sorted(root_arcs)].any()


def test_unary_node_pairs_parent_and_child_arc():
    tree = sctbr.EnvironmentTree({"a": "root", "b": "a", "c": "root"})
    pairs = unresolved_pairs(tree, ["b", "c"])
    assert (tree.arc_index("a"), tree.arc_index("b"), 1) in pairs


def test_solver_matches_least_squares_without_penalty():
    adata = sctbr.datasets.simulate(depth=2, n_latent=3, k=1, n_obs_per_env=80, random_state=3)
    tree = sctbr.EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    nodes = adata.obs["environment"].astype(str).to_numpy()
    observed = sorted(set(nodes))
    env = pd.Index(observed).get_indexer(nodes)
    path = tree.path_matrix(observed, dtype=np.float64)
    z, y = adata.obsm["Z_true"], adata.obs["y"].to_numpy()
    prob = hl.Problem(hl.moments(z, y, env, path))
    theta = prob.solve(0.0, max_iter=50000, tol=1e-12)
    # the same fit as one big design matrix
    p = np.asarray(path.toarray())[env]
    design = np.column_stack([np.ones(len(y)), z, (p[:, :, None] * z[:, None, :]).reshape(len(y), -1)])
    pred_ls = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(design @ theta, pred_ls, atol=1e-4)
    # a large penalty zeros Delta exactly
    assert (prob.split(prob.solve(2 * prob.lam_max()))[1] == 0).all()


def test_changes_are_h5ad_writable_and_tidy(h5ad_roundtrip):
    adata = sctbr.datasets.simulate(depth=2, n_latent=3, k=1, n_obs_per_env=80, random_state=0)
    changes, _, tree = _estimate(adata, 0)
    adata.uns["tbr"] = {"changes": changes_to_uns(changes)}
    back = h5ad_roundtrip(adata).uns["tbr"]["changes"]
    pd.testing.assert_frame_equal(pd.DataFrame(back["frequency"]), changes.frequency, check_names=False)
    tidy = changes.tidy()
    assert list(tidy.columns) == ["arc", "latent", "delta", "frequency", "changed", "unresolved"]
    assert len(tidy) == tree.n_arcs * 3
    assert tidy.loc[tidy["changed"], "frequency"].min() >= changes.min_frequency


def test_unknown_method_is_refused():
    adata = sctbr.datasets.simulate(depth=2, n_latent=3, k=1, n_obs_per_env=40, random_state=0)
    with pytest.raises(ValueError, match="method"):
        _estimate(adata, 0, method="nope")
