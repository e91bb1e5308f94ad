"""Transfer to environments without training cells: nearest-environment prediction and few-shot adaptation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sctbr
from sctbr import EnvironmentTree
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")

HELD_OUT = "n11"  # a leaf of the depth-2 tree; its parent n1 has training cells
NEIGHBOUR = "n1"
# Seed 1 of this simulation changes latent 0 on the arc n1 -> n11, and latent 0 also changes on other (observed)
# arcs, so the trained encoder represents it (a latent that never matters in training cannot be adapted).
SIMULATION = {"depth": 2, "n_obs_per_env": 300, "n_inputs": 6, "n_latent": 2, "k": 1, "psi": "linear"}


def _snapshot(adata):
    return adata.obs.copy(), sorted(adata.uns.keys()), adata.X.copy(), sorted(adata.obsm.keys())


def _assert_untouched(adata, snap):
    obs, uns, x, obsm = snap
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert sorted(adata.uns.keys()) == uns
    assert sorted(adata.obsm.keys()) == obsm
    np.testing.assert_array_equal(adata.X, x)


@pytest.fixture(scope="module")
def setting(torch_single_thread):
    """A TBR trained without the held-out leaf (whose node stays in the tree), and the held-out cells."""
    adata = sctbr.datasets.simulate(**SIMULATION, random_state=1)
    held = (adata.obs["environment"] == HELD_OUT).to_numpy()
    train = adata[~held].copy()
    new = adata[held].copy()
    TBR.setup_anndata(train, target="y", groupby="environment")
    model = TBR(train, tree=adata.uns["environment_tree"], n_latent=2, hidden=(32,), random_state=0)
    model.train(max_epochs=100, accelerator="cpu", enable_progress_bar=False, random_state=0)
    sim = adata.uns["simulation"]
    weights = pd.DataFrame(np.asarray(sim["weights"]), index=[str(n) for n in sim["nodes"]])
    return {"model": model, "train": train, "new": new, "true_weights": weights}


def _mse(a, b):
    return float(np.mean((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2))


def _intercept(model):
    m = model.module
    return float(m.bias.detach()[0] * m.y_std[0] + m.y_mean[0])


# ---------------------------------------------------------------------- the tree


def test_add_node_returns_a_new_validated_tree():
    tree = EnvironmentTree({"b": "a", "c": "a"})
    bigger = tree.add_node("d", "b")
    assert bigger.parent("d") == "b"
    assert "d" not in tree
    assert tree.n_nodes == 3
    with pytest.raises(KeyError, match="unknown node 'zzz'"):
        tree.add_node("d", "zzz")
    with pytest.raises(ValueError, match="already in the tree"):
        tree.add_node("c", "b")


# ---------------------------------------------------------------------- nearest-environment rule


def test_nearest_observed_follows_tree_distance_with_documented_ties(setting):
    model = setting["model"]
    assert model.nearest_observed(HELD_OUT) == NEIGHBOUR  # in the tree, no training cells
    assert model.nearest_observed(NEIGHBOUR) == NEIGHBOUR  # observed: itself
    assert model.nearest_observed("new", parent="n00") == "n00"
    # under the (unobserved) root, n0 and n1 are both 2 arcs away: the first in breadth-first order wins
    assert model.nearest_observed("new", parent="root") == "n0"


def test_nearest_rule_prediction_is_the_neighbours_head(setting):
    model, new = setting["model"], setting["new"]
    pred = model.predict(new, environment=HELD_OUT)
    # by hand: latents @ the neighbour's head (target units) + the shared intercept
    z = model.get_latent_representation(new).astype(np.float64)  # works for a cell type without training cells
    head = model.get_environment_weights().loc[NEIGHBOUR].to_numpy()
    by_hand = z @ head + _intercept(model)
    np.testing.assert_allclose(pred, by_hand, rtol=1e-4, atol=1e-4)
    y = new.obs["y"].to_numpy()
    assert _mse(pred, y) == pytest.approx(_mse(by_hand, y), rel=1e-4)
    # and it is what the ordinary path gives when the cells are labelled as the neighbour
    relabelled = new.copy()
    relabelled.obs["environment"] = pd.Categorical([NEIGHBOUR] * new.n_obs)
    np.testing.assert_allclose(pred, model.predict(relabelled), rtol=1e-5, atol=1e-5)
    # a new node under the neighbour, given by `parent`, is predicted the same way
    np.testing.assert_allclose(model.predict(new, environment="new type", parent=NEIGHBOUR), pred)


def test_predict_with_the_head_of_any_node(setting):
    model, new = setting["model"], setting["new"]
    z = model.get_latent_representation(new).astype(np.float64)
    weights = model.get_environment_weights()
    for node in ("n00", "root"):  # an observed leaf, the unobserved root (its own head, rule="own")
        pred = model.predict(new, environment=node, rule="own")
        np.testing.assert_allclose(pred, z @ weights.loc[node].to_numpy() + _intercept(model), rtol=1e-4, atol=1e-4)
    # a new node with rule="own": no change on its arc, i.e. its parent's head
    np.testing.assert_allclose(
        model.predict(new, environment="x", parent="root", rule="own"),
        model.predict(new, environment="root", rule="own"),
    )
    # rule="nearest" on the unobserved root uses the nearest observed node instead
    np.testing.assert_allclose(model.predict(new, environment="root"), model.predict(new, environment="n0"))


def test_default_predict_is_unchanged_and_rejects_unseen_environments(setting):
    model, new, train = setting["model"], setting["new"], setting["train"]
    before = model.predict()
    np.testing.assert_array_equal(model.predict(train.copy()), before)
    snap = _snapshot(new)
    with pytest.raises(ValueError, match=r"without training cells: 'n11'.*environment=<name>"):
        model.predict(new)
    _assert_untouched(new, snap)
    with pytest.raises(ValueError, match="`parent` only applies"):
        model.predict(new, parent="n1")


# ---------------------------------------------------------------------- few-shot adaptation


@pytest.mark.parametrize("shots", [10, 30])
def test_adaptation_beats_the_nearest_environment_rule(setting, shots):
    """n1 -> n11 carries a change; adapting on a few cells predicts the other held-out cells better."""
    model, new = setting["model"], setting["new"]
    support, query = new[:shots], new[100:]
    y = query.obs["y"].to_numpy()
    nearest = _mse(model.predict(query, environment=HELD_OUT), y)
    snap = _snapshot(support)
    try:
        delta = model.adapt(support, HELD_OUT)
        adapted = _mse(model.predict(query, environment=HELD_OUT), y)
        entry = model.adapted_heads_[HELD_OUT]
    finally:
        model.adapted_heads_.pop(HELD_OUT, None)
    _assert_untouched(support, snap)
    assert delta.name == f"{NEIGHBOUR}->{HELD_OUT}"
    assert list(delta.index) == ["latent_0", "latent_1"]
    assert (delta != 0).any()
    assert entry["n_cells"] == shots
    assert entry["lam"][0] > 0
    # measured (CPU): nearest 0.40; adapted 0.094 (10 cells, universal lambda) and 0.088 (30 cells, CV)
    assert adapted < 0.5 * nearest, (adapted, nearest)


def test_adaptation_without_a_change_gives_exact_zeros(setting):
    """Held-out cells whose head is the parent's: the adapted change is (mostly) exactly zero."""
    model, new, weights = setting["model"], setting["new"], setting["true_weights"]
    rng = np.random.default_rng(0)
    z_true = np.asarray(new.obsm["Z_true"], dtype=float)
    same = new.copy()
    same.obs["y"] = z_true @ weights.loc[NEIGHBOUR].to_numpy() + 0.1 * rng.normal(size=new.n_obs)
    deltas = []
    try:
        for seed in range(5):
            cells = np.sort(np.random.default_rng(seed).choice(new.n_obs, 30, replace=False))
            deltas.append(model.adapt(same[cells], "unchanged", parent=NEIGHBOUR, random_state=seed).to_numpy())
    finally:
        model.adapted_heads_.pop("unchanged", None)
    deltas = np.array(deltas)
    assert (deltas == 0).mean() >= 0.8, deltas  # measured: 9 of the 10 entries exactly zero


def test_adaptation_is_deterministic_and_matches_the_lasso(setting):
    model, new = setting["model"], setting["new"]
    support = new[:40]
    try:
        a = model.adapt(support, HELD_OUT, lam=0.05, refit=False)
        b = model.adapt(support, HELD_OUT, lam=0.05, refit=False)
        pd.testing.assert_series_equal(a, b)
        # the stored head is the parent's plus Delta, and Delta solves the lasso on the latents
        z = model.get_latent_representation(support).astype(np.float64)
        m = model.module
        std, mean = float(m.y_std[0]), float(m.y_mean[0])
        parent_head = model.get_environment_weights().loc[NEIGHBOUR].to_numpy() / std
        y = (support.obs["y"].to_numpy() - mean) / std - float(m.bias.detach()[0]) - z @ parent_head
        d = a.to_numpy() / std
        grad = -2 * z.T @ (y - z @ d) / len(y)  # KKT of mean squared error + lam * |d|_1
        nz = d != 0
        np.testing.assert_allclose(grad[nz], -0.05 * np.sign(d[nz]), atol=1e-6)
        assert np.all(np.abs(grad[~nz]) <= 0.05 + 1e-6)
        np.testing.assert_allclose(model.adapted_heads_[HELD_OUT]["head"][0], parent_head + d, rtol=1e-5, atol=1e-7)
        # refit=True (default): the same support, refitted by least squares (relaxed lasso, no shrinkage)
        relaxed = model.adapt(support, HELD_OUT, lam=0.05).to_numpy() / std
        np.testing.assert_array_equal(relaxed != 0, nz)
        np.testing.assert_allclose(relaxed[nz], np.linalg.lstsq(z[:, nz], y, rcond=None)[0], rtol=1e-6, atol=1e-9)
        # lam large enough gives Delta = 0 exactly, hence the parent's head
        assert (model.adapt(support, HELD_OUT, lam=1e3) == 0).all()
        np.testing.assert_allclose(
            model.predict(new, environment=HELD_OUT), model.predict(new, environment=NEIGHBOUR), rtol=1e-5
        )
    finally:
        model.adapted_heads_.pop(HELD_OUT, None)


def test_adapted_environment_counts_as_observed_and_survives_save_load(setting, tmp_path):
    model, new, train = setting["model"], setting["new"], setting["train"]
    try:
        model.adapt(new[:30], "adapted type", parent=NEIGHBOUR)
        assert model.nearest_observed("adapted type") == "adapted type"
        assert model.nearest_observed("below", parent="adapted type") == "adapted type"
        expected = model.predict(new, environment="adapted type")
        np.testing.assert_array_equal(model.predict(new, environment="below", parent="adapted type"), expected)
        path = str(tmp_path / "model")
        model.save(path, overwrite=True)
    finally:
        model.adapted_heads_.pop("adapted type", None)
    loaded = TBR.load(path, adata=train, accelerator="cpu")
    assert "adapted type" in loaded.adapted_heads_
    np.testing.assert_array_equal(loaded.predict(new, environment="adapted type"), expected)
    # changing the model's weights invalidates adapted heads (they belong to the old latents)
    with torch.no_grad():
        loaded.module.bias.add_(1.0)
    with pytest.raises(RuntimeError, match="adapt"):
        loaded.predict(new, environment="adapted type")


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"environment": "zzz"}, KeyError, "not a node of the model's tree; pass parent="),
        ({"environment": "zzz", "parent": "nope"}, KeyError, "`parent` 'nope' is not a node"),
        ({"environment": "n10", "parent": "n0"}, ValueError, "already a node of the tree, with parent 'n1'"),
        ({"environment": "n11", "rule": "closest"}, ValueError, "`rule` must be"),
        ({"environment": 3}, TypeError, "non-empty str"),
    ],
)
def test_predict_bad_input(setting, kwargs, error, match):
    new = setting["new"]
    snap = _snapshot(new)
    with pytest.raises(error, match=match):
        setting["model"].predict(new, **kwargs)
    _assert_untouched(new, snap)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("n10",), {}, ValueError, "has training cells"),
        (("root",), {}, ValueError, "root of the tree"),
        (("zzz",), {}, KeyError, "pass parent="),
        (("zzz",), {"parent": "nope"}, KeyError, "`parent` 'nope' is not a node"),
        (("n11",), {"parent": "n0"}, ValueError, "with parent 'n1', not 'n0'"),
        (("n11",), {"target": "nope"}, KeyError, "not in adata.obs"),
        (("n11",), {"target": np.zeros(3)}, ValueError, "1 value"),
        (("n11",), {"lam": -1.0}, ValueError, "`lam` must be"),
        (("n11",), {"base": "root"}, ValueError, "`base` must be"),
    ],
)
def test_adapt_bad_input(setting, args, kwargs, error, match):
    model, new = setting["model"], setting["new"]
    support = new[:20].copy()
    snap = _snapshot(support)
    with pytest.raises(error, match=match):
        model.adapt(support, *args, **kwargs)
    _assert_untouched(support, snap)
    assert not model.adapted_heads_


def test_adapt_needs_matching_inputs_and_enough_cells(setting):
    model, new = setting["model"], setting["new"]
    with pytest.raises(ValueError, match="at least 2"):
        model.adapt(new[:1], HELD_OUT)
    renamed = new[:20].copy()
    renamed.var_names = [f"other{i}" for i in range(renamed.n_vars)]
    with pytest.raises(KeyError, match="not in adata.var_names"):
        model.adapt(renamed, HELD_OUT)
    nan = new[:20].copy()
    nan.obs["y"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.adapt(nan, HELD_OUT)
    assert not model.adapted_heads_
