"""select_n_latent, stability and causal_effects: what they recover on simulations, their storage and plots."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import sctbr  # noqa: E402
from sctbr.metrics import ate_table, match_latents, mcc  # noqa: E402
from sctbr.tl._select import plateau  # noqa: E402

# Small but real fits: a linear Psi that the encoder can represent, so that a fit with the true number of latents
# reaches the noise floor within 60 epochs (lr 1e-2, batches of 64). Measured on these data (seed 0): validation MSE
# at the true size within 4% (2 latents) and 2% (3 latents) of the minimum, one latent fewer 2.6x and 1.46x above.
SIM = {"depth": 3, "n_obs_per_env": 100, "n_inputs": 6, "k": 1, "psi": "linear", "noise_y": 0.3, "random_state": 0}
FIT = {"hidden": (32,), "lr": 1e-2, "batch_size": 64, "accelerator": "cpu"}
SELECT_EPOCHS = 60
STABILITY_EPOCHS = 40


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _simulate(**kwargs) -> ad.AnnData:
    return sctbr.datasets.simulate(**{**SIM, **kwargs})


def _roundtrip(adata: ad.AnnData, tmp_path) -> ad.AnnData:
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path)


def _runs(adata: ad.AnnData, key: str = "tbr_stability") -> np.ndarray:
    """The stability runs' latents as runs x cells x latents, from their obsm entry (cells x (runs * latents))."""
    res = adata.uns[key]
    z = np.asarray(adata.obsm[res["obsm_key"]])
    return z.reshape(adata.n_obs, int(res["summary"]["n_seeds"]), int(res["summary"]["n_latent"])).transpose(1, 0, 2)


def _snapshot(adata: ad.AnnData) -> tuple:
    return (list(adata.obs.columns), list(adata.obsm.keys()), sorted(adata.uns.keys()), adata.X.copy())


def _unchanged(adata: ad.AnnData, snap: tuple) -> bool:
    obs, obsm, uns, x = snap
    return (
        list(adata.obs.columns) == obs
        and list(adata.obsm.keys()) == obsm
        and sorted(adata.uns.keys()) == uns
        and np.array_equal(adata.X, x)
    )


# -- select_n_latent ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selected(torch_single_thread) -> dict:
    """select_n_latent on k = 1 simulations with 2 and 3 true latents (candidates 1..4)."""
    out = {}
    for true in (2, 3):
        adata = _simulate(n_latent=true)
        snap = _snapshot(adata)
        sctbr.tl.select_n_latent(adata, candidates=range(1, 5), max_epochs=SELECT_EPOCHS, **FIT)
        out[true] = (adata, snap)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("true", [2, 3])
def test_select_n_latent_recovers_the_true_size(selected, true, tmp_path):
    adata, snap = selected[true]
    res = adata.uns["tbr_n_latent"]
    curve = res["curve"]
    print(f"true {true}:\n{curve.round(4).to_string()}")
    assert res["n_latent"] == true
    assert curve["n_latent"].tolist() == [1, 2, 3, 4]
    assert curve.loc[curve["selected"], "n_latent"].tolist() == [true]
    # the plateau: fewer latents are clearly worse, the chosen size is close to the best
    val = curve.set_index("n_latent")["validation_mse"]
    assert val[true - 1] > 1.3 * val.min()
    assert val[true] <= res["threshold"] <= val.min() * (1 + res["params"]["rtol"]) + curve["validation_se"].max()
    assert (curve["fit_seconds"] > 0).all()
    assert (curve["train_mse"] > 0).all()
    # only uns[key_added] was added; it survives h5ad
    obs, obsm, uns, x = snap
    assert list(adata.obs.columns) == obs
    assert list(adata.obsm.keys()) == obsm
    assert sorted(adata.uns.keys()) == sorted([*uns, "tbr_n_latent"])
    back = _roundtrip(adata, tmp_path)
    assert int(back.uns["tbr_n_latent"]["n_latent"]) == true
    pd.testing.assert_frame_equal(back.uns["tbr_n_latent"]["curve"], curve, check_dtype=False)


def test_plateau_rule_is_the_smallest_size_within_tolerance_of_the_minimum():
    # within rtol (10%) of the minimum 0.10: 0.105 qualifies, 0.2 does not
    assert plateau([0.5, 0.2, 0.105, 0.1], [0.0, 0.0, 0.0, 0.0], 0.1) == (2, pytest.approx(0.11))
    # the standard error of the minimum widens the tolerance when it exceeds rtol * min
    assert plateau([0.5, 0.14, 0.105, 0.1], [0.0, 0.0, 0.0, 0.05], 0.1) == (1, pytest.approx(0.15))
    # rtol = 0 and no standard error: the minimum itself
    assert plateau([0.5, 0.2, 0.105, 0.1], [np.nan] * 4, 0.0)[0] == 3


def _fake_fit_once(errors: dict[int, float]):
    """A stand-in for one tl.tbr fit whose validation MSE is ``errors[n_latent]`` (no training)."""
    from sctbr.tl._refit import Fit

    def fake(work, *, n_latent, random_state, fit_kwargs):
        n = work.n_obs
        split = np.where(np.arange(n) % 5 == 0, "validation", "train")
        y = np.zeros(n)
        pred = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * np.sqrt(errors[n_latent])
        return Fit(np.zeros((n, n_latent), np.float32), pred, y, split, 0.0, {"target": "y", "groupby": "environment"})

    return fake


def test_select_n_latent_warns_when_the_error_keeps_falling(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", _fake_fit_once({1: 1.0, 2: 0.5, 3: 0.2}))
    adata = make_adata()
    with pytest.warns(UserWarning, match="did not plateau within candidates"):
        sctbr.tl.select_n_latent(adata, candidates=[3, 1, 2])
    res = adata.uns["tbr_n_latent"]
    assert res["n_latent"] == 3
    assert res["curve"]["n_latent"].tolist() == [1, 2, 3]
    assert np.allclose(res["curve"]["validation_mse"], [1.0, 0.5, 0.2])


def test_select_n_latent_with_inplace_false_returns_the_result_and_leaves_adata_untouched(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", _fake_fit_once({1: 1.0, 2: 0.21, 3: 0.2, 4: 0.2}))
    adata = make_adata()
    snap = _snapshot(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plateau: no warning
        res = sctbr.tl.select_n_latent(adata, candidates=range(1, 5), inplace=False)
    assert _unchanged(adata, snap)
    assert set(res) == {"curve", "n_latent", "threshold", "params"}
    assert res["n_latent"] == 2
    assert res["threshold"] == pytest.approx(0.22)
    assert list(res["curve"].columns) == [
        "n_latent", "validation_mse", "validation_se", "train_mse", "fit_seconds", "selected"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"candidates": [2]}, ValueError, "at least two"),
        ({"candidates": [0, 1]}, ValueError, "positive integers"),
        ({"candidates": 3}, TypeError, "sequence"),
        ({"rtol": -0.1}, ValueError, "rtol"),
        ({"n_latent": 2}, TypeError, "sets"),
        ({"validation_size": 0.0}, ValueError, "validation_size"),
        ({"target": "nope"}, KeyError, "nope"),
        ({"tree": "not_a_key"}, ValueError, "neither a key"),
    ],
)
def test_select_n_latent_rejects_bad_input_and_leaves_adata_untouched(make_adata, kwargs, error, match):
    adata = make_adata()
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        sctbr.tl.select_n_latent(adata, **{"max_epochs": 1, "accelerator": "cpu", **kwargs})
    assert _unchanged(adata, snap)


# -- stability ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stabilities(torch_single_thread) -> dict:
    """stability with 3 seeds on k = 1 (identified) and k = 0 (not identified) simulations, 2 latents."""
    out = {}
    for k in (1, 0):
        adata = _simulate(n_latent=2, k=k)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sctbr.tl.stability(adata, n_seeds=3, n_latent=2, max_epochs=STABILITY_EPOCHS, **FIT)
        messages = [
            str(w.message) for w in caught if issubclass(w.category, UserWarning) and "stable" in str(w.message)
        ]
        out[k] = (adata, messages)
    return out


@pytest.mark.slow
def test_stability_tracks_the_true_mcc(stabilities, tmp_path):
    summary, true = {}, {}
    for k, (adata, _) in stabilities.items():
        res = adata.uns["tbr_stability"]
        summary[k] = res["summary"]["mean_mcc"]
        true[k] = [mcc(adata.obsm["Z_true"], z) for z in _runs(adata)]
        print(f"k={k}: stability (mean pairwise MCC) {summary[k]:.3f}, true MCC of each run {np.round(true[k], 3)}")
    # identified at k = 1: every run close to the truth and the runs agree; at k = 0 neither
    assert summary[1] > 0.95
    assert min(true[1]) > 0.95
    # measured with data seeds 0/1/2: stability 0.997/0.997/0.997 (true 0.99/0.99/0.96) at k = 1 and
    # 0.36/0.76/0.80 (true at most 0.50/0.57/0.76) at k = 0
    assert summary[0] < 0.9
    assert summary[1] - summary[0] > 0.15
    assert max(true[0]) < 0.8
    # the ordering agrees: the stability of every k = 1 pair beats every k = 0 pair, as the true MCC does
    assert (
        stabilities[1][0].uns["tbr_stability"]["summary"]["min_mcc"]
        > stabilities[0][0].uns["tbr_stability"]["matrix"].to_numpy()[np.triu_indices(3, 1)].max()
    )
    assert min(true[1]) > max(true[0])
    # the user sees a warning exactly when agreement is low
    assert stabilities[1][1] == []
    assert len(stabilities[0][1]) == 1
    assert "not stable across seeds" in stabilities[0][1][0]
    # the runs' latents are per cell: obsm (cells x (runs * latents)), not uns; they survive h5ad
    assert "latents" not in stabilities[1][0].uns["tbr_stability"]
    back = _roundtrip(stabilities[1][0], tmp_path)
    assert back.uns["tbr_stability"]["obsm_key"] == "X_tbr_stability"
    assert back.obsm["X_tbr_stability"].shape == (stabilities[1][0].n_obs, 3 * 2)
    np.testing.assert_array_equal(_runs(back), _runs(stabilities[1][0]))


@pytest.mark.slow
def test_stability_tables_are_tidy_and_consistent(stabilities):
    adata, _ = stabilities[1]
    res = adata.uns["tbr_stability"]
    pairs, matrix = res["pairs"], res["matrix"]
    assert list(pairs.columns) == ["seed_a", "seed_b", "latent", "matched_latent", "corr", "abs_corr"]
    assert len(pairs) == 3 * 2  # 3 pairs of runs x 2 latents
    assert matrix.shape == (3, 3)
    assert np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix, matrix.T)
    # the pair MCC is the mean over the pair's latents, and equals sctbr.metrics.mcc of the two runs
    z = _runs(adata)
    for (a, b), grp in pairs.groupby(["seed_a", "seed_b"]):
        assert matrix.loc[str(a), str(b)] == pytest.approx(grp["abs_corr"].mean())
        assert matrix.loc[str(a), str(b)] == pytest.approx(mcc(z[a], z[b]))
    per = res["per_latent"]
    assert per["latent"].tolist() == ["latent_0", "latent_1"]
    assert per["stable"].all()
    assert (per["min_abs_corr"] <= per["mean_abs_corr"]).all()
    assert res["runs"]["seed"].tolist() == [0, 1, 2]
    assert res["summary"]["stable"]


def test_stability_rejects_bad_input_and_leaves_adata_untouched(make_adata):
    adata = make_adata()
    snap = _snapshot(adata)
    with pytest.raises(ValueError, match="n_seeds"):
        sctbr.tl.stability(adata, n_seeds=1)
    with pytest.raises(ValueError, match="threshold"):
        sctbr.tl.stability(adata, threshold=1.5)
    with pytest.raises(TypeError, match="sets"):
        sctbr.tl.stability(adata, random_state=0, key_added="x", copy=True)
    with pytest.raises(KeyError, match="nope"):
        sctbr.tl.stability(adata, groupby="nope", max_epochs=1, accelerator="cpu")
    assert _unchanged(adata, snap)


# -- causal_effects ----------------------------------------------------------------------------------------------


def _true_effects(adata: ad.AnnData, cells: np.ndarray | None = None) -> pd.DataFrame:
    """The true standardised effect of every true latent in every environment: w_e[j] * sd_e(z_j)."""
    sim = adata.uns["simulation"]
    weights = pd.DataFrame(sim["weights"], index=[str(n) for n in sim["nodes"]])
    env = adata.obs["environment"].astype(str).to_numpy()
    z = np.asarray(adata.obsm["Z_true"], dtype=float)
    cells = np.ones(adata.n_obs, bool) if cells is None else cells
    rows = {}
    for e in pd.unique(env[cells]):
        m = cells & (env == e)
        rows[e] = weights.loc[e].to_numpy() * z[m].std(axis=0)
    return pd.DataFrame(rows).T


def _with_latents(adata: ad.AnnData, latents: np.ndarray, key: str = "tbr") -> ad.AnnData:
    adata.obsm[f"X_{key}"] = latents
    adata.uns[key] = {"params": {"target": "y", "groupby": "environment"}}
    return adata


def test_causal_effects_intervals_have_their_nominal_coverage_on_exact_latents(tmp_path):
    # with the true latents the OLS model is exact: 95% intervals cover the true effects 95% of the time
    adata = _simulate(depth=4, n_latent=3, n_obs_per_env=60)
    z = np.asarray(adata.obsm["Z_true"])
    _with_latents(adata, z)
    table = sctbr.tl.causal_effects(adata)
    assert list(table.columns) == ["environment", "latent", "effect", "se", "ci_low", "ci_high", "p_value", "n_cells"]
    assert len(table) == 30 * 3
    assert (table["n_cells"] == 60).all()
    assert table["environment"].cat.categories.tolist()[:2] == ["n0", "n1"]  # tree order
    truth = _true_effects(adata)
    t = truth.to_numpy()[
        [truth.index.get_loc(e) for e in table["environment"].astype(str)], table["latent"].cat.codes.to_numpy()
    ]
    covered = (table["ci_low"] <= t) & (t <= table["ci_high"])
    print(f"coverage of 95% intervals with exact latents: {covered.mean():.3f} over {len(table)}")
    assert 0.88 <= covered.mean() <= 1.0
    assert (table["ci_low"] < table["effect"]).all()
    assert (table["effect"] < table["ci_high"]).all()
    # the same coefficients (in absolute value) as the paper's ATE table
    ate = ate_table(z, z, adata.obs["y"].to_numpy(), adata.obs["environment"])
    assert np.allclose(np.abs(table["effect"]), ate["ate_true"])
    # 99% intervals are wider; permuting, rescaling and flipping the latents permutes and flips the effects
    wide = sctbr.tl.causal_effects(adata, alpha=0.01)
    assert ((wide["ci_high"] - wide["ci_low"]) > (table["ci_high"] - table["ci_low"])).all()
    _with_latents(adata, -3.0 * z[:, ::-1])
    flipped = sctbr.tl.causal_effects(adata)
    assert np.allclose(flipped["effect"].to_numpy().reshape(30, 3), -table["effect"].to_numpy().reshape(30, 3)[:, ::-1])
    _roundtrip(adata, tmp_path)


def _hand_written_ols(z: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """The hand-written OLS that causal_effects used before statsmodels (kept as the reference of the switch)."""
    from scipy import stats

    n, d = z.shape
    sd = z.std(axis=0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(z).max(axis=0))
    out = {name: np.full(d, np.nan) for name in ("effect", "se", "ci_low", "ci_high", "p_value")}
    p = int(keep.sum())
    dof = n - p - 1
    if p == 0 or dof < 1:
        return out
    zs = (z[:, keep] - z[:, keep].mean(axis=0)) / sd[keep]
    design = np.column_stack([np.ones(n), zs])
    beta, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    if rank < design.shape[1]:
        return out
    resid = y - design @ beta
    cov = float(resid @ resid) / dof * np.linalg.inv(design.T @ design)
    se = np.sqrt(np.clip(np.diag(cov)[1:], 0.0, None))
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, dof))
    coef = beta[1:]
    out["effect"][keep], out["se"][keep] = coef, se
    out["ci_low"][keep], out["ci_high"][keep] = coef - crit * se, coef + crit * se
    out["p_value"][keep] = 2.0 * stats.t.sf(np.abs(coef / se), dof)
    return out


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_causal_effects_equal_the_hand_written_ols(make_adata, alpha, tmp_path):
    # statsmodels' plain OLS gives the numbers of the hand-written OLS it replaced, to 1e-8
    adata = make_adata()
    rng = np.random.default_rng(0)
    z = np.column_stack([np.asarray(adata.obsm["Z_true"]), rng.normal(size=adata.n_obs)])
    env = adata.obs["environment"].astype(str).to_numpy()
    z[env == "n01", 2] = 1.5  # a latent constant within one environment: NaN there, the others still estimated
    _with_latents(adata, z)
    table = sctbr.tl.causal_effects(adata, alpha=alpha)
    y = adata.obs["y"].to_numpy(dtype=float)
    for e, rows in table.groupby("environment", observed=True):
        ref = _hand_written_ols(z[env == e], y[env == e], alpha)
        for col in ("effect", "se", "ci_low", "ci_high", "p_value"):
            np.testing.assert_allclose(rows[col].to_numpy(), ref[col], rtol=1e-8, atol=1e-8, err_msg=f"{e} {col}")
    assert table.loc[table["environment"] == "n01", "effect"].isna().tolist() == [False, False, True]
    # robust (HC3) standard errors: the same effects, other intervals; HC3 = (X'X)^-1 X' diag(e^2 / (1-h)^2) X (X'X)^-1
    robust = sctbr.tl.causal_effects(adata, alpha=alpha, cov_type="HC3")
    np.testing.assert_allclose(robust["effect"], table["effect"], rtol=1e-10)
    cells = env == "n0"
    zs = (z[cells] - z[cells].mean(axis=0)) / z[cells].std(axis=0)
    design = np.column_stack([np.ones(cells.sum()), zs])
    bread = np.linalg.inv(design.T @ design)
    resid = y[cells] - design @ (bread @ design.T @ y[cells])
    h = np.einsum("ij,jk,ik->i", design, bread, design)
    hc3 = bread @ (design.T * (resid / (1 - h)) ** 2) @ design @ bread
    np.testing.assert_allclose(robust.loc[robust["environment"] == "n0", "se"], np.sqrt(np.diag(hc3)[1:]), rtol=1e-8)
    with pytest.raises(ValueError, match="cov_type"):
        sctbr.tl.causal_effects(adata, cov_type="HC9")
    _roundtrip(adata, tmp_path)


@pytest.fixture(scope="module")
def fitted_k1(torch_single_thread) -> ad.AnnData:
    """tl.tbr on the k = 1 simulation of the stability test, with the settings and seed of its first run."""
    adata = _simulate(n_latent=2)
    sctbr.tl.tbr(adata, n_latent=2, max_epochs=STABILITY_EPOCHS, random_state=0, enable_progress_bar=False, **FIT)
    return adata


@pytest.mark.slow
def test_causal_effects_of_tbr_latents_recover_the_true_effects(fitted_k1, tmp_path):
    adata = fitted_k1
    match = match_latents(adata.obsm["Z_true"], adata.obsm["X_tbr"])
    print(f"MCC of the fit: {match['abs_corr'].mean():.3f}")
    for split in (None, "validation"):
        table = sctbr.tl.causal_effects(adata, split=split)
        cells = None if split is None else (adata.obs["tbr_split"] == split).to_numpy()
        truth = _true_effects(adata, cells)
        est, tru, covered = [], [], []
        for t_idx, e_idx, corr in zip(match["true_index"], match["est_index"], match["corr"], strict=True):
            rows = table[table["latent"] == f"latent_{e_idx}"]
            sign = np.sign(corr)  # latents are identified up to sign (and scale, removed by the z-scoring)
            t = truth.loc[rows["environment"].astype(str), t_idx].to_numpy()
            est.append(sign * rows["effect"].to_numpy())
            tru.append(t)
            covered.append((rows["ci_low"].to_numpy() <= sign * t) & (sign * t <= rows["ci_high"].to_numpy()))
        est, tru, covered = np.concatenate(est), np.concatenate(tru), np.concatenate(covered)
        err = np.abs(est - tru)
        print(
            f"split={split}: mean |error| {err.mean():.3f} (mean |effect| {np.abs(tru).mean():.3f}), "
            f"corr {np.corrcoef(est, tru)[0, 1]:.3f}, coverage of 95% intervals {covered.mean():.2f}"
        )
        assert np.corrcoef(est, tru)[0, 1] > 0.97
        assert err.mean() < 0.2 * np.abs(tru).mean()
        # the intervals carry the sampling noise, not the small mixing left in the latents: coverage below 95%
        assert covered.mean() >= (0.4 if split is None else 0.75)
    assert table.drop_duplicates("environment")["n_cells"].sum() == (adata.obs["tbr_split"] == "validation").sum()
    # the paper's ATE error of these latents is small (its Table 3: 0.05 for TBR at k = 1)
    ate = ate_table(adata.obsm["Z_true"], adata.obsm["X_tbr"], adata.obs["y"].to_numpy(), adata.obs["environment"])
    print(f"ATE error: {ate['sq_error'].mean():.4f}")
    full = sctbr.tl.causal_effects(adata)
    est_abs = full.pivot(index="environment", columns="latent", values="effect").abs()
    ate_est = ate.pivot(index="environment", columns="latent", values="ate_est")
    assert np.allclose(est_abs.to_numpy()[:, match["est_index"]], ate_est.to_numpy()[:, match["true_index"]])
    _roundtrip(adata, tmp_path)


@pytest.mark.slow
def test_stability_first_run_is_the_tl_tbr_fit(stabilities, fitted_k1):
    assert np.allclose(_runs(stabilities[1][0])[0], fitted_k1.obsm["X_tbr"])


def test_causal_effects_errors_are_clear(make_adata):
    adata = make_adata()
    with pytest.raises(KeyError, match=r"Run sctbr.tl.tbr\(adata, key_added='tbr'\) first"):
        sctbr.tl.causal_effects(adata)
    _with_latents(adata, np.asarray(adata.obsm["Z_true"]))
    with pytest.raises(ValueError, match="alpha"):
        sctbr.tl.causal_effects(adata, alpha=1.5)
    with pytest.raises(ValueError, match="per-cell split"):
        sctbr.tl.causal_effects(adata, split="validation")
    with pytest.raises(ValueError, match="split"):
        sctbr.tl.causal_effects(adata, split="holdout")
    with pytest.raises(KeyError, match="nope"):
        sctbr.tl.causal_effects(adata, groupby="nope")
    with pytest.raises(KeyError, match="nope"):
        sctbr.tl.causal_effects(adata, target="nope")
    with pytest.raises(KeyError, match="key='other'|one of"):
        sctbr.tl.causal_effects(adata, key="other")
    # an environment with too few cells is skipped, with a warning naming it
    small = adata[np.r_[np.arange(200), 200:203]].copy()
    with pytest.warns(UserWarning, match="fewer than 4 cells"):
        table = sctbr.tl.causal_effects(small)
    assert table["n_cells"].min() >= 4


def test_causal_effects_without_groupby_uses_all_cells(make_adata):
    adata = _with_latents(make_adata(), np.asarray(make_adata().obsm["Z_true"]))
    adata.uns["tbr"]["params"]["groupby"] = ""
    table = sctbr.tl.causal_effects(adata)
    assert table["environment"].astype(str).unique().tolist() == ["all cells"]
    assert (table["n_cells"] == adata.n_obs).all()


# -- plots -------------------------------------------------------------------------------------------------------


def test_pl_causal_effects_draws_one_interval_per_environment_and_latent(make_adata):
    adata = _with_latents(make_adata(), np.asarray(make_adata().obsm["Z_true"]))
    table = sctbr.tl.causal_effects(adata)
    ax = sctbr.pl.causal_effects(table, show=False)
    assert isinstance(ax, Axes)
    assert len(ax.containers) == 2  # one errorbar container per latent
    for container, latent in zip(ax.containers, ["latent_0", "latent_1"], strict=True):
        x = container.lines[0].get_xdata()
        assert np.allclose(x, table.loc[table["latent"] == latent, "effect"])
    envs = [t.get_text() for t in ax.get_yticklabels()]
    assert envs == table["environment"].cat.categories.tolist()
    # from the AnnData, a subset, into given axes, and as a Figure
    fig, given = plt.subplots()
    assert sctbr.pl.causal_effects(adata, latents=["latent_1"], environments=envs[:3], ax=given, show=False) is given
    assert len(given.containers) == 1
    assert len(given.containers[0].lines[0].get_xdata()) == 3
    assert isinstance(sctbr.pl.causal_effects(table, return_fig=True), Figure)
    with pytest.raises(KeyError, match="latent_9"):
        sctbr.pl.causal_effects(table, latents=["latent_9"])
    with pytest.raises(KeyError, match="causal_effects"):
        sctbr.pl.causal_effects(table.drop(columns="ci_low"))


def _fake_stability() -> dict:
    matrix = pd.DataFrame([[1.0, 0.95, 0.5], [0.95, 1.0, 0.55], [0.5, 0.55, 1.0]], index=["0", "1", "2"])
    matrix.columns = ["0", "1", "2"]
    per = pd.DataFrame({"latent": ["latent_0", "latent_1"], "mean_abs_corr": [0.97, 0.5], "min_abs_corr": [0.9, 0.3]})
    per["stable"] = per["mean_abs_corr"] >= 0.9
    return {"matrix": matrix, "per_latent": per, "summary": {"mean_mcc": 0.667, "threshold": 0.9}}


def test_pl_stability_draws_the_matrix_or_the_latents():
    res = _fake_stability()
    ax = sctbr.pl.stability(res, show=False)
    assert np.allclose(ax.images[0].get_array(), res["matrix"].to_numpy())
    assert "0.67" in ax.get_title()
    assert len(ax.texts) == 9
    ax = sctbr.pl.stability(res, kind="latents", show=False)
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.97, 0.5])
    assert any(np.allclose(line.get_ydata(), 0.9) for line in ax.get_lines())  # the threshold
    adata = ad.AnnData(np.zeros((3, 1)))
    adata.uns["tbr_stability"] = res
    assert isinstance(sctbr.pl.stability(adata, return_fig=True), Figure)
    with pytest.raises(KeyError, match=r"sctbr.tl.stability\(adata"):
        sctbr.pl.stability(ad.AnnData(np.zeros((3, 1))))
    with pytest.raises(ValueError, match="kind"):
        sctbr.pl.stability(res, kind="bars")


def test_pl_n_latent_marks_the_chosen_size(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", _fake_fit_once({1: 1.0, 2: 0.21, 3: 0.2, 4: 0.2}))
    adata = make_adata()
    sctbr.tl.select_n_latent(adata, candidates=range(1, 5))
    ax = sctbr.pl.n_latent(adata, show=False)
    assert isinstance(ax, Axes)
    vertical = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), 2) and len(line.get_xdata()) == 2]
    assert vertical, "the chosen size (2) is marked by a vertical line"
    assert any("chosen: 2" in t.get_text() for t in ax.get_legend().get_texts())
    fig, given = plt.subplots()
    assert sctbr.pl.n_latent(adata.uns["tbr_n_latent"], ax=given, log=True, show=False) is given
    assert given.get_yscale() == "log"
    with pytest.raises(KeyError, match="select_n_latent"):
        sctbr.pl.n_latent(ad.AnnData(np.zeros((3, 1))))
