"""``lam="auto"``: a warm-started lambda path scored on the validation cells, one-standard-error rule."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import sctbr
from sctbr.model import TBR, one_standard_error_rule
from sctbr.model._lam_path import DEFAULT_LAM_GRID

pytestmark = pytest.mark.usefixtures("torch_single_thread")

QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
EPOCHS = 20


def auto_model(adata, lam="auto", **train):
    """A fit along the lambda path; without the final refinement, so that the model ends at the chosen solution."""
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=2, hidden=(16,), lam=lam)
    kwargs = {"max_epochs": EPOCHS, "validation_size": 0.25, "train_size": 0.75, "final_refine": False}
    model.train(**{**kwargs, **QUIET, **train})
    return model


@pytest.fixture(scope="module")
def fitted(make_adata, torch_single_thread):
    return auto_model(make_adata())


# ---------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("mean", "se", "expected"),
    [
        ([1.0, 0.9, 0.95, 1.2], [0.1, 0.08, 0.1, 0.1], 2),  # best is 1; 0.95 <= 0.9 + 0.08; 1.2 is not
        ([1.0, 0.9, 0.99, 1.2], [0.1, 0.08, 0.1, 0.1], 1),  # 0.99 > 0.98: the best itself
        ([0.5, 1.0, 2.0], [0.01, 0.01, 0.01], 0),  # error grows at once: the smallest lambda
        ([2.0, 1.0, 0.5], [0.01, 0.01, 0.01], 2),  # error falls: the largest
        ([1.0, 1.3, 1.05], [0.1, 0.1, 0.1], 2),  # the largest within one SE, even past a worse one (glmnet's rule)
    ],
)
def test_one_standard_error_rule(mean, se, expected):
    assert one_standard_error_rule(np.array(mean), np.array(se)) == expected


# ---------------------------------------------------------------------- the path on the model


def test_path_is_stored_with_one_selected_lambda(fitted):
    path = fitted.lam_path_
    assert isinstance(path, pd.DataFrame)
    np.testing.assert_allclose(path["lam"], DEFAULT_LAM_GRID)
    assert path["selected"].sum() == 1
    chosen = path.loc[path["selected"]].iloc[0]
    assert fitted.lam_ == chosen["lam"] == fitted.module.lam
    expected = one_standard_error_rule(path["validation_mse"].to_numpy(), path["validation_mse_se"].to_numpy())
    assert int(np.flatnonzero(path["selected"])[0]) == expected
    np.testing.assert_allclose(path["validation_objective"], path["validation_mse"] + path["penalty"])
    assert (path["validation_mse_se"] > 0).all()
    assert {"zero_fraction", "epochs"} <= set(path.columns)


def test_chosen_solution_is_restored(fitted, make_adata):
    """The model ends at the chosen lambda's solution (not at the last one of the path)."""
    path = fitted.lam_path_
    chosen = path.loc[path["selected"]].iloc[0]
    data = fitted._arrays(fitted.adata)
    err = fitted._cell_losses(data, fitted.validation_indices)
    np.testing.assert_allclose(err.mean(), chosen["validation_mse"], rtol=1e-5)
    delta = fitted.module.delta.detach().numpy()
    assert (delta == 0).mean() == pytest.approx(chosen["zero_fraction"])
    assert float(fitted.module.penalty_value().detach()) == pytest.approx(chosen["penalty"], rel=1e-5)


def test_path_epochs_are_warm_continuations(fitted):
    # stage 1: 0.7 * 20 = 14 epochs; the first lambda gets stage 3's 6 epochs, each further one 0.1 * 20 = 2
    path = fitted.lam_path_
    assert list(path["epochs"]) == [6] + [2] * 6
    assert len(fitted.history["train_loss"]) == 14 + 6 + 2 * 6


def test_rule_keeps_a_large_lambda_when_nothing_changes(make_adata):
    """k = 0 (one head fits every environment): zeroing Delta costs nothing, so the large lambda is kept."""
    model = auto_model(make_adata(k=0, n_obs_per_env=150), lam_grid=[1e-4, 0.1], max_epochs=60, path_epochs=0.3)
    assert model.lam_ == 0.1
    # proximal steps: the kept solution has exact zeros (measured 0.83), and the path records them
    zeros = (model.get_deltas().to_numpy() == 0).mean()
    assert zeros >= 0.5
    assert model.lam_path_["zero_fraction"].iloc[1] == pytest.approx(zeros)


def test_rule_rejects_a_lambda_that_destroys_the_fit(make_adata):
    """k = 1 with strong changes: lambda = 10 zeroes Delta and the validation error jumps far past one SE."""
    model = auto_model(make_adata(), lam_grid=[1e-4, 10.0], max_epochs=40, path_epochs=0.5)
    path = model.lam_path_
    assert model.lam_ == 1e-4
    assert path["validation_mse"].iloc[1] > path["validation_mse"].iloc[0] + path["validation_mse_se"].iloc[0]


def test_fixed_lambda_has_no_path(make_adata):
    model = auto_model(make_adata(), lam=1e-3, max_epochs=3)
    assert model.lam_path_ is None
    assert model.lam_ == 1e-3


# ---------------------------------------------------------------------- errors before any training


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(TBR, "_run_fit", refuse)


def test_auto_needs_a_validation_split(small_adata, no_training):
    with pytest.raises(ValueError, match="validation_size"):
        auto_model(small_adata, validation_size=0.0, train_size=1.0)


@pytest.mark.parametrize(
    ("train", "match"),
    [({"lam_grid": [1e-3]}, "lam_grid"), ({"lam_grid": [1e-3, np.nan]}, "lam_grid"), ({"path_epochs": 0}, "path")],
)
def test_bad_path_settings(small_adata, no_training, train, match):
    with pytest.raises(ValueError, match=match):
        auto_model(small_adata, **train)


def test_bad_lam_string(small_adata):
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    with pytest.raises(ValueError, match="'auto'"):
        TBR(small_adata, tree=small_adata.uns["environment_tree"], n_latent=2, lam="best")


# ---------------------------------------------------------------------- tl.tbr


def test_tl_stores_the_path_and_the_chosen_lambda(make_adata, tmp_path):
    adata = make_adata()
    model = sctbr.tl.tbr(
        adata, lam="auto", n_latent=2, hidden=(16,), max_epochs=10, n_restarts=2, return_model=True, **QUIET
    )
    res = adata.uns["tbr"]
    path = res["lam_path"]
    assert res["params"]["lam_auto"] is True
    assert res["params"]["lam"] == model.lam_ == path.loc[path["selected"], "lam"].iloc[0]
    # restarts are scored on the penalised validation objective at each restart's chosen lambda
    assert res["restart_scores"].min() == pytest.approx(path.loc[path["selected"], "validation_objective"].iloc[0])
    adata.write_h5ad(tmp_path / "auto.h5ad")
    back = ad.read_h5ad(tmp_path / "auto.h5ad").uns["tbr"]
    pd.testing.assert_frame_equal(back["lam_path"], path, check_dtype=False, check_index_type=False)
    assert bool(back["params"]["lam_auto"])
    assert back["params"]["lam"] == res["params"]["lam"]


def test_tl_bad_lam_string_leaves_adata_unchanged(small_adata):
    before = set(small_adata.uns.keys())
    with pytest.raises(ValueError, match="'auto'"):
        sctbr.tl.tbr(small_adata, lam="fast", n_latent=2, max_epochs=2, **QUIET)
    assert set(small_adata.uns.keys()) == before
