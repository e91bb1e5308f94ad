"""``sctbr.tl.causal_effects``: coverage and hand-written OLS on exact latents, recovery with TBR latents, errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import sctbr  # noqa: E402
from sctbr.metrics import ate_table, match_latents  # noqa: E402
from tests.tl.helpers import roundtrip, simulate, with_latents  # noqa: E402


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


def test_causal_effects_intervals_have_their_nominal_coverage_on_exact_latents(tmp_path):
    # with the true latents the OLS model is exact: 95% intervals cover the true effects 95% of the time
    adata = simulate(depth=4, n_latent=3, n_obs_per_env=60)
    z = np.asarray(adata.obsm["Z_true"])
    with_latents(adata, z)
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
    with_latents(adata, -3.0 * z[:, ::-1])
    flipped = sctbr.tl.causal_effects(adata)
    assert np.allclose(flipped["effect"].to_numpy().reshape(30, 3), -table["effect"].to_numpy().reshape(30, 3)[:, ::-1])
    roundtrip(adata, tmp_path)


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
    with_latents(adata, z)
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
    roundtrip(adata, tmp_path)


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
    roundtrip(adata, tmp_path)


def test_causal_effects_errors_are_clear(make_adata):
    adata = make_adata()
    with pytest.raises(KeyError, match=r"Run sctbr.tl.tbr\(adata, key_added='tbr'\) first"):
        sctbr.tl.causal_effects(adata)
    with_latents(adata, np.asarray(adata.obsm["Z_true"]))
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
    adata = with_latents(make_adata(), np.asarray(make_adata().obsm["Z_true"]))
    adata.uns["tbr"]["params"]["groupby"] = ""
    table = sctbr.tl.causal_effects(adata)
    assert table["environment"].astype(str).unique().tolist() == ["all cells"]
    assert (table["n_cells"] == adata.n_obs).all()
