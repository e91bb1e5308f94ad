"""The scvi-tools style model :class:`sctbr.model.TBR`: setup, constructor, a trained model, variants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sctbr
from sctbr import EnvironmentTree
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(2)  # the tree of the small simulation


def fit(adata, fast_model_kwargs, fast_train_kwargs, *, setup=None, train=None, **model_kwargs):
    """Register, build and train a small TBR; returns the model."""
    TBR.setup_anndata(adata, target="y", groupby="environment", **(setup or {}))
    kwargs = {**fast_model_kwargs, **model_kwargs}
    kwargs.setdefault("tree", adata.uns["environment_tree"])
    model = TBR(adata, **kwargs)
    model.train(**{**fast_train_kwargs, **(train or {})})
    return model


@pytest.fixture(scope="module")
def trained(make_adata, torch_single_thread, fast_model_kwargs, fast_train_kwargs):
    adata = make_adata()
    return fit(adata, fast_model_kwargs, fast_train_kwargs)


# ---------------------------------------------------------------------- setup_anndata


def _with(adata, **obs):
    for key, value in obs.items():
        adata.obs[key] = value
    return adata


@pytest.mark.parametrize(
    ("prepare", "kwargs", "error", "match"),
    [
        (lambda a: a, {"target": "nope"}, KeyError, "nope"),
        (
            lambda a: _with(a, label=np.where(np.arange(a.n_obs) % 2, "hi", "lo")),
            {"target": "label"},
            TypeError,
            "numeric",
        ),
        (lambda a: _with(a, flag=np.arange(a.n_obs) % 2 == 0), {"target": "flag"}, TypeError, "numeric"),
        (lambda a: _with(a, y=np.r_[np.nan, a.obs["y"].to_numpy()[1:]]), {}, ValueError, "NaN"),
        (lambda a: _with(a, y=np.r_[np.inf, a.obs["y"].to_numpy()[1:]]), {}, ValueError, "infinite"),
        (lambda a: _with(a, y=np.ones(a.n_obs)), {}, ValueError, "constant"),
        (lambda a: a, {"groupby": "cell_type"}, KeyError, "cell_type"),
        (
            lambda a: _with(a, environment=a.obs["environment"].cat.add_categories("x").where(np.arange(a.n_obs) > 0)),
            {},
            ValueError,
            "missing",
        ),
        (lambda a: a, {"layer": "counts"}, KeyError, "counts"),
        (lambda a: a, {"var_names": ["x0", "gene9"]}, KeyError, "gene9"),
        (lambda a: a, {"var_names": []}, ValueError, "empty"),
        (lambda a: a[:0].copy(), {}, ValueError, "empty"),
        (lambda a: a[:, :0].copy(), {}, ValueError, "empty"),
    ],
)
def test_setup_anndata_errors(small_adata, prepare, kwargs, error, match):
    adata = prepare(small_adata)
    uns_before = set(adata.uns.keys())
    with pytest.raises(error, match=match):
        TBR.setup_anndata(adata, **{"target": "y", "groupby": "environment", **kwargs})
    assert set(adata.uns.keys()) == uns_before  # nothing registered


# ---------------------------------------------------------------------- constructor


def test_tree_missing_environments_are_named(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    parents = {v: TREE.parent(v) for v in TREE.nodes if v not in ("n10", "n11")}
    with pytest.raises(ValueError, match=r"2 environments.*'n10', 'n11'"):
        TBR(small_adata, tree=parents, n_latent=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_latent": 0}, "n_latent"),
        ({"n_latent": -2}, "n_latent"),
        ({"n_latent": 1.5}, "n_latent"),
        ({"penalty": "l2"}, "penalty"),
        ({"lam": -0.1}, "lam"),
        ({"tree": None}, "tree"),
    ],
)
def test_constructor_errors(small_adata, kwargs, match):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    params = {"tree": small_adata.uns["environment_tree"], "n_latent": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        TBR(small_adata, **params)


def test_module_dimensions(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE.to_newick(), n_latent=3, hidden=(8, 5))
    assert model.module.n_input == 4
    assert model.module.n_latent == 3
    assert tuple(model.module.delta.shape) == (TREE.n_arcs, 3)
    assert model.environments_ == list(TREE.nodes[1:])
    assert model.tree == TREE


def test_outputs_need_training(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE, n_latent=2, hidden=(8,))
    with pytest.raises(RuntimeError):
        model.get_latent_representation()


# ---------------------------------------------------------------------- a trained model


@pytest.fixture
def trained_history(trained) -> dict:
    """The history alone: a failing test that takes the model as argument makes pytest repr it, which scvi prints."""
    return dict(trained.history)


def test_latents_shape_and_finite(trained):
    z = trained.get_latent_representation()
    assert z.shape == (trained.adata.n_obs, 2)
    assert np.isfinite(z).all()
    # standardised latents (running statistics of the training cells): about unit scale, not collapsed
    assert (z.std(0) > 0.1).all()
    assert (z.std(0) < 10).all()


def test_predict_matches_latents_and_environment_weights(trained):
    pred = trained.predict()
    assert pred.shape == (trained.adata.n_obs,)
    assert np.isfinite(pred).all()
    z = trained.get_latent_representation()
    weights = trained.get_environment_weights()
    env = trained.adata.obs["environment"].astype(str)
    linear = np.einsum("ij,ij->i", z.astype(np.float64), weights.loc[env].to_numpy())
    # prediction = z . w_env (target units) + one intercept shared by every cell
    offset = pred - linear
    np.testing.assert_allclose(offset, offset.mean(), atol=1e-4 * max(1.0, np.abs(pred).max()))


def test_environment_weights_cover_the_tree_and_sum_deltas(trained):
    weights = trained.get_environment_weights()
    deltas = trained.get_deltas()
    assert list(weights.index) == list(TREE.nodes)  # internal nodes (and the root) included
    assert list(weights.columns) == ["latent_0", "latent_1"]
    assert list(deltas.index) == list(TREE.arc_labels)
    assert list(deltas.columns) == ["latent_0", "latent_1"]
    expected = weights.loc["root"].to_numpy()[None, :] + TREE.path_matrix(dtype=float) @ deltas.to_numpy()
    np.testing.assert_allclose(weights.to_numpy(), expected, rtol=1e-10, atol=1e-12)
    assert np.abs(deltas.to_numpy()).sum() > 0


def test_history_has_training_metrics(trained):
    history = trained.history
    for key in ("train_loss", "mse_train"):
        assert key in history
        values = history[key].iloc[:, 0].to_numpy(dtype=float)
        assert len(values) == 3  # one row per epoch, across all stages
        assert np.isfinite(values).all()


def test_history_has_validation_metrics(trained_history):
    history = trained_history
    missing = [k for k in ("train_loss", "validation_loss", "mse_train", "mse_validation") if k not in history]
    assert not missing
    assert all(len(history[k]) == 3 for k in history)


def test_refinement_stats(trained):
    stats = trained.refinement_
    assert set(stats) >= {"penalty_before", "penalty_after", "basis"}
    assert np.isfinite(stats["penalty_before"])
    assert stats["penalty_after"] <= stats["penalty_before"] + 1e-9
    assert stats["basis"].shape == (2, 2)
    assert abs(np.linalg.det(stats["basis"])) > 1e-6


def test_split_indices_are_stored(trained):
    train, val, test = trained.train_indices, trained.validation_indices, trained.test_indices
    assert len(train) + len(val) + len(test) == trained.adata.n_obs
    assert len(np.intersect1d(train, val)) == 0
    env = trained.adata.obs["environment"].to_numpy()
    assert set(env[train]) == set(TREE.nodes[1:])


def test_outputs_on_a_copy_of_the_anndata(trained):
    other = trained.adata.copy()
    np.testing.assert_allclose(trained.get_latent_representation(other), trained.get_latent_representation())
    np.testing.assert_allclose(trained.predict(other), trained.predict())


def test_latents_do_not_depend_on_batching_or_other_cells(trained):
    z = trained.get_latent_representation()
    np.testing.assert_allclose(trained.get_latent_representation(batch_size=7), z, atol=1e-6)
    subset = trained.adata[20:50].copy()
    np.testing.assert_allclose(trained.get_latent_representation(subset), z[20:50], atol=1e-6)
    np.testing.assert_allclose(trained.predict(subset), trained.predict()[20:50], atol=1e-5)


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "model"
    trained.save(path, overwrite=True)
    loaded = TBR.load(path, adata=trained.adata, accelerator="cpu")
    np.testing.assert_array_equal(loaded.get_latent_representation(), trained.get_latent_representation())
    np.testing.assert_array_equal(loaded.predict(), trained.predict())
    pd.testing.assert_frame_equal(loaded.get_environment_weights(), trained.get_environment_weights())
    assert loaded.tree == trained.tree
    assert loaded.environments_ == trained.environments_


# ---------------------------------------------------------------------- variants


def test_baseline_has_one_head(small_adata, fast_model_kwargs, fast_train_kwargs):
    model = fit(small_adata, fast_model_kwargs, fast_train_kwargs, baseline=True)
    deltas = model.get_deltas()
    weights = model.get_environment_weights()
    assert deltas.shape == (TREE.n_arcs, 2)
    assert (deltas.to_numpy() == 0).all()
    assert list(weights.index) == list(TREE.nodes)
    assert (weights.to_numpy() == weights.to_numpy()[0]).all()
    assert np.abs(weights.to_numpy()).sum() > 0
    assert not hasattr(model, "refinement_")  # no tree, nothing to refine


def test_baseline_without_tree(small_adata, fast_model_kwargs, fast_train_kwargs):
    model = fit(small_adata, fast_model_kwargs, fast_train_kwargs, baseline=True, tree=None)
    # a star over the environments
    assert model.tree.root == "root"
    assert set(model.tree.leaves) == set(TREE.nodes[1:])
    assert model.get_latent_representation().shape == (small_adata.n_obs, 2)


def test_same_seed_same_latents_different_seed_different(make_adata, fast_model_kwargs, fast_train_kwargs):
    z = [
        fit(make_adata(), fast_model_kwargs, fast_train_kwargs, random_state=seed).get_latent_representation()
        for seed in (0, 0, 1)
    ]
    np.testing.assert_array_equal(z[0], z[1])
    assert not np.allclose(z[0], z[2], atol=1e-3)


def test_training_seed_changes_latents(make_adata, fast_model_kwargs, fast_train_kwargs):
    z0 = fit(make_adata(), fast_model_kwargs, fast_train_kwargs, train={"random_state": 0})
    z1 = fit(make_adata(), fast_model_kwargs, fast_train_kwargs, train={"random_state": 1})
    assert not np.allclose(z0.get_latent_representation(), z1.get_latent_representation(), atol=1e-3)


def test_sparse_inputs_match_dense(make_adata, fast_model_kwargs, fast_train_kwargs):
    dense = make_adata()
    sparse = make_adata()
    sparse.X = sp.csr_matrix(sparse.X)
    z_dense = fit(dense, fast_model_kwargs, fast_train_kwargs).get_latent_representation()
    model = fit(sparse, fast_model_kwargs, fast_train_kwargs)
    np.testing.assert_allclose(model.get_latent_representation(), z_dense, atol=1e-5)
    assert sp.issparse(sparse.X)  # the user's matrix is not densified in place


def test_layer_is_used(make_adata, fast_model_kwargs, fast_train_kwargs):
    z_x = fit(make_adata(), fast_model_kwargs, fast_train_kwargs).get_latent_representation()
    adata = make_adata()
    adata.layers["inputs"] = adata.X.copy()
    adata.X = np.random.default_rng(0).normal(size=adata.shape).astype(np.float32)  # decoy
    model = fit(adata, fast_model_kwargs, fast_train_kwargs, setup={"layer": "inputs"})
    np.testing.assert_allclose(model.get_latent_representation(), z_x, atol=1e-5)


def test_var_names_subset_is_used(small_adata, fast_model_kwargs, fast_train_kwargs):
    model = fit(small_adata, fast_model_kwargs, fast_train_kwargs, setup={"var_names": ["x0", "x2"]})
    assert model.module.n_input == 2
    z = model.get_latent_representation()
    small_adata.X[:, 1] += 100.0  # not selected: no effect
    small_adata.X[:, 3] = np.nan  # not selected: not even checked
    np.testing.assert_array_equal(model.get_latent_representation(), z)
    small_adata.X[:, 0] += 1.0  # selected
    assert not np.allclose(model.get_latent_representation(), z)


def test_nan_inputs_raise_before_training(small_adata, fast_model_kwargs, fast_train_kwargs, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(TBR, "_run_fit", no_training)
    small_adata.X[3, 1] = np.nan
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE, **fast_model_kwargs)
    with pytest.raises(ValueError, match="NaN"):
        model.train(**fast_train_kwargs)
    assert not model.is_trained_


def test_proximal_steps_give_exact_zeros(make_adata, fast_model_kwargs, fast_train_kwargs):
    # the training steps alone (the final refinement re-solves the heads exactly, with zeros either way)
    args = (fast_model_kwargs, fast_train_kwargs)
    train = {"final_refine": False}
    prox = fit(make_adata(), *args, lam=1.0, train=train).get_deltas().to_numpy()
    assert (prox == 0).sum() > 0
    assert np.isfinite(prox).all()
    smooth = fit(make_adata(), *args, lam=1.0, proximal=False, train=train).get_deltas().to_numpy()
    assert (smooth == 0).sum() < (prox == 0).sum()


def test_training_without_validation(small_adata, fast_model_kwargs, fast_train_kwargs):
    model = fit(small_adata, fast_model_kwargs, fast_train_kwargs, train={"validation_size": 0.0, "train_size": 0.9})
    assert len(model.validation_indices) == 0
    assert model.is_trained_
    assert np.isfinite(model.get_latent_representation()).all()


@pytest.mark.filterwarnings("ignore:Category .* has fewer than")
def test_too_few_cells_in_an_environment(small_adata, fast_model_kwargs, fast_train_kwargs):
    keep = (small_adata.obs["environment"] != "n01").to_numpy()
    keep[np.flatnonzero(~keep)[0]] = True  # a single cell of n01
    adata = small_adata[keep].copy()
    with pytest.raises(ValueError, match="too few cells.*'n01' \\(1 cells\\)"):
        fit(adata, fast_model_kwargs, fast_train_kwargs)


def test_bad_fit_fraction(small_adata, fast_model_kwargs, fast_train_kwargs):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE, **fast_model_kwargs)
    with pytest.raises(ValueError, match="fit_fraction"):
        model.train(fit_fraction=1.5, **fast_train_kwargs)


def test_plain_recipe_trains(small_adata, fast_model_kwargs, fast_train_kwargs):
    """refine=False and fit_fraction=0: penalised training from the start, as in the paper."""
    model = fit(small_adata, fast_model_kwargs, fast_train_kwargs, train={"refine": False, "fit_fraction": 0.0})
    assert not hasattr(model, "refinement_")
    assert len(model.history["train_loss"]) == 3
    assert np.isfinite(model.get_deltas().to_numpy()).all()


def test_model_is_exported():
    assert sctbr.model.TBR is TBR


def test_early_stopping_stops_on_the_validation_objective(make_adata):
    """With patience 1 and a huge max_epochs, early stopping must end the fit long before max_epochs."""
    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=2, hidden=(8,))
    model.train(
        max_epochs=400,
        fit_fraction=1.0,
        refine=False,
        lr=0.3,  # large and constant-ish: validation loss stops improving quickly
        early_stopping=True,
        early_stopping_patience=1,
        early_stopping_min_delta=1.0,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    n_epochs = len(model.history["validation_loss"])
    assert 1 <= n_epochs < 50


def test_latents_stay_standardised_after_every_training_stage(make_adata):
    """Each stage trains in train mode, so the running statistics keep the latents at unit variance."""
    adata = make_adata(n_obs_per_env=150)
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=2, hidden=(16,))
    model.train(max_epochs=40, accelerator="cpu", enable_progress_bar=False)
    z = model.get_latent_representation()
    np.testing.assert_allclose(z.std(0), 1.0, atol=0.15)
    assert model.module.standardize.num_batches_tracked > 0
