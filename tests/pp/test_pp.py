"""Tests for sctbr.pp: environment_tree, magic, subsample.

Every function's output is written to and read back from h5ad, and every error leaves the input untouched.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import sctbr
from sctbr import EnvironmentTree
from sctbr.pp._normalize import log_normalize

CELL_TYPES = ["alpha", "beta", "gamma", "delta"]


def _counts(n_per_type: int = 30, n_genes: int = 80, seed: int = 0, types=CELL_TYPES) -> ad.AnnData:
    """Poisson counts with a type-specific mean profile; two pairs of similar types (alpha~beta, gamma~delta)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(1.0, 1.0, size=(2, n_genes))
    profiles = np.repeat(base, 2, axis=0) * rng.uniform(0.8, 1.25, size=(4, n_genes))
    profiles = profiles[: len(types)]
    labels = np.repeat(types, n_per_type)
    size = rng.uniform(0.5, 2.0, size=len(labels))[:, None]
    x = rng.poisson(np.repeat(profiles, n_per_type, axis=0) * size * 3).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels, categories=list(types))})
    obs.index = [f"cell{i}" for i in range(len(labels))]
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def _snapshot(adata: ad.AnnData) -> dict:
    x = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X)
    return {
        "X": x,
        "obs": adata.obs.copy(),
        "var_names": list(adata.var_names),
        "uns": sorted(adata.uns.keys()),
        "obsm": sorted(adata.obsm.keys()),
        "layers": sorted(adata.layers.keys()),
        "shape": adata.shape,
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict) -> None:
    now = _snapshot(adata)
    assert now["shape"] == snap["shape"]
    np.testing.assert_array_equal(now["X"], snap["X"])
    pd.testing.assert_frame_equal(now["obs"], snap["obs"])
    for key in ("var_names", "uns", "obsm", "layers"):
        assert now[key] == snap[key], key


def _roundtrip(adata: ad.AnnData, tmp_path, name: str = "a.h5ad") -> ad.AnnData:
    path = tmp_path / name
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


def _tree(adata: ad.AnnData, groupby: str, **kwargs) -> EnvironmentTree:
    """Run pp.environment_tree (scanpy's inplace: it returns None) and read the stored tree back."""
    assert sctbr.pp.environment_tree(adata, groupby, **kwargs) is None
    return EnvironmentTree.coerce(adata.uns[kwargs.get("key_added") or "environment_tree"])


@pytest.fixture
def counts() -> ad.AnnData:
    return _counts()


# --------------------------------------------------------------------------------------------------------------------
# environment_tree
# --------------------------------------------------------------------------------------------------------------------


def test_environment_tree_has_categories_as_leaves_and_is_stored_for_tbr(counts, tmp_path):
    tree = _tree(counts, "cell_type")
    assert sorted(tree.leaves) == sorted(CELL_TYPES)
    assert tree.n_nodes == 2 * len(CELL_TYPES) - 1
    assert tree.root == "root"
    assert {n for n in tree.nodes if n not in CELL_TYPES} == {"root", "node0", "node1"}
    # the two pairs of similar profiles are siblings
    assert tree.parent("alpha") == tree.parent("beta") != tree.parent("gamma") == tree.parent("delta")

    back = _roundtrip(counts, tmp_path)
    stored = back.uns["environment_tree"]
    assert stored["groupby"] == "cell_type"
    assert stored["source"] == "dendrogram_cell_type"
    assert EnvironmentTree.coerce(dict(stored)) == tree
    assert back.uns["sctbr"]["groupby"] == "cell_type"
    assert back.uns["sctbr"]["tree_key"] == "environment_tree"
    assert "linkage" in back.uns["dendrogram_cell_type"]


def test_environment_tree_follows_scanpy_inplace(counts, tmp_path):
    # inplace=True (default) writes into adata and returns None; inplace=False returns the tree and writes nothing
    snap = _snapshot(counts)
    tree = sctbr.pp.environment_tree(counts, "cell_type", inplace=False)
    assert isinstance(tree, EnvironmentTree)
    _assert_unchanged(counts, snap)
    assert sctbr.pp.environment_tree(counts, "cell_type") is None
    assert EnvironmentTree.coerce(_roundtrip(counts, tmp_path).uns["environment_tree"]) == tree
    with pytest.raises(TypeError, match="inplace"):
        sctbr.pp.environment_tree(counts, "cell_type", inplace="yes")


def test_environment_tree_matches_scanpy_dendrogram_on_the_same_representation(counts):
    lognorm = counts.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    sc.pp.pca(lognorm, n_comps=10, random_state=0)
    sc.tl.dendrogram(lognorm, "cell_type", linkage_method="average")
    expected = EnvironmentTree.from_linkage(lognorm.uns["dendrogram_cell_type"]["linkage"], CELL_TYPES)

    fresh = counts.copy()
    fresh.obsm["X_pca"] = lognorm.obsm["X_pca"]
    tree = _tree(fresh, "cell_type", linkage_method="average")
    assert tree == expected


def test_environment_tree_computes_pca_without_modifying_x_or_obsm(counts, tmp_path):
    before = counts.X.toarray().copy()
    sctbr.pp.environment_tree(counts, "cell_type")
    np.testing.assert_array_equal(counts.X.toarray(), before)
    assert "X_pca" not in counts.obsm
    assert counts.raw is None
    _roundtrip(counts, tmp_path)


def test_environment_tree_reuses_a_matching_stored_dendrogram(counts, tmp_path):
    # A linkage that joins alpha with gamma first: not what the data say, so reuse is visible.
    linkage = np.array([[0.0, 2.0, 0.1, 2.0], [1.0, 3.0, 0.2, 2.0], [4.0, 5.0, 0.5, 4.0]])
    counts.uns["dendrogram_cell_type"] = {
        "linkage": linkage,
        "groupby": ["cell_type"],
        "use_rep": None,
        "cor_method": "pearson",
        "linkage_method": "complete",
        "categories_ordered": ["alpha", "gamma", "beta", "delta"],
        "categories_idx_ordered": [0, 2, 1, 3],
    }
    counts = _roundtrip(counts, tmp_path)  # as read from a file
    tree = _tree(counts, "cell_type")
    assert tree.parent("alpha") == tree.parent("gamma")
    np.testing.assert_array_equal(counts.uns["dendrogram_cell_type"]["linkage"], linkage)

    # Asking for another linkage method recomputes (and stores) the dendrogram.
    tree = _tree(counts, "cell_type", linkage_method="average")
    assert tree.parent("alpha") == tree.parent("beta")
    assert counts.uns["dendrogram_cell_type"]["linkage_method"] == "average"
    _roundtrip(counts, tmp_path, "b.h5ad")


def test_environment_tree_recomputes_a_dendrogram_for_reordered_categories(counts):
    sctbr.pp.environment_tree(counts, "cell_type")
    first = sctbr.EnvironmentTree.coerce(dict(counts.uns["environment_tree"]))
    counts.obs["cell_type"] = counts.obs["cell_type"].cat.reorder_categories(["delta", "gamma", "beta", "alpha"])
    tree = _tree(counts, "cell_type")
    # same topology, rebuilt for the new category order (a stale linkage would swap the pairs)
    assert tree.parent("alpha") == tree.parent("beta") != tree.parent("gamma") == tree.parent("delta")
    assert set(tree.leaves) == set(first.leaves)


def test_environment_tree_internal_names_do_not_clash_with_categories(tmp_path):
    adata = _counts(types=["root", "node0", "node1", "x"])
    tree = _tree(adata, "cell_type", key_added="my_tree")
    assert sorted(tree.leaves) == ["node0", "node1", "root", "x"]
    assert tree.root == "_root"
    back = _roundtrip(adata, tmp_path)
    assert back.uns["sctbr"]["tree_key"] == "my_tree"
    assert EnvironmentTree.coerce(dict(back.uns["my_tree"])) == tree


def test_environment_tree_uses_rep_and_small_x_directly(counts):
    rng = np.random.default_rng(1)
    up, down = np.arange(6.0), np.arange(6.0)[::-1]
    means = np.array([up, up + [0, 0, 1, 0, 0, 0], down, down + [0, 1, 0, 0, 0, 0]])
    rep = np.repeat(means, 30, axis=0) + 0.01 * rng.normal(size=(120, 6))
    counts.obsm["X_custom"] = rep
    tree = _tree(counts, "cell_type", use_rep="X_custom", cor_method="spearman")
    assert tree.parent("alpha") == tree.parent("beta")
    assert counts.uns["dendrogram_cell_type"]["use_rep"] == "X_custom"

    small = counts[:, :20].copy()  # <= 50 genes: Scanpy uses X itself
    tree = _tree(small, "cell_type")
    assert sorted(tree.leaves) == sorted(CELL_TYPES)


@pytest.mark.parametrize("given", ["mapping", "newick", "tree"])
def test_environment_tree_validates_and_stores_a_user_tree(counts, tmp_path, given):
    parents = {"T": "blood", "alpha": "T", "beta": "T", "gamma": "blood", "delta": "blood"}
    tree = EnvironmentTree(parents)
    obj = {"mapping": parents, "newick": tree.to_newick(), "tree": tree}[given]
    result = _tree(counts, "cell_type", tree=obj)
    assert result == tree
    assert "dendrogram_cell_type" not in counts.uns
    back = _roundtrip(counts, tmp_path)
    assert back.uns["environment_tree"]["source"] == "user"
    assert EnvironmentTree.coerce(dict(back.uns["environment_tree"])) == tree


def test_environment_tree_warns_about_tree_leaves_without_cells(counts):
    parents = {"alpha": "r", "beta": "r", "gamma": "r", "delta": "r", "epsilon": "r"}
    with pytest.warns(UserWarning, match="epsilon"):
        sctbr.pp.environment_tree(counts, "cell_type", tree=parents)


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("none", {"tree": {"alpha": "r", "beta": "r"}}, ValueError, "not nodes of the given tree.*gamma"),
        ("unused", {}, ValueError, "have no cells.*epsilon.*remove_unused_categories"),
        ("string", {}, TypeError, "must be categorical"),
        ("int_categories", {}, TypeError, "must be strings"),
        ("nan", {}, ValueError, "no label"),
        ("single", {}, ValueError, "single category"),
        ("none", {"groupby": "missing"}, KeyError, "not found in adata.obs"),
        ("none", {"tree": 3}, TypeError, "`tree` must be"),
        ("none", {"use_rep": "X_nope"}, KeyError, "X_nope"),
        ("none", {"tree": "(alpha,beta"}, ValueError, "unexpected end"),
    ],
)
def test_environment_tree_errors_leave_input_untouched(counts, change, kwargs, error, match):
    adata = counts
    if change == "unused":
        adata.obs["cell_type"] = adata.obs["cell_type"].cat.add_categories(["epsilon"])
    elif change == "string":
        adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    elif change == "int_categories":
        adata.obs["cell_type"] = pd.Categorical(adata.obs["cell_type"].cat.codes)
    elif change == "nan":
        col = adata.obs["cell_type"].copy()
        col.iloc[0] = np.nan
        adata.obs["cell_type"] = col
    elif change == "single":
        adata = adata[adata.obs["cell_type"] == "alpha"].copy()
        adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    kwargs = dict(kwargs)
    groupby = kwargs.pop("groupby", "cell_type")
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        sctbr.pp.environment_tree(adata, groupby, **kwargs)
    _assert_unchanged(adata, snap)


# --------------------------------------------------------------------------------------------------------------------
# magic
# --------------------------------------------------------------------------------------------------------------------


def test_magic_writes_a_layer_and_leaves_x_and_raw_alone(counts, tmp_path):
    x_before = counts.X.toarray().copy()
    sctbr.pp.magic(counts, knn=5, t=3, n_pca=20)
    np.testing.assert_array_equal(counts.X.toarray(), x_before)
    assert counts.raw is None
    layer = counts.layers["magic"]
    assert isinstance(layer, np.ndarray)
    assert layer.shape == counts.shape
    assert layer.dtype == np.float32
    assert np.isfinite(layer).all()
    assert layer.min() >= -1e-4  # diffusion of non-negative log values
    # denoising: the imputed genes are smoother than the log-normalised input
    lognorm = log_normalize(counts.X).toarray()
    assert layer.std(axis=0).mean() < lognorm.std(axis=0).mean()
    params = counts.uns["magic"]["params"]
    assert params["knn"] == 5
    assert params["t"] == 3
    assert counts.uns["magic"]["normalization"].startswith("normalize_total(target_sum=10000) + log1p")

    back = _roundtrip(counts, tmp_path)
    np.testing.assert_allclose(back.layers["magic"], layer)
    assert back.uns["magic"]["params"]["n_pca"] == 20


def test_magic_normalises_counts_as_documented(counts):
    """MAGIC on counts equals MAGIC on Scanpy's normalize_total(1e4) + log1p of the same counts."""
    sctbr.pp.magic(counts, n_pca=20, random_state=3)
    lognorm = counts.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    lognorm.layers["lognorm"] = lognorm.X.copy()
    sctbr.pp.magic(lognorm, layer="lognorm", n_pca=20, random_state=3, key_added="m")
    np.testing.assert_allclose(counts.layers["magic"], lognorm.layers["m"], rtol=1e-4, atol=1e-5)
    assert lognorm.uns["m"]["normalization"].startswith("none")


def test_magic_is_seeded_and_uses_the_library_size_column(counts):
    a, b = counts.copy(), counts.copy()
    sctbr.pp.magic(a, n_pca=20, random_state=0)
    sctbr.pp.magic(b, n_pca=20, random_state=0)
    np.testing.assert_array_equal(a.layers["magic"], b.layers["magic"])

    # A library-size column equal to the row sums changes nothing; a different one changes the result.
    counts.obs["total"] = np.asarray(counts.X.sum(axis=1)).ravel()
    sctbr.pp.magic(counts, n_pca=20, random_state=0, library_size="total")
    np.testing.assert_allclose(counts.layers["magic"], a.layers["magic"], rtol=1e-5, atol=1e-6)
    counts.obs["total"] = counts.obs["total"] * 2.0
    sctbr.pp.magic(counts, n_pca=20, random_state=0, library_size="total")
    assert not np.allclose(counts.layers["magic"], a.layers["magic"], atol=1e-3)


def test_magic_on_a_gene_subset_stores_sparse_columns_equal_to_the_full_run(counts, tmp_path):
    full = counts.copy()
    sctbr.pp.magic(full, n_pca=20)
    genes = ["g7", "g2", "g40"]
    sctbr.pp.magic(counts, genes=genes, n_pca=20)
    layer = counts.layers["magic"]
    assert sp.issparse(layer)
    assert layer.shape == counts.shape
    cols = counts.var_names.get_indexer(genes)
    np.testing.assert_allclose(layer[:, cols].toarray(), full.layers["magic"][:, cols], rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(counts.n_vars), cols)
    assert layer[:, others].nnz == 0
    back = _roundtrip(counts, tmp_path)
    assert list(back.uns["magic"]["genes"]) == genes
    np.testing.assert_allclose(back.layers["magic"].toarray(), layer.toarray())


def test_magic_reads_a_counts_layer(counts):
    counts.layers["counts"] = counts.X.copy()
    counts.X = log_normalize(counts.X)
    x_before = counts.X.toarray().copy()
    sctbr.pp.magic(counts, layer="counts", n_pca=20)
    np.testing.assert_array_equal(counts.X.toarray(), x_before)
    assert counts.uns["magic"]["params"]["layer"] == "counts"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "nope"}, KeyError, "nope"),
        ({"genes": ["g1", "not_a_gene"]}, KeyError, "not_a_gene"),
        ({"knn": 0}, ValueError, "knn"),
        ({"t": 1.5}, ValueError, "`t`"),
        ({"n_pca": -1}, ValueError, "n_pca"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"layer": "counts", "key_added": "counts"}, ValueError, "equals the input"),
        ({"library_size": "nope"}, KeyError, "nope"),
        ({"knn": 500}, ValueError, "more cells"),
    ],
)
def test_magic_errors_leave_input_untouched(counts, kwargs, error, match):
    counts.layers["counts"] = counts.X.copy()
    snap = _snapshot(counts)
    with pytest.raises(error, match=match):
        sctbr.pp.magic(counts, **kwargs)
    _assert_unchanged(counts, snap)


def test_magic_refuses_backed_data(counts, tmp_path):
    counts.write_h5ad(tmp_path / "c.h5ad")
    backed = ad.read_h5ad(tmp_path / "c.h5ad", backed="r")
    with pytest.raises(ValueError, match="backed"):
        sctbr.pp.magic(backed)
    assert "magic" not in backed.layers
    backed.file.close()


# --------------------------------------------------------------------------------------------------------------------
# subsample
# --------------------------------------------------------------------------------------------------------------------


def _uneven(seed: int = 0) -> ad.AnnData:
    sizes = {"big": 50, "medium": 20, "small": 4, "tiny": 2}
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[k] * n for k, n in sizes.items()])
    labels = labels[rng.permutation(len(labels))]
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels, categories=list(sizes))})
    obs.index = [f"c{i}" for i in range(len(labels))]
    return ad.AnnData(X=rng.poisson(1.0, size=(len(labels), 5)).astype(np.float32), obs=obs)


def test_subsample_caps_groups_drops_small_ones_and_reports_them(tmp_path):
    adata = _uneven()
    order_before = list(adata.obs_names)
    with pytest.warns(UserWarning, match=r"'small' \(4\), 'tiny' \(2\)"):
        out = sctbr.pp.subsample(adata, "cell_type", max_cells=10, min_cells=5, copy=True)
    assert adata.n_obs == 76  # copy=True leaves the input alone
    counts = out.obs["cell_type"].value_counts()
    assert counts.to_dict() == {"big": 10, "medium": 10}
    assert list(out.obs["cell_type"].cat.categories) == ["big", "medium"]
    # kept cells keep their original order
    positions = [order_before.index(n) for n in out.obs_names]
    assert positions == sorted(positions)
    back = _roundtrip(out, tmp_path)
    record = back.uns["subsample"]
    assert list(record["dropped_groups"]) == ["small", "tiny"]
    assert record["max_cells"] == 10
    assert record["min_cells"] == 5
    assert record["counts"].loc["big", "before"] == 50
    assert record["counts"].loc["big", "after"] == 10
    assert record["counts"].loc["tiny", "after"] == 0


def test_subsample_in_place_is_seeded(tmp_path):
    a, b, c = _uneven(), _uneven(), _uneven()
    assert sctbr.pp.subsample(a, "cell_type", max_cells=8, random_state=1) is None
    sctbr.pp.subsample(b, "cell_type", max_cells=8, random_state=1)
    sctbr.pp.subsample(c, "cell_type", max_cells=8, random_state=2)
    assert list(a.obs_names) == list(b.obs_names)
    assert list(a.obs_names) != list(c.obs_names)
    assert a.obs["cell_type"].value_counts().to_dict() == {"big": 8, "medium": 8, "small": 4, "tiny": 2}
    back = _roundtrip(a, tmp_path)
    assert back.n_obs == 22
    assert len(back.uns["subsample"]["dropped_groups"]) == 0


def test_subsample_accepts_string_labels_and_drops_unlabelled_cells():
    adata = _uneven()
    labels = adata.obs["cell_type"].astype(object)
    labels.iloc[:3] = np.nan
    adata.obs["cell_type"] = labels
    with pytest.warns(UserWarning, match="3 cells without a label"):
        out = sctbr.pp.subsample(adata, "cell_type", max_cells=100, copy=True)
    assert out.n_obs == adata.n_obs - 3
    assert out.obs["cell_type"].notna().all()


def test_subsample_reads_only_the_kept_cells_of_backed_data(tmp_path):
    adata = _uneven()
    adata.layers["counts"] = adata.X.copy()
    adata.write_h5ad(tmp_path / "u.h5ad")
    backed = ad.read_h5ad(tmp_path / "u.h5ad", backed="r")
    out = sctbr.pp.subsample(backed, "cell_type", max_cells=5, copy=True)
    assert not out.isbacked
    np.testing.assert_array_equal(out.X, adata[out.obs_names].X)
    np.testing.assert_array_equal(out.layers["counts"], adata[out.obs_names].layers["counts"])
    with pytest.raises(ValueError, match="copy=True"):
        sctbr.pp.subsample(backed, "cell_type", max_cells=5)
    backed.file.close()
    _roundtrip(out, tmp_path, "out.h5ad")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"groupby": "nope", "max_cells": 5}, KeyError, "nope"),
        ({"max_cells": 0}, ValueError, "max_cells"),
        ({"max_cells": 2.5}, ValueError, "max_cells"),
        ({"max_cells": 5, "min_cells": -1}, ValueError, "min_cells"),
        ({"max_cells": 5, "min_cells": 6}, ValueError, "larger than"),
        ({"max_cells": 100, "min_cells": 60}, ValueError, "No group"),
    ],
)
def test_subsample_errors_leave_input_untouched(kwargs, error, match):
    adata = _uneven()
    kwargs = dict(kwargs)
    groupby = kwargs.pop("groupby", "cell_type")
    snap = _snapshot(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no partial work (and no warnings) before the error
        with pytest.raises(error, match=match):
            sctbr.pp.subsample(adata, groupby, **kwargs)
    _assert_unchanged(adata, snap)


def test_environment_tree_within_nests_the_categories_and_checks_nesting():
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    centres = {"a-0": 0.0, "a-1": 0.5, "b-0": 5.0, "b-1": 5.5, "b-2": 6.0, "c-0": -5.0}
    fine = np.repeat(list(centres), 20)
    x = np.stack([rng.normal(centres[f], 0.1, size=8) + np.arange(8) * (f[0] == "b") for f in fine])
    adata = ad.AnnData(X=x.astype(np.float32))
    adata.obs["fine"] = pd.Categorical(fine)
    adata.obs["coarse"] = pd.Categorical([f[0] for f in fine])
    assert sctbr.pp.environment_tree(adata, "fine", within="coarse") is None
    tree = sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])
    assert sorted(tree.leaves) == sorted(centres)
    assert "c" not in tree  # a single category takes its group's place
    assert tree.parent("c-0") is not None
    assert {leaf for leaf in tree.leaves if "b" in tree.ancestors(leaf)} == {"b-0", "b-1", "b-2"}
    assert tree.parent("a-0") == tree.parent("a-1") == "a"
    assert adata.uns["environment_tree"]["groupby"] == "fine"
    adata.obs["coarse"] = pd.Categorical(["a" if i % 2 else "b" for i in range(adata.n_obs)])
    with pytest.raises(ValueError, match="exactly one group"):
        sctbr.pp.environment_tree(adata, "fine", within="coarse")
