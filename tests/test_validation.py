"""Bad inputs not covered elsewhere: each gets a clear error before any training, and the AnnData is left untouched.

Already covered (not repeated here): NaN inputs and NaN/constant/non-numeric/missing target, missing groupby,
environments missing from the tree, an unused category absent from the tree, bad ``n_latent`` (< 1 or not an
integer), too few cells in an environment (``tests/tl/test_tbr.py``, ``tests/model/test_model.py``); missing layer or
``var_names``, empty AnnData, infinite target (``test_setup_anndata_errors`` in ``tests/model/test_model.py``); trees
with cycles, several roots or duplicate names at the tree level (``tests/tree/test_tree.py``).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sctbr
from sctbr import EnvironmentTree
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(2)  # the tree of the small simulation: inputs x0..x3, environments n0..n11


def snapshot(adata: ad.AnnData) -> dict:
    """What a failed call must leave untouched."""
    return {
        "obsm": set(adata.obsm.keys()),
        "obs": adata.obs.copy(),
        "uns": set(adata.uns.keys()),
        "var_names": list(adata.var_names),
        "X": adata.X[:] if adata.isbacked else (adata.X.copy() if adata.X is not None else None),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert after["obsm"] == before["obsm"]
    assert after["uns"] == before["uns"]
    assert after["var_names"] == before["var_names"]
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    x_after, x_before = after["X"], before["X"]
    if sp.issparse(x_before):
        x_after, x_before = x_after.toarray(), x_before.toarray()
    np.testing.assert_array_equal(x_after, x_before)


@pytest.fixture
def no_training(monkeypatch):
    """Any training attempt fails loudly: the errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the bad input was refused")

    monkeypatch.setattr(TBR, "_run_fit", refuse)


# ---------------------------------------------------------------------- preparations of the bad input


def _set_x(value, sparse=False):
    def prepare(adata, tmp_path):
        x = adata.X.copy()
        x[3, 1] = value
        adata.X = sp.csr_matrix(x) if sparse else x
        return adata

    return prepare


def _three_level_target(adata, tmp_path):
    adata.obs["label"] = pd.Categorical(np.array(["a", "b", "c"])[np.arange(adata.n_obs) % 3])
    return adata


def _backed(adata, tmp_path):
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


def _same(adata, tmp_path):
    return adata


_CYCLE = {"root": None, "n0": "root", "n1": "n1x", "n1x": "n1", **{f"n{i}{j}": f"n{i}" for i in (0, 1) for j in (0, 1)}}
_TWO_ROOTS = {"root": None, "n0": "root", "n1": None, **{f"n{i}{j}": f"n{i}" for i in (0, 1) for j in (0, 1)}}

# (id, preparation, keyword arguments of tl.tbr, error type, message pattern)
TL_CASES = [
    ("inf_inputs", _set_x(np.inf), {}, ValueError, r"1 NaN or infinite values \(first at cell 3, input 1\)"),
    ("nan_sparse_inputs", _set_x(np.nan, sparse=True), {}, ValueError, "1 NaN or infinite values"),
    ("inf_sparse_inputs", _set_x(-np.inf, sparse=True), {}, ValueError, "NaN or infinite"),
    ("target_three_levels", _three_level_target, {"target": "label"}, ValueError, "3 levels.*'a', 'b', 'c'"),
    ("logistic_loss_numeric_target", _same, {"loss": "logistic"}, ValueError, "needs a 0/1 target"),
    ("tree_with_cycle", _same, {"tree": _CYCLE}, ValueError, "cycle"),
    ("tree_with_two_roots", _same, {"tree": _TWO_ROOTS}, ValueError, "2 roots"),
    ("tree_with_duplicate_names", _same, {"tree": "((n00,n01)n0,(n10,n00)n1)root;"}, ValueError, "duplicate.*'n00'"),
    (
        "n_latent_above_inputs",
        _same,
        {"n_latent": 5},
        ValueError,
        r"`n_latent` \(5\) exceeds the number of inputs \(4\)",
    ),
    (
        "n_latent_above_var_names",
        _same,
        {"n_latent": 3, "var_names": ["x0", "x2"]},
        ValueError,
        r"`n_latent` \(3\) exceeds the number of inputs \(2\)",
    ),
    ("copy_of_backed", _backed, {"copy": True}, ValueError, "copy=True on a backed AnnData.*copy=False"),
    ("resume_without_checkpoint_dir", _same, {"resume": True}, ValueError, "checkpoint_dir"),
    ("unknown_backed_mode", _same, {"backed": "disk"}, ValueError, "`backed` must be 'load' or 'stream'"),
]


@pytest.mark.parametrize(
    ("prepare", "kwargs", "error", "match"), [c[1:] for c in TL_CASES], ids=[c[0] for c in TL_CASES]
)
def test_tl_tbr_refuses_before_training(small_adata, tmp_path, no_training, prepare, kwargs, error, match):
    adata = prepare(small_adata, tmp_path)
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        sctbr.tl.tbr(adata, **{"n_latent": 2, "hidden": (8,), "max_epochs": 2, **kwargs})
    assert_unchanged(adata, before)


BASELINE_CASES = [c for c in TL_CASES if c[0] in ("inf_inputs", "n_latent_above_inputs", "copy_of_backed")]


@pytest.mark.parametrize(
    ("prepare", "kwargs", "error", "match"), [c[1:] for c in BASELINE_CASES], ids=[c[0] for c in BASELINE_CASES]
)
def test_tl_baseline_refuses_before_training(small_adata, tmp_path, no_training, prepare, kwargs, error, match):
    adata = prepare(small_adata, tmp_path)
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        sctbr.tl.baseline(adata, **{"n_latent": 2, "hidden": (8,), "max_epochs": 2, **kwargs})
    assert_unchanged(adata, before)


def test_model_refuses_n_latent_above_inputs(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment", var_names=["x1", "x2", "x3"])
    with pytest.raises(ValueError, match=r"`n_latent` \(4\) exceeds the number of inputs \(3\)"):
        TBR(small_adata, tree=TREE, n_latent=4)
    TBR(small_adata, tree=TREE, n_latent=3)  # equal is fine


def test_model_train_refuses_infinite_inputs(small_adata, no_training):
    small_adata.X[7, 2] = -np.inf
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE, n_latent=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"first at cell 7, input 2"):
        model.train(max_epochs=2, accelerator="cpu")
    assert not model.is_trained_


def test_backed_file_with_nan_inputs_is_refused(small_adata, tmp_path, no_training):
    small_adata.X[5, 0] = np.nan
    adata = _backed(small_adata, tmp_path)
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=TREE, n_latent=2, hidden=(8,))
    for backed in ("load", "stream"):
        with pytest.raises(ValueError, match=r"first at cell 5, input 0"):
            model.train(max_epochs=2, accelerator="cpu", backed=backed)


# ---------------------------------------------------------------------- unused categories


def test_unused_categories_in_the_tree_are_environments_without_cells(make_adata):
    """Categories without cells (here the internal nodes) are unobserved nodes: their heads stay free."""
    kwargs = {"n_latent": 2, "hidden": (8,), "max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False}
    plain = make_adata(leaves_only=True)
    padded = make_adata(leaves_only=True)
    padded.obs["environment"] = padded.obs["environment"].cat.add_categories(["root", "n0", "n1"])
    out = []
    for adata in (plain, padded):
        out.append(sctbr.tl.tbr(adata, return_model=True, **kwargs))
    assert out[1].environments_ == [*out[0].environments_, "root", "n0", "n1"]
    assert out[1].refinement_["penalty_after"] == pytest.approx(out[0].refinement_["penalty_after"], rel=1e-9)
    np.testing.assert_array_equal(padded.obsm["X_tbr"], plain.obsm["X_tbr"])


# ---------------------------------------------------------------------- a model meets other genes


@pytest.fixture(scope="module")
def saved(make_adata, torch_single_thread, tmp_path_factory):
    """A tiny trained model on all four inputs, and one on a subset, saved."""
    paths = {}
    for name, var_names in (("all", None), ("subset", ["x1", "x3"])):
        adata = make_adata()
        TBR.setup_anndata(adata, target="y", groupby="environment", var_names=var_names)
        model = TBR(adata, tree=TREE, n_latent=2, hidden=(8,))
        model.train(max_epochs=2, refine=False, accelerator="cpu", enable_progress_bar=False)
        paths[name] = tmp_path_factory.mktemp(name) / "model"
        model.save(paths[name])
        paths[name + "_latents"] = model.get_latent_representation()
    return paths


def _genes(adata, names):
    out = adata[:, [n for n in names if n in adata.var_names]].copy()
    extra = [n for n in names if n not in adata.var_names]
    if extra:
        fill = ad.AnnData(np.zeros((adata.n_obs, len(extra)), dtype=np.float32), obs=adata.obs[[]])
        fill.var_names = extra
        out = ad.concat([out, fill], axis=1, merge="first", uns_merge="first")
        out.obs = adata.obs.copy()
    return out


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["x0", "x1", "x2"], r"lacks 1 of them: \['x3'\]"),
        (["x0", "x1", "x2", "x3", "gene_a"], r"has 1 other genes: \['gene_a'\]"),
        (["x1", "x0", "x2", "x3"], r"another order \(position 0: 'x1', model 'x0'\)"),
        (["y0", "y1", "y2", "y3"], r"lacks 4 of them"),
    ],
)
def test_load_refuses_other_genes(saved, make_adata, names, match):
    adata = _genes(make_adata(), names)
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match):
        TBR.load(saved["all"], adata=adata, accelerator="cpu")
    assert_unchanged(adata, before)  # refused before scvi-tools registers anything


def test_model_with_a_gene_subset_loads_on_other_gene_sets(saved, make_adata):
    # the subset model reads x1 and x3 by name: extra or reordered genes are fine, a missing one is not
    adata = _genes(make_adata(), ["x3", "gene_a", "x0", "x1"])
    model = TBR.load(saved["subset"], adata=adata, accelerator="cpu")
    np.testing.assert_allclose(model.get_latent_representation(), saved["subset_latents"], atol=1e-6)
    with pytest.raises(ValueError, match=r"lacks 1 of the model's 2 inputs: \['x3'\]"):
        TBR.load(saved["subset"], adata=_genes(make_adata(), ["x0", "x1", "x2"]), accelerator="cpu")


def test_latents_of_an_anndata_with_other_genes_are_refused(saved, make_adata):
    model = TBR.load(saved["all"], adata=make_adata(), accelerator="cpu")
    other = _genes(make_adata(), ["x1", "x0", "x2", "x3"])
    with pytest.raises(ValueError, match="another order"):
        model.get_latent_representation(other)
