"""``refine_basis`` finds the latent basis with the sparsest arc changes (pure numpy/torch, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from sctbr import EnvironmentTree
from sctbr.model import refine_basis
from sctbr.model._basis import _init_unobserved, optimise_starts

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(3)  # 15 nodes, 14 arcs, 8 leaves
PARENT = np.array([-1] + [TREE.node_index([p])[0] for p, _ in TREE.arcs])
# A well-conditioned mixing of two latents, columns scaled so the mixed latents keep unit variance.
MIX = np.array([[1.0, 0.6], [-0.5, 0.9]])
MIX = MIX / np.sqrt((MIX**2).sum(axis=0))


def l1_penalty(v: np.ndarray) -> float:
    """Sum of |V_child - V_parent| over the arcs of TREE."""
    return float(np.abs(v[1:] - v[PARENT[1:]]).sum())


def sparse_truth(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Node heads with exactly one changed latent per arc (every latent changes somewhere) and their deltas."""
    rng = np.random.default_rng(seed)
    deltas = np.zeros((TREE.n_arcs, d))
    for a in range(TREE.n_arcs):
        deltas[a, a % d if a < d else rng.integers(d)] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
    w0 = rng.normal(size=d)
    return w0[None, :] + TREE.path_matrix(dtype=float) @ deltas, deltas


def mixed(w_true: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heads and latent correlation in the basis Z_mixed = Z_true @ a (Z_true white, unit variance)."""
    return w_true @ np.linalg.inv(a).T, a.T @ a


def assert_scaled_permutation(p: np.ndarray, dominance: float = 0.95) -> None:
    share = np.abs(p) / np.abs(p).sum(axis=1, keepdims=True)
    assert (share.max(axis=1) >= dominance).all(), share
    assert sorted(share.argmax(axis=1)) == list(range(p.shape[0])), share


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_the_sparse_basis(seed):
    w_true, deltas = sparse_truth(2, seed)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    start = l1_penalty(w_mixed)
    assert start > 1.2 * np.abs(deltas).sum()  # the mixing really destroys the sparsity

    m, v, value, _ = refine_basis(w_mixed, PARENT, observed, corr, random_state=0)

    # Z_new = Z_mixed M = Z_true (MIX @ M): a signed permutation (unit variance fixes the scale)
    assert_scaled_permutation(MIX @ m)
    np.testing.assert_allclose(np.abs(MIX @ m).max(axis=1), 1.0, atol=0.05)
    # the new latents keep unit variance
    np.testing.assert_allclose(np.diag(m.T @ corr @ m), 1.0, atol=1e-6)
    # heads of observed nodes are those of the mixed fit, mapped to the new basis (W M^-T)
    np.testing.assert_allclose(v[observed], w_mixed @ np.linalg.inv(m).T, atol=1e-8)
    # the reported value is the penalty of the returned heads, not above the start nor the truth
    assert value == pytest.approx(l1_penalty(v), rel=1e-9)
    assert value <= start
    assert value == pytest.approx(np.abs(deltas).sum(), rel=0.01)
    # every arc changes (almost) one latent
    diff = np.abs(v[1:] - v[PARENT[1:]])
    second, first = np.sort(diff, axis=1)[:, -2], diff.max(axis=1)
    assert (second <= 0.05 * first).all()


def test_optimise_starts_gives_every_start_and_refine_basis_returns_the_best():
    w_true, _ = sparse_truth(2, 0)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    maps, heads, values, input_value = optimise_starts(w_mixed, PARENT, observed, corr, n_starts=8, random_state=0)
    assert maps.shape == (8, 2, 2)
    assert heads.shape == (8, TREE.n_nodes, 2)
    assert values.shape == (8,)
    assert input_value == pytest.approx(l1_penalty(w_mixed), rel=1e-9)
    for i in range(8):  # each start's value is the exact penalty of its heads, which are the input's mapped by M
        h, m = heads[i].numpy(), maps[i].numpy()
        assert float(values[i]) == pytest.approx(l1_penalty(h), rel=1e-9)
        np.testing.assert_allclose(h, w_mixed @ np.linalg.inv(m).T, atol=1e-8)
    m, _, value, _ = refine_basis(w_mixed, PARENT, observed, corr, n_starts=8, random_state=0)
    best = int(values.argmin())
    assert value == pytest.approx(float(values[best]), rel=1e-12)
    np.testing.assert_array_equal(m, maps[best].numpy())


def test_optimise_starts_takes_given_starts():
    w_true, _ = sparse_truth(2, 0)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    starts = np.stack([np.eye(2), np.array([[1.0, 0.3], [0.2, 2.0]]), MIX])
    # no steps: the results are the given starts themselves, scaled to unit-variance latents
    maps, _, _, _ = optimise_starts(w_mixed, PARENT, observed, corr, n_steps=0, n_starts=8, starts=starts)
    assert maps.shape == (3, 2, 2)
    for start, m in zip(starts, maps.numpy(), strict=True):
        np.testing.assert_allclose(m, start / np.sqrt(np.einsum("ij,ik,kj->j", start, corr, start)), atol=1e-12)
    # with steps, the log penalty from the unmixing start keeps the sparse basis (a scaled permutation)
    maps, _, values, input_value = optimise_starts(
        w_mixed, PARENT, observed, corr, penalty="log", starts=np.stack([np.linalg.inv(MIX)])
    )
    assert_scaled_permutation(MIX @ maps[0].numpy())
    assert float(values[0]) < input_value


def test_identity_is_optimal_when_already_sparse():
    w_true, deltas = sparse_truth(2, 0)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    m, _, value, _ = refine_basis(w_true, PARENT, observed, np.eye(2), random_state=0)
    assert_scaled_permutation(m)
    assert value <= l1_penalty(w_true) + 1e-9


def test_leaves_only_reoptimises_internal_nodes():
    w_true, deltas = sparse_truth(2, 0)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.isin(np.asarray(TREE.nodes), TREE.leaves)
    assert observed.sum() == 8
    # internal rows are unobserved: their input values must not matter
    w_input = w_mixed.copy()
    w_input[~observed] = 1e3

    m, v, value, start = refine_basis(w_input, PARENT, observed, corr, random_state=0)

    assert np.isfinite(v).all()
    np.testing.assert_allclose(v[observed], w_mixed[observed] @ np.linalg.inv(m).T, atol=1e-8)
    assert value == pytest.approx(l1_penalty(v), rel=1e-9)
    # at least as good as the truth (whose internal heads are one feasible choice) and as the start
    assert value <= np.abs(deltas).sum() + 1e-6
    assert value <= start + 1e-12


def test_log_penalty_runs_and_does_not_increase():
    w_true, _ = sparse_truth(2, 1)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    m, v, value, start = refine_basis(w_mixed, PARENT, observed, corr, penalty="log", random_state=0)
    assert np.isfinite(m).all()
    assert np.isfinite(v).all()
    assert value <= start + 1e-12
    assert_scaled_permutation(MIX @ m)


def test_same_seed_same_result():
    w_true, _ = sparse_truth(2, 0)
    w_mixed, corr = mixed(w_true, MIX)
    observed = np.ones(TREE.n_nodes, dtype=bool)
    first = refine_basis(w_mixed, PARENT, observed, corr, random_state=3, n_starts=4, n_steps=50)
    second = refine_basis(w_mixed, PARENT, observed, corr, random_state=3, n_starts=4, n_steps=50)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_never_worse_than_the_input_with_a_free_root():
    # The simulator's setting: every node but the root observed. The input is already optimal (A = I).
    observed = np.ones(TREE.n_nodes, dtype=bool)
    observed[0] = False
    worse = []
    for seed in range(2):
        w_true, _ = sparse_truth(2, seed)
        _, _, value, _ = refine_basis(w_true, PARENT, observed, np.eye(2), random_state=0)
        if value > l1_penalty(w_true) + 1e-9:
            worse.append((seed, value, l1_penalty(w_true)))
    assert not worse


def test_init_unobserved_is_mean_of_observed_descendants():
    #      r
    #    a    b
    #   c d   e
    parent = np.array([-1, 0, 0, 1, 1, 2])
    v = np.arange(12, dtype=float).reshape(6, 2)
    observed = np.array([False, False, True, True, True, False])
    init = _init_unobserved(v, parent, observed)
    # free nodes: r (descendants b, c, d observed), a (c, d), e (none -> 0)
    np.testing.assert_allclose(init[0], v[[2, 3, 4]].mean(0))
    np.testing.assert_allclose(init[1], v[[3, 4]].mean(0))
    np.testing.assert_allclose(init[2], 0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_polish_lands_exactly_on_the_sparse_basis(seed):
    """Gradient steps on the smoothed penalty stop near the sparse basis; the exact polish lands on it.

    Three correlated latents, the root's head free: the refined penalty equals the truth's (to 1e-9) with the
    polish, and stays measurably above it without (``n_polish=0``), so the test fails if the polish breaks.
    """
    from sctbr.model._basis_lp import polish

    w_true, _ = sparse_truth(3, seed)
    a = np.array([[1.0, 0.5, 0.2], [-0.4, 1.0, 0.3], [0.2, -0.6, 1.0]])
    a = a / np.sqrt((a**2).sum(axis=0))
    heads, corr = mixed(w_true, a)
    observed = PARENT >= 0
    truth = polish(np.eye(3), w_true, PARENT, observed, np.eye(3))[3]  # exact, the root's head at its optimum
    m, v, best, _ = refine_basis(heads, PARENT, observed, corr, random_state=seed, lp_start=True)
    assert best == pytest.approx(truth, rel=1e-9)
    assert best == pytest.approx(l1_penalty(v), rel=1e-9)  # the reported penalty is that of the returned heads
    assert_scaled_permutation(a @ m, dominance=0.999)
    rough = refine_basis(heads, PARENT, observed, corr, random_state=seed, lp_start=True, n_polish=0)[2]
    assert rough > truth * (1 + 1e-6)
