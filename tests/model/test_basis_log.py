"""``final_objective="log"``: the exact log value, tree parsimony, the log search and its margin rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sctbr import EnvironmentTree
from sctbr.metrics import mcc
from sctbr.model import TBR
from sctbr.model._basis_log import exact_log_value, log_refine, parsimony

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(4)  # 31 nodes, 30 arcs, 16 leaves: only the leaves observed
PARENT = np.array([-1] + [TREE.node_index([p])[0] for p, _ in TREE.arcs])
LEAVES = np.array([TREE.is_leaf(n) for n in TREE.nodes])


def test_exact_log_value_is_the_minimum_over_the_free_heads():
    """A root with three observed children: the value is the smallest penalty over every root head (a fine grid)."""
    parent, observed = np.array([-1, 0, 0, 0]), np.array([False, True, True, True])
    heads = np.array([[0.0, 0.0], [0.1, -1.0], [0.5, 0.2], [0.45, 0.9]])
    eps = 0.05
    grid = np.linspace(-2, 2, 40001)

    def best(j):
        v = heads[1:, j]
        return (eps * np.log1p(np.abs(v[None, :] - grid[:, None]) / eps)).sum(1).min()

    value = exact_log_value(heads, parent, observed, eps)
    assert value == pytest.approx(best(0) + best(1), abs=1e-4)
    # an observed root is fixed at its own head
    fixed = exact_log_value(heads, parent, np.ones(4, dtype=bool), eps)
    own = (eps * np.log1p(np.abs(heads[1:] - heads[0]) / eps)).sum()
    assert fixed == pytest.approx(own)


def test_parsimony_counts_the_fewest_changed_arcs():
    """Balanced depth-2 tree, leaves observed: one change splits the leaves by subtree, interleaved values need 2."""
    tree = EnvironmentTree.balanced(2)
    parent = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs])
    leaves = np.flatnonzero([tree.is_leaf(n) for n in tree.nodes])  # n3, n4 under n1; n5, n6 under n2
    values = np.array([[1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.05, 2.0, 2.04]])
    np.testing.assert_array_equal(parsimony(values, parent, leaves, 0.1), [1, 2, 0, 1])
    np.testing.assert_array_equal(parsimony(values[3:], parent, leaves, 0.01), [3])  # 1.05 and 2.04 now differ
    # many candidates at once (states padded to the largest count) = the fewest changes over every labelling
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(200, 4)).astype(float)
    internal = [i for i in range(tree.n_nodes) if i not in leaves]
    for row, count in zip(values, parsimony(values, parent, leaves, 0.5), strict=True):
        best = np.inf
        for labels in itertools.product(range(4), repeat=len(internal)):
            node = np.empty(tree.n_nodes)
            node[leaves], node[internal] = row, labels
            best = min(best, int((node[1:] != node[parent[1:]]).sum()))
        assert count == best


def _leaves_only_truth(seed: int, d: int = 3):
    """Heads of TREE with one change per arc; only the leaves observed; a well-conditioned unit-variance mixing."""
    rng = np.random.default_rng(seed)
    deltas = np.zeros((TREE.n_arcs, d))
    for a in range(TREE.n_arcs):
        deltas[a, a % d] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
    w_true = rng.normal(size=d)[None, :] + TREE.path_matrix(dtype=float) @ deltas
    a = np.eye(d) + 0.6 * rng.normal(size=(d, d))
    a = a / np.sqrt((a**2).sum(axis=0))  # Z_mixed = Z_true @ a keeps unit variance
    return w_true @ np.linalg.inv(a).T, a.T @ a, a


@pytest.mark.parametrize("seed", [0, 1])
def test_log_refine_switches_from_a_mixture_to_the_true_basis(seed):
    """Given a mixture of the true latents as the l1 basis, the search finds a basis clearly sparser in the log
    penalty, and it is the truth. (With the polish's first step the plain l1 program, as before 2026-12-02, seed 0
    ended at a mixture, MCC 0.76.)"""
    heads, corr, a = _leaves_only_truth(seed)
    m_mixed = np.eye(3)
    z = np.random.default_rng(seed).normal(size=(400, 3))
    assert mcc(z, z @ a) < 0.9
    m, ratio = log_refine(heads, PARENT, LEAVES, corr, m_mixed, random_state=seed)
    assert ratio < 0.95
    assert m is not m_mixed
    assert mcc(z, z @ a @ m) > 0.99  # the new latents are the true ones up to permutation and scale
    if seed == 0:  # a margin larger than the gain keeps the given map as it is
        kept, same = log_refine(heads, PARENT, LEAVES, corr, m_mixed, margin=1 - ratio + 0.01, random_state=seed)
        assert kept is m_mixed
        assert same == ratio


def test_train_with_the_log_objective_records_the_search(make_adata, fast_model_kwargs, fast_train_kwargs):
    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], **fast_model_kwargs)
    with pytest.raises(ValueError, match="`final_objective` must be 'l1' or 'log'"):
        model.train(final_objective="l0", **fast_train_kwargs)
    assert not model.is_trained_
    model.train(final_objective="log", **fast_train_kwargs)
    out = model.final_refinement_
    assert 0 < out["log_ratio"] < 10
    assert isinstance(out["log_switched"], bool)
    assert out["log_switched"] == (out["log_ratio"] < 0.95)
    default = TBR(adata, tree=adata.uns["environment_tree"], **fast_model_kwargs)
    default.train(**fast_train_kwargs)
    assert "log_ratio" not in default.final_refinement_
    if not out["log_switched"]:  # the l1 basis kept: the same fit as the default
        np.testing.assert_allclose(model.get_latent_representation(), default.get_latent_representation())


def test_log_refine_keeps_the_basis_when_nothing_changes():
    """Equal heads everywhere (k = 0): every basis has no changes, so the given map stays and the ratio is 1."""
    heads = np.tile(np.array([[0.5, -1.0, 0.2]]), (TREE.n_nodes, 1))
    m_given = np.eye(3)
    m, ratio = log_refine(heads, PARENT, LEAVES, np.eye(3), m_given)
    assert m is m_given
    assert ratio == 1.0


def test_log_objective_refuses_large_trees_before_training(
    make_adata, fast_model_kwargs, fast_train_kwargs, monkeypatch
):
    """The search grows with the tree: above the cap the fit fails at once, with the fix in the message."""
    monkeypatch.setattr("sctbr.model._basis_log.LOG_MAX_ENVIRONMENTS", 3)
    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], **fast_model_kwargs)
    with pytest.raises(ValueError, match=r"at most 3 environments, this model has \d+.*final_objective='l1'"):
        model.train(final_objective="log", **fast_train_kwargs)
    assert not model.is_trained_
    model.train(final_objective="l1", **fast_train_kwargs)  # the l1 objective has no cap
    assert model.is_trained_


@pytest.mark.parametrize(("n_obs", "d"), [(3, 5), (8, 1)])
def test_log_refine_runs_with_few_environments_or_one_latent(n_obs, d):
    """Three observed cell types for five latents (too few close pairs for support directions), or one latent:
    the search still returns a valid map (one latent: the given one, nothing to search)."""
    tree = EnvironmentTree.balanced(2) if n_obs == 3 else EnvironmentTree.balanced(3)
    parent = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs])
    observed = np.zeros(tree.n_nodes, dtype=bool)
    observed[np.flatnonzero([tree.is_leaf(n) for n in tree.nodes])[:n_obs]] = True
    heads = np.random.default_rng(0).normal(size=(tree.n_nodes, d))
    m_given = np.eye(d)
    m, ratio = log_refine(heads, parent, observed, np.eye(d), m_given)
    assert m.shape == (d, d)
    assert np.isfinite(m).all()
    assert abs(np.linalg.det(m)) > 1e-8
    if d == 1:
        assert m is m_given
        assert ratio == 1.0
