"""Tests for sctbr.metrics (MCC, ATE error, Δ support recovery)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sctbr.metrics import ate_error, ate_table, match_latents, mcc, mcc_out_of_sample, support_recovery


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# --------------------------------------------------------------------------------------------------------------------
# match_latents / mcc
# --------------------------------------------------------------------------------------------------------------------


def test_mcc_permuted_scaled_sign_flipped_is_one(rng):
    z = rng.normal(size=(300, 4))
    perm = [2, 0, 3, 1]
    scale = np.array([3.0, -0.2, 7.5, -1.0])
    z_est = z[:, perm] * scale + np.array([1.0, -5.0, 0.0, 2.0])
    assert mcc(z, z_est) == pytest.approx(1.0, abs=1e-12)
    m = match_latents(z, z_est)
    # est column k holds true column perm[k]  ->  true j is matched to est perm.index(j)
    np.testing.assert_array_equal(m["true_index"], np.arange(4))
    np.testing.assert_array_equal(m["est_index"], [perm.index(j) for j in range(4)])
    np.testing.assert_allclose(m["corr"], np.sign(scale[m["est_index"]]), atol=1e-12)
    np.testing.assert_allclose(m["abs_corr"], 1.0, atol=1e-12)
    assert m["corr_matrix"].shape == (4, 4)
    assert np.all(m["corr_matrix"] >= 0)


def test_mcc_independent_latents_small(rng):
    z = rng.normal(size=(5000, 3))
    z_other = rng.normal(size=(5000, 3))
    assert mcc(z, z_other) < 0.1


def test_mcc_rotation_mixture_matches_analytic_value(rng):
    z = rng.normal(size=(20000, 2))
    z_est = z @ _rotation(np.pi / 4)
    # each rotated coordinate has correlation cos(45°) = 1/sqrt(2) with each true coordinate
    assert mcc(z, z_est) == pytest.approx(1 / np.sqrt(2), abs=0.02)
    # and a 30° rotation gives cos(30°) on the diagonal matching
    assert mcc(z, z @ _rotation(np.pi / 6)) == pytest.approx(np.cos(np.pi / 6), abs=0.02)


def test_spearman_vs_pearson_under_monotone_transform(rng):
    z = rng.normal(size=(2000, 3))
    z_est = np.exp(z[:, [1, 2, 0]])
    assert mcc(z, z_est, method="spearman") == pytest.approx(1.0, abs=1e-12)
    assert mcc(z, z_est, method="pearson") < 0.9


def test_constant_column_no_nan_no_warning(rng):
    z = rng.normal(size=(100, 3))
    z_est = z.copy()
    z_est[:, 1] = 0.1  # constant (mean computation may leave round-off)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = match_latents(z, z_est)
        score = mcc(z, z_est)
        score_s = mcc(z, z_est, method="spearman")
    assert np.all(np.isfinite(m["corr_matrix"]))
    assert np.all(m["corr_matrix"][:, 1] == 0)
    assert np.isfinite(score)
    assert np.isfinite(score_s)
    assert score == pytest.approx(2 / 3, abs=1e-12)


def test_extreme_scales_no_underflow_or_overflow(rng):
    z = rng.normal(size=(200, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mcc(z, 1e-200 * z[:, ::-1]) == pytest.approx(1.0, abs=1e-12)
        assert mcc(1e200 * z, z) == pytest.approx(1.0, abs=1e-12)
        y = z @ np.array([1.0, -2.0])
        assert ate_error(z, 1e-200 * z[:, ::-1], y, np.repeat([0, 1], 100)) == pytest.approx(0.0, abs=1e-16)


def test_rectangular_more_estimated_latents(rng):
    z = rng.normal(size=(1000, 2))
    noise = rng.normal(size=(1000, 3))
    z_est = np.column_stack([noise[:, 0], -z[:, 1], noise[:, 1], 2 * z[:, 0], noise[:, 2]])
    m = match_latents(z, z_est)
    np.testing.assert_array_equal(m["est_index"], [3, 1])
    assert m["corr_matrix"].shape == (2, 5)
    assert mcc(z, z_est) == pytest.approx(1.0, abs=1e-12)
    # fewer estimated latents: averaged over min(d_true, d_est) = 1 pair
    assert mcc(z, z[:, 1]) == pytest.approx(1.0, abs=1e-12)
    assert len(match_latents(z, z[:, 1])["true_index"]) == 1


def test_one_dimensional_input(rng):
    z = rng.normal(size=500)
    assert mcc(z, -4 * z + 1) == pytest.approx(1.0, abs=1e-12)
    m = match_latents(z, z)
    assert m["corr_matrix"].shape == (1, 1)


def test_validation_errors(rng):
    z = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"\(10, 2\).*\(9, 2\)"):
        mcc(z, z[:9])
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mcc(z, bad)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        mcc(bad, z)
    with pytest.raises(ValueError, match="2 rows"):
        mcc(z[:1], z[:1])
    with pytest.raises(ValueError, match="pearson.*spearman"):
        mcc(z, z, method="kendall")


def test_out_of_sample_uses_fit_split_matching(rng):
    n = 2000
    z_fit = rng.normal(size=(n, 2))
    z_eval = rng.normal(size=(n, 2))
    z_est_fit = z_fit.copy()  # fit split says: true j <-> est j
    z_est_eval = z_eval[:, ::-1].copy()  # eval split alone would say: true j <-> est 1 - j
    assert mcc(z_eval, z_est_eval) == pytest.approx(1.0)
    score = mcc_out_of_sample(z_fit, z_est_fit, z_eval, z_est_eval)
    assert score < 0.1
    # consistent splits give a perfect score
    assert mcc_out_of_sample(z_fit, z_est_fit[:, ::-1], z_eval, z_est_eval) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same numbers of latents"):
        mcc_out_of_sample(z_fit, z_est_fit, z_eval, z_est_eval[:, :1])


# --------------------------------------------------------------------------------------------------------------------
# ATE
# --------------------------------------------------------------------------------------------------------------------


def _ate_data(rng, n_per_env=1500):
    weights = {"a": np.array([2.0, 0.0, 1.0]), "b": np.array([0.5, -1.5, 0.0]), "c": np.array([1.0, 1.0, -3.0])}
    envs = np.repeat(list(weights), n_per_env)
    z = rng.normal(size=(envs.size, 3))
    w = np.stack([weights[e] for e in envs])
    y = (z * w).sum(axis=1) + 0.1 * rng.normal(size=envs.size)
    return z, y, envs, weights


def test_ate_error_zero_for_rescaled_permutation(rng):
    z, y, envs, _ = _ate_data(rng)
    z_est = z[:, [2, 0, 1]] * np.array([-3.0, 0.5, 10.0]) + 4.0
    assert ate_error(z, z_est, y, envs) == pytest.approx(0.0, abs=1e-16)


def test_ate_error_large_for_rotation_mixing_latents(rng):
    z, y, envs, _ = _ate_data(rng)
    rot = np.eye(3)
    rot[:2, :2] = _rotation(np.pi / 4)
    assert ate_error(z, z @ rot, y, envs) > 0.5


def test_ate_table_structure_and_values(rng):
    z, y, envs, weights = _ate_data(rng)
    z_est = z[:, [1, 2, 0]] * -2.0
    envs_cat = pd.Categorical(envs, categories=["c", "a", "b", "unused"])
    table = ate_table(z, z_est, y, envs_cat)
    assert list(table.columns) == ["environment", "latent", "ate_true", "ate_est", "sq_error"]
    assert len(table) == 3 * 3
    # categorical order, unused category dropped
    assert list(table["environment"].astype(str).unique()) == ["c", "a", "b"]
    assert table["latent"].tolist() == [0, 1, 2] * 3
    # the standardised absolute effects approximate |w_e| (unit-variance latents)
    for env, w in weights.items():
        got = table.loc[table["environment"] == env, "ate_true"].to_numpy()
        np.testing.assert_allclose(got, np.abs(w), atol=0.1)
    np.testing.assert_allclose(table["sq_error"], (table["ate_true"] - table["ate_est"]) ** 2)
    per_env = table.groupby("environment", observed=True)["sq_error"].mean()
    assert per_env.shape == (3,)
    # plain labels are processed in sorted order
    assert list(ate_table(z, z_est, y, envs)["environment"].unique()) == ["a", "b", "c"]


def test_ate_small_environment_skipped_with_warning(rng):
    z, y, envs, _ = _ate_data(rng, n_per_env=200)
    envs = envs.astype(object)
    envs[:4] = "tiny"  # 4 < d + 2 = 5 cells
    with pytest.warns(UserWarning, match="tiny"):
        table = ate_table(z, z, y, envs)
    assert "tiny" not in set(table["environment"])
    with pytest.raises(ValueError, match="No environment"), pytest.warns(UserWarning, match="Skipping"):
        ate_table(z[:8], z[:8], y[:8], np.arange(8))


def test_ate_constant_column_within_environment(rng):
    z, y, envs, _ = _ate_data(rng, n_per_env=300)
    z_est = z.copy()
    z_est[envs == "a", 1] = 3.0  # constant within environment "a" only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = ate_table(z, z_est, y, envs)
    row = table[(table["environment"] == "a") & (table["latent"] == 1)]
    assert row["ate_est"].item() == 0.0
    assert np.all(np.isfinite(table[["ate_true", "ate_est", "sq_error"]].to_numpy()))


# --------------------------------------------------------------------------------------------------------------------
# support recovery
# --------------------------------------------------------------------------------------------------------------------


def test_support_recovery_perfect_with_matching(rng):
    delta = np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.5, 0.0, 3.0], [0.0, 0.0, 0.0]])
    perm = [2, 0, 1]
    delta_hat = delta[:, perm] * np.array([-4.0, 0.3, 2.0])
    matching = {"true_index": np.arange(3), "est_index": np.array([perm.index(j) for j in range(3)])}
    res = support_recovery(delta, delta_hat, matching=matching)
    assert (res["precision"], res["recall"], res["f1"]) == (1.0, 1.0, 1.0)
    assert (res["tp"], res["fp"], res["fn"]) == (4, 0, 0)
    # same from latents, and from DataFrames
    z = rng.normal(size=(200, 3))
    res_z = support_recovery(pd.DataFrame(delta), pd.DataFrame(delta_hat), z, z[:, perm])
    assert res_z == res
    # without matching the misaligned columns are wrong
    assert support_recovery(delta, delta_hat)["f1"] < 1.0


def test_support_recovery_hand_crafted_fp_fn():
    # true nonzeros: (arc 0, latent 0), (arc 2, latent 0), (arc 1, latent 1)
    delta = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    # estimated column 1 <-> true latent 0 (misses arc 2: 1 fn); estimated column 0 <-> true latent 1
    # (spurious arc 2: 1 fp)
    delta_hat = np.array([[0.0, 5.0], [1.0, 0.0], [7.0, 0.0]])
    matching = {"true_index": [0, 1], "est_index": [1, 0]}
    res = support_recovery(delta, delta_hat, matching=matching)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 1, 1)
    assert res["precision"] == pytest.approx(2 / 3)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(2 / 3)


def test_support_recovery_tolerances_and_conventions():
    delta = np.array([[1.0, 0.0], [0.0, 2.0]])
    tiny = np.array([[100.0, 1e-3], [1e-3, 50.0]])
    assert support_recovery(delta, tiny)["fp"] == 2
    assert support_recovery(delta, tiny, rtol=1e-3)["fp"] == 0
    assert support_recovery(delta, tiny, atol=0.01)["fp"] == 0
    zeros = np.zeros_like(delta)
    res = support_recovery(delta, zeros)
    assert (res["precision"], res["recall"], res["f1"]) == (1.0, 0.0, 0.0)
    res = support_recovery(zeros, delta)
    assert (res["precision"], res["recall"]) == (0.0, 1.0)
    res = support_recovery(zeros, zeros)
    assert (res["precision"], res["recall"], res["f1"]) == (1.0, 1.0, 1.0)
    # unmatched true column counts as an all-zero estimate
    res = support_recovery(delta, delta[:, :1], matching={"true_index": [0], "est_index": [0]})
    assert (res["tp"], res["fp"], res["fn"]) == (1, 0, 1)
    with pytest.raises(ValueError, match="arcs"):
        support_recovery(delta, delta[:1])
    with pytest.raises(ValueError, match="aligned"):
        support_recovery(delta, delta[:, :1])


# --------------------------------------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------------------------------------


@st.composite
def _latent_pair(draw, same_dim: bool = False):
    n = draw(st.integers(3, 25))
    d_true = draw(st.integers(1, 4))
    d_est = d_true if same_dim else draw(st.integers(1, 4))
    # integer-valued entries: columns are either exactly constant or vary on the scale of their values
    elements = st.integers(-20, 20).map(float)
    z_true = draw(arrays(np.float64, (n, d_true), elements=elements))
    z_est = draw(arrays(np.float64, (n, d_est), elements=elements))
    return z_true, z_est


_scales = st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(0.01, 100.0)).map(lambda t: t[0] * t[1])


@settings(max_examples=60, deadline=None)
@given(_latent_pair(), st.sampled_from(["pearson", "spearman"]))
def test_property_mcc_in_unit_interval(pair, method):
    value = mcc(*pair, method=method)
    assert 0.0 <= value <= 1.0


@settings(max_examples=60, deadline=None)
@given(_latent_pair(), st.randoms(use_true_random=False), st.lists(_scales, min_size=4, max_size=4))
def test_property_mcc_invariant_to_permutation_and_scaling(pair, rnd, scales):
    z_true, z_est = pair
    perm = list(range(z_est.shape[1]))
    rnd.shuffle(perm)
    transformed = z_est[:, perm] * np.array(scales[: z_est.shape[1]])
    assert mcc(z_true, transformed) == pytest.approx(mcc(z_true, z_est), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(_latent_pair(same_dim=True), st.sampled_from(["pearson", "spearman"]))
def test_property_mcc_symmetric(pair, method):
    z_true, z_est = pair
    assert mcc(z_true, z_est, method=method) == pytest.approx(mcc(z_est, z_true, method=method), abs=1e-9)


def test_chance_mcc_is_the_mcc_of_random_mixtures():
    from sctbr.metrics import chance_mcc

    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 5))
    independent = chance_mcc(z, n_draws=50)
    assert 0.5 < independent < 0.8
    correlated = z + 3 * rng.normal(size=(3000, 1))  # one shared factor: every mixture correlates with every latent
    assert chance_mcc(correlated, n_draws=50) > independent + 0.1
    assert chance_mcc(z, n_draws=20, random_state=1) == chance_mcc(z, n_draws=20, random_state=1)
    with pytest.raises(ValueError, match="n_draws"):
        chance_mcc(z, n_draws=0)


def test_chance_mcc_of_an_estimate_mixes_its_span():
    from sctbr.metrics import chance_mcc, mcc

    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 5))
    rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    # a full-span estimate in any basis has the chance level of the true latents (same mixtures, rotated)
    full = chance_mcc(z, z @ rotation, n_draws=200)
    assert full == pytest.approx(chance_mcc(z, n_draws=200), abs=0.02)
    # an estimate spanning 3 of the 5 latents (plus noise) has a lower chance level, and its own aligned basis
    # scores above it
    partial = np.c_[z[:, :3], rng.normal(size=(3000, 2))]
    assert chance_mcc(z, partial, n_draws=100) < full - 0.1
    assert mcc(z, partial) > chance_mcc(z, partial, n_draws=100) + 0.1
    # each draw is the MCC of the estimate mixed by a unit-column Gaussian matrix
    draw = np.random.default_rng(4).normal(size=(5, 5))
    draw /= np.linalg.norm(draw, axis=0, keepdims=True)
    assert chance_mcc(z, partial, n_draws=1, random_state=4) == pytest.approx(mcc(z, partial @ draw))
    with pytest.raises(ValueError, match="same number of rows"):
        chance_mcc(z, partial[:10])
