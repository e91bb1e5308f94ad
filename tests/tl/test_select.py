"""``sctbr.tl.select_n_latent``: it recovers the true size on simulations, its plateau rule, storage and errors.

The ``stability`` and ``causal_effects`` tests that shared this file: ``test_stability.py``, ``test_causal.py``."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import sctbr  # noqa: E402
from sctbr.tl._select import plateau  # noqa: E402
from tests.tl.helpers import FIT, SELECT_EPOCHS, fake_fit_once, roundtrip, simulate, snapshot, unchanged  # noqa: E402

# -- select_n_latent ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selected(torch_single_thread) -> dict:
    """select_n_latent on k = 1 simulations with 2 and 3 true latents (candidates 1..4)."""
    out = {}
    for true in (2, 3):
        adata = simulate(n_latent=true)
        snap = snapshot(adata)
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
    back = roundtrip(adata, tmp_path)
    assert int(back.uns["tbr_n_latent"]["n_latent"]) == true
    pd.testing.assert_frame_equal(back.uns["tbr_n_latent"]["curve"], curve, check_dtype=False)


def test_plateau_rule_is_the_smallest_size_within_tolerance_of_the_minimum():
    # within rtol (10%) of the minimum 0.10: 0.105 qualifies, 0.2 does not
    assert plateau([0.5, 0.2, 0.105, 0.1], [0.0, 0.0, 0.0, 0.0], 0.1) == (2, pytest.approx(0.11))
    # the standard error of the minimum widens the tolerance when it exceeds rtol * min
    assert plateau([0.5, 0.14, 0.105, 0.1], [0.0, 0.0, 0.0, 0.05], 0.1) == (1, pytest.approx(0.15))
    # rtol = 0 and no standard error: the minimum itself
    assert plateau([0.5, 0.2, 0.105, 0.1], [np.nan] * 4, 0.0)[0] == 3


def test_select_n_latent_warns_when_the_error_keeps_falling(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", fake_fit_once({1: 1.0, 2: 0.5, 3: 0.2}))
    adata = make_adata()
    with pytest.warns(UserWarning, match="did not plateau within candidates"):
        sctbr.tl.select_n_latent(adata, candidates=[3, 1, 2])
    res = adata.uns["tbr_n_latent"]
    assert res["n_latent"] == 3
    assert res["curve"]["n_latent"].tolist() == [1, 2, 3]
    assert np.allclose(res["curve"]["validation_mse"], [1.0, 0.5, 0.2])


def test_select_n_latent_with_inplace_false_returns_the_result_and_leaves_adata_untouched(make_adata, monkeypatch):
    monkeypatch.setattr("sctbr.tl._select.fit_once", fake_fit_once({1: 1.0, 2: 0.21, 3: 0.2, 4: 0.2}))
    adata = make_adata()
    snap = snapshot(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plateau: no warning
        res = sctbr.tl.select_n_latent(adata, candidates=range(1, 5), inplace=False)
    assert unchanged(adata, snap)
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
    snap = snapshot(adata)
    with pytest.raises(error, match=match):
        sctbr.tl.select_n_latent(adata, **{"max_epochs": 1, "accelerator": "cpu", **kwargs})
    assert unchanged(adata, snap)


# -- stability ---------------------------------------------------------------------------------------------------


# -- causal_effects ----------------------------------------------------------------------------------------------


# -- plots -------------------------------------------------------------------------------------------------------
