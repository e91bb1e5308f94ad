"""The user's verbs ``sctbr.tl.tbr`` and ``sctbr.tl.baseline``: what they write and when they refuse."""

from __future__ import annotations

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import sctbr
from sctbr import EnvironmentTree
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(2)


def snapshot(adata: ad.AnnData) -> dict:
    """What a failed call must leave untouched."""
    return {
        "obsm": set(adata.obsm.keys()),
        "obs": list(adata.obs.columns),
        "uns": set(adata.uns.keys()),
        "obsp": set(adata.obsp.keys()),
        "X": adata.X.copy(),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    for key in ("obsm", "obs", "uns", "obsp"):
        assert after[key] == before[key], key
    np.testing.assert_array_equal(after["X"], before["X"])


def without_records(adata: ad.AnnData) -> ad.AnnData:
    """The simulation as a user's AnnData: no recorded target/groupby and no stored tree."""
    del adata.uns["sctbr"]
    del adata.uns["environment_tree"]
    return adata


@pytest.fixture
def fast(fast_model_kwargs, fast_train_kwargs) -> dict:
    return {**fast_model_kwargs, **fast_train_kwargs}


@pytest.fixture
def no_refine(fast) -> dict:
    """Plumbing tests do not need the basis refinement (the slowest part of a tiny fit)."""
    return {**fast, "refine": False}


@pytest.fixture(scope="module")
def fitted(make_adata, torch_single_thread, fast_model_kwargs, fast_train_kwargs):
    """(original, result) of tl.tbr with default settings apart from size and epochs."""
    original = make_adata()
    result = make_adata()
    sctbr.tl.tbr(result, **fast_model_kwargs, **fast_train_kwargs)
    return original, result


# ---------------------------------------------------------------------- what is written


def test_writes_latents_prediction_and_uns(fitted):
    original, adata = fitted
    z = adata.obsm["X_tbr"]
    assert z.shape == (adata.n_obs, 2)
    assert z.dtype == np.float32
    assert np.isfinite(z).all()
    pred = adata.obs["tbr_prediction"]
    assert pred.dtype == np.float64
    assert np.isfinite(pred).all()
    # only the results are added; nothing of scvi-tools' registration leaks into the user's object
    assert set(adata.obsm.keys()) - set(original.obsm.keys()) == {"X_tbr"}
    assert set(adata.obs.columns) - set(original.obs.columns) == {"tbr_prediction", "tbr_split"}
    assert set(adata.uns.keys()) - set(original.uns.keys()) == {"tbr"}
    np.testing.assert_array_equal(adata.X, original.X)
    pd.testing.assert_frame_equal(adata.obs[original.obs.columns], original.obs)


def test_uns_contents(fitted):
    _, adata = fitted
    res = adata.uns["tbr"]
    assert {"params", "obsm_key", "environment_weights", "deltas", "history", "tree"} <= set(res)
    assert res["obsm_key"] == "X_tbr"
    assert "split" not in res  # per-cell: obs["tbr_split"]
    params = res["params"]
    assert params["method"] == "tbr"
    assert params["target"] == "y"
    assert params["groupby"] == "environment"
    assert params["n_latent"] == 2
    assert list(params["hidden"]) == [16]
    assert params["max_epochs"] == 3
    assert EnvironmentTree.coerce(res["tree"]) == TREE
    weights, deltas = res["environment_weights"], res["deltas"]
    assert list(weights.index) == list(TREE.nodes)
    assert list(deltas.index) == list(TREE.arc_labels)
    expected = weights.loc["root"].to_numpy()[None, :] + TREE.path_matrix(dtype=float) @ deltas.to_numpy()
    np.testing.assert_allclose(weights.to_numpy(), expected, rtol=1e-10, atol=1e-12)
    assert len(res["history"]) == 3
    assert "train_loss" in res["history"]
    assert list(res["var_names"]) == list(adata.var_names)


def test_heads_spectrum_is_the_metric_of_the_written_latents(fitted):
    _, adata = fitted
    spectrum = adata.uns["tbr"]["heads_spectrum"]
    held_out = (adata.obs["tbr_split"] != "train").to_numpy()  # their residuals give the noise level
    values, noise = sctbr.metrics.heads_spectrum(
        adata.obsm["X_tbr"],
        adata.obs["y"].to_numpy(),
        adata.obs["environment"].to_numpy(),
        return_noise=True,
        noise_cells=held_out,
    )
    np.testing.assert_allclose(spectrum["values"], values, rtol=1e-5)
    assert spectrum["noise"] == pytest.approx(noise, rel=1e-5)
    assert spectrum["used"] == int(np.sum(values > noise))


@pytest.mark.parametrize(("n_latent", "warns"), [(4, True), (2, False)])
def test_warns_when_latent_directions_are_unused(n_latent, warns, recwarn):
    # two true latents (linear map, so a short fit learns them): fitted with 4, two directions are unused
    adata = sctbr.datasets.simulate(depth=2, n_latent=2, psi="linear", n_obs_per_env=300, random_state=2)
    fit = {"hidden": (16,), "max_epochs": 30, "accelerator": "cpu", "enable_progress_bar": False, "random_state": 2}
    sctbr.tl.tbr(adata, n_latent=n_latent, **fit)
    spectrum = adata.uns["tbr"]["heads_spectrum"]
    assert spectrum["used"] == 2
    messages = [str(w.message) for w in recwarn if "latent directions" in str(w.message)]
    if warns:
        assert len(messages) == 1
        assert "uses only 2 of the 4" in messages[0]
        assert "n_latent=2" in messages[0]
    else:
        assert messages == []
        assert np.all(spectrum["values"] > spectrum["noise"])


def test_baseline_has_no_heads_spectrum(small_adata, fast):
    sctbr.tl.baseline(small_adata, **fast)
    assert "heads_spectrum" not in small_adata.uns["baseline"]


def test_split_is_stratified(fitted):
    _, adata = fitted
    split = adata.obs["tbr_split"]
    assert isinstance(split.dtype, pd.CategoricalDtype)
    assert split.cat.categories.tolist() == ["train", "validation", "test"]
    counts = pd.crosstab(adata.obs["environment"], split)
    # 40 cells per environment: 32 train, 8 validation
    assert (counts["train"] == 32).all()
    assert (counts["validation"] == 8).all()


def test_prediction_uses_latents_and_weights(fitted):
    _, adata = fitted
    weights = adata.uns["tbr"]["environment_weights"]
    env = adata.obs["environment"].astype(str)
    linear = np.einsum("ij,ij->i", adata.obsm["X_tbr"].astype(np.float64), weights.loc[env].to_numpy())
    offset = adata.obs["tbr_prediction"].to_numpy() - linear
    np.testing.assert_allclose(offset, offset.mean(), atol=1e-4)


def test_h5ad_round_trip(fitted, tmp_path):
    _, adata = fitted
    path = tmp_path / "tbr.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["X_tbr"], adata.obsm["X_tbr"])
    np.testing.assert_array_equal(back.obs["tbr_prediction"], adata.obs["tbr_prediction"])
    res, res_back = adata.uns["tbr"], back.uns["tbr"]
    for key in ("environment_weights", "deltas", "history"):
        pd.testing.assert_frame_equal(res_back[key], res[key], check_dtype=False, check_index_type=False)
    assert EnvironmentTree.coerce(res_back["tree"]) == EnvironmentTree.coerce(res["tree"])
    pd.testing.assert_series_equal(back.obs["tbr_split"], adata.obs["tbr_split"])
    for key, value in res["params"].items():
        np.testing.assert_array_equal(res_back["params"][key], value)
    for key, value in res["heads_spectrum"].items():
        np.testing.assert_array_equal(res_back["heads_spectrum"][key], value)


def test_latents_work_in_scanpy(fitted):
    _, adata = fitted
    adata = adata.copy()
    sc.pp.neighbors(adata, use_rep="X_tbr", n_neighbors=10, method="gauss", transformer="sklearn")
    conn = adata.obsp["connectivities"]
    assert conn.shape == (adata.n_obs, adata.n_obs)
    assert conn.nnz > 0


def test_return_model(small_adata, no_refine):
    model = sctbr.tl.tbr(small_adata, return_model=True, **no_refine)
    assert isinstance(model, TBR)
    np.testing.assert_allclose(model.get_latent_representation(), small_adata.obsm["X_tbr"], atol=1e-6)


def test_key_added_follows_scanpy(small_adata, no_refine, h5ad_roundtrip):
    # as sc.tl.umap: key_added names the obsm and the uns entry; the obs columns take it as their stem
    before = snapshot(small_adata)
    sctbr.tl.tbr(small_adata, key_added="prog", **no_refine)
    assert set(small_adata.obsm.keys()) - before["obsm"] == {"prog"}
    assert set(small_adata.uns.keys()) - before["uns"] == {"prog"}
    assert set(small_adata.obs.columns) - set(before["obs"]) == {"prog_prediction", "prog_split"}
    assert small_adata.uns["prog"]["obsm_key"] == "prog"
    # the baseline: X_baseline / baseline by default, the same rule with a name
    sctbr.tl.baseline(small_adata, **no_refine)
    sctbr.tl.baseline(small_adata, key_added="base2", **no_refine)
    assert {"X_baseline", "base2"} <= set(small_adata.obsm.keys())
    assert {"baseline_prediction", "baseline_split", "base2_prediction", "base2_split"} <= set(small_adata.obs)
    # readers take the uns key and find the obsm entry the writer recorded
    for key in ("prog", "baseline", "base2"):
        assert len(sctbr.tl.causal_effects(small_adata, key=key, split="train")) > 0
    back = h5ad_roundtrip(small_adata)
    assert len(sctbr.tl.causal_effects(back, key="prog", split="validation")) > 0
    with pytest.raises(ValueError, match="key_added"):
        sctbr.tl.tbr(small_adata, key_added="", **no_refine)


def test_copy(small_adata, no_refine):
    before = snapshot(small_adata)
    out = sctbr.tl.tbr(small_adata, copy=True, **no_refine)
    assert isinstance(out, ad.AnnData)
    assert out is not small_adata
    assert "X_tbr" in out.obsm
    assert "tbr_prediction" in out.obs
    assert "tbr" in out.uns
    assert_unchanged(small_adata, before)


def test_copy_and_return_model(small_adata, no_refine):
    out, model = sctbr.tl.tbr(small_adata, copy=True, return_model=True, **no_refine)
    assert isinstance(out, ad.AnnData)
    assert isinstance(model, TBR)
    assert "X_tbr" not in small_adata.obsm


def test_returns_none_in_place(small_adata, no_refine):
    assert sctbr.tl.tbr(small_adata, **no_refine) is None
    assert "X_tbr" in small_adata.obsm


def test_no_arguments_uses_recorded_defaults(make_adata):
    adata = make_adata(n_obs_per_env=10, n_inputs=5)  # the default n_latent=5 needs at least 5 inputs
    sctbr.tl.tbr(adata)
    params = adata.uns["tbr"]["params"]
    assert params["target"] == "y"
    assert params["groupby"] == "environment"
    assert params["n_latent"] == 5
    assert list(params["hidden"]) == [256, 64]
    assert adata.obsm["X_tbr"].shape == (adata.n_obs, 5)
    assert EnvironmentTree.coerce(adata.uns["tbr"]["tree"]) == TREE


def test_same_seed_same_result(make_adata, no_refine):
    a, b = make_adata(), make_adata()
    sctbr.tl.tbr(a, random_state=3, **no_refine)
    sctbr.tl.tbr(b, random_state=3, **no_refine)
    np.testing.assert_array_equal(a.obsm["X_tbr"], b.obsm["X_tbr"])


def test_restarts_keep_the_best(small_adata, no_refine):
    out, model = sctbr.tl.tbr(small_adata, n_restarts=2, copy=True, return_model=True, **no_refine)
    scores = out.uns["tbr"]["restart_scores"]
    assert scores.shape == (2,)
    assert np.isfinite(scores).all()
    history = model.history
    final = history["validation_loss"] if "validation_loss" in history else history["train_loss"]
    assert float(final.iloc[-1, 0]) == pytest.approx(scores.min())
    np.testing.assert_allclose(model.get_latent_representation(), out.obsm["X_tbr"], atol=1e-6)


# ---------------------------------------------------------------------- the tree in every form


def _tree_forms():
    tree = TREE.add_node("extra", "n1")  # an unobserved leaf shows which tree was used
    return tree, {
        "dict": {v: tree.parent(v) for v in tree.nodes},
        "newick": tree.to_newick(),
        "networkx": tree.to_networkx(),
        "object": tree,
        "uns_key": "my_tree",
    }


@pytest.mark.parametrize("form", ["dict", "newick", "networkx", "object", "uns_key"])
def test_tree_forms(small_adata, no_refine, form):
    tree, forms = _tree_forms()
    small_adata.uns["my_tree"] = tree.to_dict()
    sctbr.tl.tbr(small_adata, tree=forms[form], **no_refine)
    res = small_adata.uns["tbr"]
    assert EnvironmentTree.coerce(res["tree"]) == tree
    assert "extra" in res["environment_weights"].index
    assert "n1->extra" in res["deltas"].index


def test_layer_and_var_names(small_adata, no_refine):
    small_adata.layers["inputs"] = small_adata.X.copy()
    small_adata.X = np.zeros_like(small_adata.X)  # a decoy: the layer must be used
    model = sctbr.tl.tbr(small_adata, layer="inputs", var_names=["x1", "x3"], return_model=True, **no_refine)
    assert model.module.n_input == 2
    res = small_adata.uns["tbr"]
    assert list(res["var_names"]) == ["x1", "x3"]
    assert res["params"]["layer"] == "inputs"
    assert small_adata.obsm["X_tbr"].std(0).min() > 0  # not the constant latents of all-zero inputs


# ---------------------------------------------------------------------- refusals, before any training


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail loudly: errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(TBR, "_run_fit", refuse)


def test_missing_target_is_named(small_adata, no_training):
    adata = without_records(small_adata)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="`target`"):
        sctbr.tl.tbr(adata, groupby="environment", tree=TREE)
    assert_unchanged(adata, before)


def test_missing_groupby_is_named(small_adata, no_training):
    adata = without_records(small_adata)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="`groupby`"):
        sctbr.tl.tbr(adata, target="y", tree=TREE)
    assert_unchanged(adata, before)


def test_missing_tree_is_named(small_adata, no_training):
    adata = without_records(small_adata)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="tree"):
        sctbr.tl.tbr(adata, target="y", groupby="environment")
    assert_unchanged(adata, before)


def test_mistyped_uns_key_is_named(small_adata, no_training, fast):
    with pytest.raises(ValueError, match="environment_treee"):
        sctbr.tl.tbr(small_adata, tree="environment_treee", **fast)


def test_explicit_arguments_without_records(small_adata, no_refine):
    adata = without_records(small_adata)
    sctbr.tl.tbr(adata, target="y", groupby="environment", tree=TREE, **no_refine)
    assert adata.uns["tbr"]["params"]["groupby"] == "environment"


def test_environments_missing_from_tree(small_adata, no_training, fast):
    before = snapshot(small_adata)
    tree = {v: TREE.parent(v) for v in TREE.nodes if v != "n01"}
    with pytest.raises(ValueError, match="not nodes of the tree.*'n01'"):
        sctbr.tl.tbr(small_adata, tree=tree, **fast)
    assert_unchanged(small_adata, before)


def test_unused_category_absent_from_tree(small_adata, no_training, fast):
    small_adata.obs["environment"] = small_adata.obs["environment"].cat.add_categories(["ghost"])
    before = snapshot(small_adata)
    with pytest.raises(ValueError, match="ghost"):
        sctbr.tl.tbr(small_adata, **fast)
    assert_unchanged(small_adata, before)


def test_non_categorical_groupby_is_accepted(small_adata, no_refine):
    small_adata.obs["environment"] = small_adata.obs["environment"].astype(str)
    sctbr.tl.tbr(small_adata, **no_refine)
    assert small_adata.obs["environment"].dtype == object  # the user's column is not converted
    assert small_adata.obsm["X_tbr"].shape == (small_adata.n_obs, 2)


@pytest.mark.parametrize("n_latent", [0, -1, 2.0])
def test_bad_n_latent(small_adata, no_training, fast_train_kwargs, n_latent):
    before = snapshot(small_adata)
    with pytest.raises(ValueError, match="n_latent"):
        sctbr.tl.tbr(small_adata, n_latent=n_latent, hidden=(16,), **fast_train_kwargs)
    with pytest.raises(ValueError, match="n_latent"):
        sctbr.tl.baseline(small_adata, n_latent=n_latent, hidden=(16,), **fast_train_kwargs)
    assert_unchanged(small_adata, before)


def test_bad_n_restarts(small_adata, no_training, fast):
    with pytest.raises(ValueError, match="n_restarts"):
        sctbr.tl.tbr(small_adata, n_restarts=0, **fast)


def test_bad_target_leaves_adata_unchanged(small_adata, no_training, fast):
    small_adata.obs["y"] = np.nan
    before = snapshot(small_adata)
    with pytest.raises(ValueError, match="NaN"):
        sctbr.tl.tbr(small_adata, **fast)
    assert_unchanged(small_adata, before)


@pytest.mark.filterwarnings("ignore:Category .* has fewer than")
def test_environment_with_one_cell(small_adata, fast):
    keep = (small_adata.obs["environment"] != "n10").to_numpy()
    keep[np.flatnonzero(~keep)[0]] = True
    adata = small_adata[keep].copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="too few cells.*'n10'"):
        sctbr.tl.tbr(adata, **fast)
    assert_unchanged(adata, before)


def test_nan_inputs_leave_adata_unchanged(small_adata, no_training, fast):
    small_adata.X[0, 0] = np.nan
    before = snapshot(small_adata)
    with pytest.raises(ValueError, match="NaN"):
        sctbr.tl.tbr(small_adata, **fast)
    after = snapshot(small_adata)
    for key in ("obsm", "obs", "uns"):
        assert after[key] == before[key]


# ---------------------------------------------------------------------- interrupted training


def test_keyboard_interrupt_writes_nothing(small_adata, monkeypatch, fast):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TBR, "_run_fit", interrupt)
    before = snapshot(small_adata)
    with pytest.raises(KeyboardInterrupt):
        sctbr.tl.tbr(small_adata, **fast)
    assert_unchanged(small_adata, before)


def test_interrupt_in_the_last_phase_writes_nothing(small_adata, fast):
    phases = []

    class InterruptInSparsify(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            phases.append(pl_module.phase.name)
            if pl_module.phase.name == "sparsify":
                raise KeyboardInterrupt

    before = snapshot(small_adata)
    with pytest.raises(KeyboardInterrupt):
        sctbr.tl.tbr(small_adata, **{**fast, "refine": False}, callbacks=[InterruptInSparsify()])
    assert phases[0] == "fit"  # the first phase did run
    assert phases[-1] == "sparsify"
    assert_unchanged(small_adata, before)


# ---------------------------------------------------------------------- baseline


def test_baseline_writes_its_keys(small_adata, fast):
    before = snapshot(small_adata)
    sctbr.tl.baseline(small_adata, **fast)
    assert set(small_adata.obsm.keys()) - before["obsm"] == {"X_baseline"}
    assert set(small_adata.uns.keys()) - before["uns"] == {"baseline"}
    assert "baseline_prediction" in small_adata.obs
    res = small_adata.uns["baseline"]
    assert res["params"]["method"] == "baseline"
    assert res["params"]["groupby"] == "environment"  # recorded default: only stratifies the split
    weights = res["environment_weights"].to_numpy()
    assert (weights == weights[0]).all()
    assert (res["deltas"].to_numpy() == 0).all()
    assert small_adata.obsm["X_baseline"].shape == (small_adata.n_obs, 2)
    assert small_adata.obsm["X_baseline"].dtype == np.float32


def test_baseline_without_groupby(small_adata, fast):
    adata = without_records(small_adata)
    sctbr.tl.baseline(adata, target="y", **fast)
    assert adata.uns["baseline"]["params"]["groupby"] == ""
    assert adata.obsm["X_baseline"].shape == (adata.n_obs, 2)


def test_baseline_missing_target_is_named(small_adata, no_training, fast):
    adata = without_records(small_adata)
    with pytest.raises(ValueError, match="`target`"):
        sctbr.tl.baseline(adata, **fast)
