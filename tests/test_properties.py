"""Property-based tests (hypothesis) that complement ``tests/tree/test_tree.py`` and ``tests/metrics/test_metrics.py``.

Already there: dict / Newick / networkx round trips, path-matrix rows, distances (trees); MCC in [0, 1], invariant
to permutation and scaling, symmetric (metrics). Added here: linkage trees, coerce from every form, h5ad round
trip, add_node, node_index, closest; matching consistency, MCC of a latent set with itself, out-of-sample MCC on
the same split, Spearman invariance to monotone maps, support-recovery counts and ATE error of a rescaled copy.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.cluster.hierarchy import linkage

from sctbr import EnvironmentTree
from sctbr.metrics import ate_error, match_latents, mcc, mcc_out_of_sample, support_recovery

SETTINGS = {"max_examples": 40, "deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@st.composite
def trees(draw, max_nodes: int = 25) -> EnvironmentTree:
    n = draw(st.integers(1, max_nodes))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    names = draw(
        st.lists(
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=5),
            min_size=n,
            max_size=n,
            unique=True,
        )
    )
    return EnvironmentTree({names[i]: (None if p is None else names[p]) for i, p in enumerate(parents)})


# ---------------------------------------------------------------------- trees


@settings(**SETTINGS)
@given(st.integers(2, 30), st.integers(0, 10_000), st.sampled_from(["average", "complete", "single", "ward"]))
def test_property_linkage_tree_is_a_full_binary_tree(n, seed, method):
    points = np.random.default_rng(seed).normal(size=(n, 3))
    names = [f"cell type {i}" for i in range(n)]
    tree = EnvironmentTree.from_linkage(linkage(points, method=method), names)
    assert sorted(tree.leaves) == sorted(names)
    assert tree.n_nodes == 2 * n - 1
    assert all(len(tree.children(v)) in (0, 2) for v in tree.nodes)
    assert EnvironmentTree.from_newick(tree.to_newick()) == tree


@settings(**SETTINGS)
@given(trees())
def test_property_coerce_accepts_every_form(tree):
    forms = [tree, tree.to_newick(), tree.to_dict(), tree.to_networkx(), {v: tree.parent(v) for v in tree.nodes}]
    for form in forms:
        assert EnvironmentTree.coerce(form) == tree


@settings(**{**SETTINGS, "max_examples": 15})
@given(tree=trees())
def test_property_tree_survives_h5ad(tmp_path, tree):
    adata = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    adata.uns["tree"] = tree.to_dict()
    path = tmp_path / "tree.h5ad"
    adata.write_h5ad(path)
    back = EnvironmentTree.coerce(dict(ad.read_h5ad(path).uns["tree"]))
    assert back == tree
    assert back.nodes == tree.nodes


@settings(**SETTINGS)
@given(trees(), st.data())
def test_property_add_node_extends_one_path(tree, data):
    parent = data.draw(st.sampled_from(tree.nodes))
    new = "\x01new"  # not a name the strategy draws
    bigger = tree.add_node(new, parent)
    assert new not in tree  # immutable
    assert bigger.parent(new) == parent
    assert bigger.n_arcs == tree.n_arcs + 1
    assert bigger.depth(new) == tree.depth(parent) + 1
    assert bigger.ancestors(new) == (*tree.ancestors(parent), parent)
    assert bigger.path(new)[:-1] == tree.path(parent)
    for v in tree.nodes:
        assert bigger.depth(v) == tree.depth(v)


@settings(**SETTINGS)
@given(trees(), st.data())
def test_property_node_index_and_path_matrix_subsets(tree, data):
    np.testing.assert_array_equal(tree.node_index(list(tree.nodes)), np.arange(tree.n_nodes))
    subset = data.draw(st.lists(st.sampled_from(tree.nodes), min_size=1, max_size=8))
    full = tree.path_matrix().toarray()
    np.testing.assert_array_equal(tree.path_matrix(subset).toarray(), full[tree.node_index(subset)])


@settings(**SETTINGS)
@given(trees(), st.data())
def test_property_closest_minimises_the_distance(tree, data):
    node = data.draw(st.sampled_from(tree.nodes))
    candidates = data.draw(st.lists(st.sampled_from(tree.nodes), min_size=1, max_size=6, unique=True))
    best = tree.closest(node, candidates)
    assert best in candidates
    distances = {c: tree.distance(node, c) for c in candidates}
    assert distances[best] == min(distances.values())
    tied = [c for c in tree.nodes if c in distances and distances[c] == distances[best]]
    assert best == tied[0]  # ties go to the first node in breadth-first order


# ---------------------------------------------------------------------- metrics


@st.composite
def latent_pairs(draw, same_dim: bool = False):
    n = draw(st.integers(4, 30))
    d_true = draw(st.integers(1, 4))
    d_est = d_true if same_dim else draw(st.integers(1, 4))
    elements = st.integers(-20, 20).map(float)
    return (
        draw(arrays(np.float64, (n, d_true), elements=elements)),
        draw(arrays(np.float64, (n, d_est), elements=elements)),
    )


@settings(**SETTINGS)
@given(latent_pairs(), st.sampled_from(["pearson", "spearman"]))
def test_property_matching_is_an_assignment_consistent_with_mcc(pair, method):
    m = match_latents(*pair, method=method)
    k = min(pair[0].shape[1], pair[1].shape[1])
    assert len(m["true_index"]) == len(set(m["true_index"])) == k
    assert len(set(m["est_index"].tolist())) == k
    np.testing.assert_allclose(m["abs_corr"], m["corr_matrix"][m["true_index"], m["est_index"]])
    np.testing.assert_allclose(m["abs_corr"], np.abs(m["corr"]))
    assert mcc(*pair, method=method) == pytest.approx(float(np.mean(m["abs_corr"])))
    # no other assignment has a larger total
    assert m["abs_corr"].sum() >= np.trace(m["corr_matrix"][:k, :k]) - 1e-9


@settings(**SETTINGS)
@given(latent_pairs())
def test_property_mcc_of_a_latent_set_with_itself_is_one(pair):
    z = pair[0]
    z = z[:, z.std(0) > 0]
    if z.shape[1] == 0:
        return
    assert mcc(z, z) == pytest.approx(1.0)


@settings(**SETTINGS)
@given(latent_pairs(), st.sampled_from(["pearson", "spearman"]))
def test_property_out_of_sample_on_the_same_split_is_mcc(pair, method):
    assert mcc_out_of_sample(*pair, *pair, method=method) == pytest.approx(mcc(*pair, method=method), abs=1e-12)


@settings(**SETTINGS)
@given(latent_pairs())
def test_property_spearman_is_invariant_to_monotone_maps(pair):
    z_true, z_est = pair
    monotone = np.tanh(z_est / 7.0) * 3.0 + z_est**3
    assert mcc(z_true, monotone, method="spearman") == pytest.approx(mcc(z_true, z_est, method="spearman"), abs=1e-9)


@st.composite
def deltas(draw):
    arcs, d = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    true = draw(arrays(np.float64, (arcs, d), elements=st.sampled_from([0.0, 0.0, 1.0, -2.5])))
    est = draw(arrays(np.float64, (arcs, d), elements=st.sampled_from([0.0, 0.0, 0.3, -1.0])))
    return true, est


@settings(**SETTINGS)
@given(deltas(), st.randoms(use_true_random=False))
def test_property_support_recovery_counts(pair, rnd):
    true, est = pair
    res = support_recovery(true, est)
    assert res["tp"] + res["fn"] == np.count_nonzero(true)
    assert res["tp"] + res["fp"] == np.count_nonzero(est)
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= res[key] <= 1.0
    perfect = support_recovery(true, true * 3.0)
    assert perfect["fp"] == perfect["fn"] == 0
    # a permuted estimate with the matching that undoes the permutation scores the same
    perm = list(range(true.shape[1]))
    rnd.shuffle(perm)
    matching = {"true_index": np.arange(true.shape[1]), "est_index": np.argsort(perm)}
    assert support_recovery(true, est[:, perm], matching=matching) == res


@settings(**{**SETTINGS, "max_examples": 20})
@given(st.integers(0, 10_000), st.integers(1, 3), st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3))
def test_property_ate_error_of_a_rescaled_permuted_copy_is_zero(seed, d, scales):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(200, d))
    env = np.repeat([0, 1], 100)
    y = z @ rng.normal(size=d) + 0.1 * rng.normal(size=200)
    estimate = z[:, ::-1] * np.asarray(scales[:d])[None, :]
    assert ate_error(z, estimate, y, env) < 1e-12
