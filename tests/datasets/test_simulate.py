"""The simulator follows the TBR data-generating process and records its truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import sctbr
from sctbr import EnvironmentTree
from sctbr.datasets import random_tree, simulate


def _r2_linear(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """R^2 of the least-squares fit of each column of z on x (with intercept)."""
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    resid = z - design @ coef
    return 1 - resid.var(0) / z.var(0)


# ---------------------------------------------------------------------- layout of the AnnData


def test_shapes_and_dtypes(small_adata):
    adata = small_adata
    tree = EnvironmentTree.balanced(2)
    n_env = tree.n_nodes - 1  # every non-root node is observed
    assert adata.shape == (n_env * 40, 4)
    assert adata.X.dtype == np.float32
    assert adata.obsm["Z_true"].shape == (adata.n_obs, 2)
    assert adata.obsm["Z_true"].dtype == np.float32
    assert adata.obs_names.is_unique
    assert list(adata.var_names) == ["x0", "x1", "x2", "x3"]
    assert set(adata.obs.columns) == {"environment", "y"}
    assert adata.obs["y"].dtype == np.float64
    assert np.isfinite(adata.obs["y"]).all()


def test_environment_is_categorical_in_tree_order(small_adata):
    env = small_adata.obs["environment"]
    assert isinstance(env.dtype, pd.CategoricalDtype)
    tree = EnvironmentTree.balanced(2)
    assert list(env.cat.categories) == list(tree.nodes[1:])
    # every observed environment has exactly n_obs_per_env cells
    assert env.value_counts().to_dict() == dict.fromkeys(tree.nodes[1:], 40)


def test_uns_records_tree_truth_and_defaults(small_adata):
    uns = small_adata.uns
    tree = EnvironmentTree.balanced(2)

    stored = uns["environment_tree"]
    assert stored["groupby"] == "environment"
    assert EnvironmentTree.coerce(stored) == tree

    sim = uns["simulation"]
    assert sim["root_weights"].shape == (2,)
    assert sim["deltas"].shape == (tree.n_arcs, 2)
    assert sim["weights"].shape == (tree.n_nodes, 2)
    assert list(sim["arc_labels"]) == list(tree.arc_labels)
    assert list(sim["nodes"]) == list(tree.nodes)
    assert sim["params"]["n_latent"] == 2
    assert sim["params"]["n_obs_per_env"] == 40

    assert uns["sctbr"]["target"] == "y"
    assert uns["sctbr"]["groupby"] == "environment"
    assert uns["sctbr"]["tree_key"] == "environment_tree"


def test_weights_are_root_plus_path_sums(make_adata):
    adata = make_adata(depth=3, n_latent=3, n_obs_per_env=5)
    sim = adata.uns["simulation"]
    tree = EnvironmentTree.coerce(adata.uns["environment_tree"])
    expected = sim["root_weights"][None, :] + tree.path_matrix(dtype=float) @ sim["deltas"]
    np.testing.assert_allclose(sim["weights"], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sim["weights"][0], sim["root_weights"])


@pytest.mark.parametrize("noise_y", [0.0, 0.1, 0.5])
def test_target_is_latents_times_environment_head(make_adata, noise_y):
    adata = make_adata(noise_y=noise_y, n_obs_per_env=200)
    sim = adata.uns["simulation"]
    rows = pd.Index(sim["nodes"]).get_indexer(adata.obs["environment"].astype(str))
    signal = np.einsum("ij,ij->i", adata.obsm["Z_true"].astype(np.float64), sim["weights"][rows])
    resid = adata.obs["y"].to_numpy() - signal
    if noise_y == 0:
        np.testing.assert_allclose(resid, 0, atol=1e-5)  # Z_true is stored as float32
    else:
        assert abs(resid.mean()) < 4 * noise_y / np.sqrt(adata.n_obs)
        assert resid.std() == pytest.approx(noise_y, rel=0.1)


def test_leaves_only_observes_exactly_the_leaves(make_adata):
    adata = make_adata(depth=3, leaves_only=True, n_obs_per_env=10)
    tree = EnvironmentTree.balanced(3)
    env = adata.obs["environment"]
    assert list(env.cat.categories) == list(tree.leaves)
    assert set(env.astype(str)) == set(tree.leaves)
    assert adata.n_obs == 10 * len(tree.leaves)
    # internal nodes keep their (unobserved) truth
    assert adata.uns["simulation"]["weights"].shape == (tree.n_nodes, 2)
    assert adata.uns["simulation"]["params"]["leaves_only"] is True


def test_custom_tree_newick_and_object(make_adata):
    newick = "((a,b)ab,(c,(d,e)de)cde)root;"
    from_str = make_adata(tree=newick, n_obs_per_env=5)
    tree = EnvironmentTree.from_newick(newick)
    from_obj = make_adata(tree=tree, n_obs_per_env=5)
    assert list(from_str.obs["environment"].cat.categories) == list(tree.nodes[1:])
    assert EnvironmentTree.coerce(from_str.uns["environment_tree"]) == tree
    np.testing.assert_array_equal(from_str.X, from_obj.X)
    np.testing.assert_array_equal(from_str.obs["y"], from_obj.obs["y"])


# ---------------------------------------------------------------------- seeds


def test_same_seed_same_data_different_seed_different_data(make_adata):
    a = simulate(depth=2, n_obs_per_env=20, n_inputs=3, n_latent=2, random_state=7)
    b = simulate(depth=2, n_obs_per_env=20, n_inputs=3, n_latent=2, random_state=7)
    c = simulate(depth=2, n_obs_per_env=20, n_inputs=3, n_latent=2, random_state=8)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obs["y"], b.obs["y"])
    np.testing.assert_array_equal(a.obsm["Z_true"], b.obsm["Z_true"])
    np.testing.assert_array_equal(a.uns["simulation"]["deltas"], b.uns["simulation"]["deltas"])
    assert not np.allclose(a.X, c.X)
    assert not np.allclose(a.obs["y"], c.obs["y"])
    assert not np.allclose(a.uns["simulation"]["deltas"], c.uns["simulation"]["deltas"])


# ---------------------------------------------------------------------- sparsity of the changes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_changes_one_latent_per_arc_and_every_latent(seed):
    adata = simulate(depth=3, n_latent=4, k=1, n_obs_per_env=2, n_inputs=2, random_state=seed)
    deltas = adata.uns["simulation"]["deltas"]
    assert ((deltas != 0).sum(axis=1) == 1).all()
    assert (deltas != 0).any(axis=0).all()


def test_k2_changes_two_latents_per_arc():
    deltas = simulate(depth=3, n_latent=4, k=2, n_obs_per_env=2, n_inputs=2).uns["simulation"]["deltas"]
    assert ((deltas != 0).sum(axis=1) == 2).all()


def test_k0_gives_no_changes():
    adata = simulate(depth=2, n_latent=3, k=0, n_obs_per_env=2, n_inputs=2)
    sim = adata.uns["simulation"]
    assert not sim["deltas"].any()
    # every node then has the root's head
    np.testing.assert_array_equal(sim["weights"], np.repeat(sim["root_weights"][None, :], len(sim["nodes"]), axis=0))


def test_float_k_is_a_bernoulli_rate():
    adata = simulate(depth=6, n_latent=5, k=0.3, n_obs_per_env=1, n_inputs=2)
    deltas = adata.uns["simulation"]["deltas"]
    assert deltas.shape == (126, 5)
    frac = (deltas != 0).mean()
    assert 0.24 <= frac <= 0.36
    # not a fixed count per arc
    assert len(np.unique((deltas != 0).sum(axis=1))) > 1
    assert (deltas != 0).any(axis=0).all()


def test_delta_scale_scales_the_changes():
    small = simulate(depth=4, n_latent=2, n_obs_per_env=1, n_inputs=2, delta_scale=0.1).uns["simulation"]["deltas"]
    big = simulate(depth=4, n_latent=2, n_obs_per_env=1, n_inputs=2, delta_scale=10.0).uns["simulation"]["deltas"]
    np.testing.assert_allclose(big, 100 * small)


# ---------------------------------------------------------------------- the map from inputs to latents


def test_linear_psi_gives_linear_latents(make_adata):
    linear = make_adata(psi="linear", noise_z=0.1)
    mlp = make_adata(psi="mlp", noise_z=0.1)
    r2_linear = _r2_linear(linear.X.astype(np.float64), linear.obsm["Z_true"].astype(np.float64))
    r2_mlp = _r2_linear(mlp.X.astype(np.float64), mlp.obsm["Z_true"].astype(np.float64))
    assert (r2_linear > 0.95).all()
    assert (r2_mlp < r2_linear).all()


def test_regulatory_psi_is_nonlinear_and_differs_from_the_mlp(make_adata):
    reg = make_adata(psi="regulatory", noise_z=0.0, n_obs_per_env=200)
    mlp = make_adata(psi="mlp", noise_z=0.0, n_obs_per_env=200)
    x = reg.X.astype(np.float64)
    z = reg.obsm["Z_true"].astype(np.float64)
    assert (_r2_linear(x, z) < 0.95).all()  # not a linear map of the inputs
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    # a different map from the MLP on the same inputs (same seed, same X)
    np.testing.assert_array_equal(reg.X, mlp.X)
    assert np.abs(np.corrcoef(z.T, mlp.obsm["Z_true"].T)[: z.shape[1], z.shape[1] :]).max() < 0.99
    assert reg.uns["simulation"]["params"]["psi"] == "regulatory"


def test_latents_are_standardised_before_noise(make_adata):
    z = make_adata(noise_z=0.0, n_obs_per_env=100).obsm["Z_true"]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 3, "n_latent": 2}, ValueError, "k"),
        ({"k": -1}, ValueError, "k"),
        ({"k": 1.0}, ValueError, "rate"),
        ({"k": 1.5}, ValueError, "rate"),
        ({"k": 0.0}, ValueError, "rate"),
        ({"k": "1"}, TypeError, "k"),
        ({"k": True}, TypeError, "k"),
        ({"psi": "relu"}, ValueError, "psi"),
        ({"depth": 0}, ValueError, "depth"),
        ({"depth": 1.5}, ValueError, "depth"),
        ({"tree": {"root": None}}, ValueError, "single node"),
        ({"n_inputs": 0}, ValueError, "n_inputs"),
        ({"n_latent": 0, "k": 0}, ValueError, "n_latent"),
        ({"n_obs_per_env": 0}, ValueError, "n_obs_per_env"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    params = {"depth": 2, "n_obs_per_env": 5, "n_inputs": 2, "n_latent": 2, **kwargs}
    with pytest.raises(error, match=match):
        simulate(**params)


# ---------------------------------------------------------------------- persistence


def test_h5ad_round_trip(small_adata, tmp_path):
    path = tmp_path / "sim.h5ad"
    small_adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, small_adata.X)
    np.testing.assert_array_equal(back.obsm["Z_true"], small_adata.obsm["Z_true"])
    pd.testing.assert_frame_equal(back.obs, small_adata.obs)
    for key in ("root_weights", "deltas", "weights"):
        np.testing.assert_array_equal(back.uns["simulation"][key], small_adata.uns["simulation"][key])
    assert list(back.uns["simulation"]["arc_labels"]) == list(small_adata.uns["simulation"]["arc_labels"])
    assert EnvironmentTree.coerce(back.uns["environment_tree"]) == EnvironmentTree.balanced(2)
    assert back.uns["environment_tree"]["groupby"] == "environment"
    assert dict(back.uns["sctbr"]) == dict(small_adata.uns["sctbr"])


# ---------------------------------------------------------------------- random trees


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_random_tree_size(n):
    tree = random_tree(n, random_state=3)
    assert len(tree.leaves) == n
    assert tree.n_nodes == 2 * n - 1
    assert tree.root == "root"
    # binary: every internal node has exactly two children
    assert all(len(tree.children(v)) in (0, 2) for v in tree.nodes)


def test_random_tree_is_reproducible_and_seeded():
    assert random_tree(12, random_state=5) == random_tree(12, random_state=5)
    trees = {random_tree(12, random_state=s) for s in range(5)}
    assert len(trees) > 1
    # Yule trees are generally unbalanced: leaves at several depths
    assert len({random_tree(12, random_state=0).depth(v) for v in random_tree(12, random_state=0).leaves}) > 1


def test_random_tree_prefix_and_bad_size():
    tree = random_tree(3, prefix="ct")
    assert all(v == "root" or v.startswith("ct") for v in tree.nodes)
    with pytest.raises(ValueError, match="n_leaves"):
        random_tree(0)
    with pytest.raises(ValueError, match="n_leaves"):
        random_tree(2.5)


def test_simulate_on_random_tree():
    tree = random_tree(6, random_state=1)
    adata = sctbr.datasets.simulate(tree=tree, leaves_only=True, n_obs_per_env=3, n_inputs=2, n_latent=2)
    assert set(adata.obs["environment"].astype(str)) == set(tree.leaves)
    assert EnvironmentTree.coerce(adata.uns["environment_tree"]) == tree
