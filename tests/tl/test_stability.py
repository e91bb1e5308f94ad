"""``sctbr.tl.stability``: it tracks the true MCC on simulations, its tables, its storage and its errors."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sctbr  # noqa: E402
from sctbr.metrics import mcc  # noqa: E402
from tests.tl.helpers import FIT, STABILITY_EPOCHS, roundtrip, runs, simulate, snapshot, unchanged  # noqa: E402


@pytest.fixture(scope="module")
def stabilities(torch_single_thread) -> dict:
    """stability with 3 seeds on k = 1 (identified) and k = 0 (not identified) simulations, 2 latents."""
    out = {}
    for k in (1, 0):
        adata = simulate(n_latent=2, k=k)
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
        true[k] = [mcc(adata.obsm["Z_true"], z) for z in runs(adata)]
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
    # the design check: 14 observed nodes of a depth-3 tree identify 2 latents exactly (it ignores the data's k)
    for k in (0, 1):
        assert stabilities[k][0].uns["tbr_stability"]["summary"]["tree_mcc"] > 0.99
    assert stabilities[1][0].uns["tbr_stability"]["summary"]["identified"]
    assert not stabilities[0][0].uns["tbr_stability"]["summary"]["identified"]
    # the user sees a warning exactly when agreement is low
    assert stabilities[1][1] == []
    assert len(stabilities[0][1]) == 1
    assert "not stable across seeds" in stabilities[0][1][0]
    # the runs' latents are per cell: obsm (cells x (runs * latents)), not uns; they survive h5ad
    assert "latents" not in stabilities[1][0].uns["tbr_stability"]
    back = roundtrip(stabilities[1][0], tmp_path)
    assert back.uns["tbr_stability"]["obsm_key"] == "X_tbr_stability"
    assert back.obsm["X_tbr_stability"].shape == (stabilities[1][0].n_obs, 3 * 2)
    np.testing.assert_array_equal(runs(back), runs(stabilities[1][0]))


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
    z = runs(adata)
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
    snap = snapshot(adata)
    with pytest.raises(ValueError, match="n_seeds"):
        sctbr.tl.stability(adata, n_seeds=1)
    with pytest.raises(ValueError, match="threshold"):
        sctbr.tl.stability(adata, threshold=1.5)
    with pytest.raises(TypeError, match="sets"):
        sctbr.tl.stability(adata, random_state=0, key_added="x", copy=True)
    with pytest.raises(KeyError, match="nope"):
        sctbr.tl.stability(adata, groupby="nope", max_epochs=1, accelerator="cpu")
    with pytest.raises(TypeError, match="check_tree"):
        sctbr.tl.stability(adata, check_tree="yes")
    assert unchanged(adata, snap)


def test_agreeing_runs_are_not_identified_where_the_tree_cannot_identify(monkeypatch):
    """Runs that agree perfectly (every seed the same latents) are ``stable``; the verdict ``identified`` also needs
    the design check, here an 8-leaf tree with cells at its leaves and 5 latents (patched to its measured range)."""
    from sctbr.tl import _stability
    from sctbr.tl._refit import Fit

    tree = sctbr.datasets.random_tree(8, random_state=0)
    adata = sctbr.datasets.simulate(tree=tree, leaves_only=True, n_latent=5, n_obs_per_env=10, random_state=0)
    z = np.random.default_rng(0).normal(size=(adata.n_obs, 5)).astype(np.float32)
    split = np.where(np.arange(adata.n_obs) % 5 == 0, "validation", "train")
    y = adata.obs["y"].to_numpy()

    def same_latents(work, *, n_latent, random_state, fit_kwargs):
        return Fit(z, y, y, split, 0.0, {"target": "y", "groupby": "environment"})

    sims = []
    monkeypatch.setattr(_stability, "fit_once", same_latents)
    monkeypatch.setattr("sctbr.tl._identifiability.design_mcc", lambda *a, **kw: sims.append(a[2]) or 0.78)
    with pytest.warns(UserWarning, match="does not identify 5 latents"):
        res = sctbr.tl.stability(adata, n_seeds=2, n_latent=5, inplace=False)
    assert sims == [5] * 8
    summary = res["summary"]
    assert summary["stable"]
    assert summary["tree_mcc"] == pytest.approx(0.78)
    assert not summary["identified"]
    off = sctbr.tl.stability(adata, n_seeds=2, n_latent=5, inplace=False, check_tree=False)["summary"]
    assert np.isnan(off["tree_mcc"])
    assert off["identified"] == off["stable"]


@pytest.mark.slow
def test_stability_first_run_is_the_tl_tbr_fit(stabilities, fitted_k1):
    assert np.allclose(runs(stabilities[1][0])[0], fitted_k1.obsm["X_tbr"])


def test_flagged_values_never_read_as_the_threshold():
    """Tutorial 3 printed ``latent_0 (0.90)`` for a value below the 0.9 threshold: enough digits are shown now."""
    import pandas as pd

    from sctbr.tl._stability import _warn_if_unstable

    summary = {"mean_mcc": 0.95, "min_mcc": 0.93, "n_seeds": 3, "n_latent": 2, "tree_mcc": float("nan")}
    per_latent = pd.DataFrame(
        {"latent": ["latent_0", "latent_1"], "mean_abs_corr": [0.8996, 0.97], "stable": [False, True]}
    )
    with pytest.warns(UserWarning, match=r"latent_0 \(0\.8996\)"):
        _warn_if_unstable(summary, per_latent, 0.9)
    with pytest.warns(UserWarning, match=r"is 0\.89999 \(lowest"):
        _warn_if_unstable({**summary, "mean_mcc": 0.899991}, per_latent, 0.9)
    with pytest.warns(UserWarning, match=r"identify 2 latents .* MCC 0\.8996,"):
        _warn_if_unstable({**summary, "tree_mcc": 0.8996}, per_latent, 0.9)
