"""Every public function checks its arguments before any work: the error names the argument, the value and the fix,
and the AnnData is left untouched. One table: (function, keyword arguments, exception, message fragment).

Complements ``tests/test_bad_input.py`` (bad data) with bad arguments, function by function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sctbr
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _model(adata, **kwargs):
    TBR.setup_anndata(adata, target="y", groupby="environment")
    return TBR(adata, tree=adata.uns["environment_tree"], **{"n_latent": 2, "hidden": (8,), **kwargs})


def _train(adata, **kwargs):
    _model(adata).train(**{"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, **kwargs})


FUNCTIONS = {
    "tl.tbr": lambda a, **kw: sctbr.tl.tbr(a, **{"max_epochs": 2, "accelerator": "cpu", **kw}),
    "tl.baseline": lambda a, **kw: sctbr.tl.baseline(a, **{"max_epochs": 2, "accelerator": "cpu", **kw}),
    "tl.fit": lambda a, **kw: sctbr.tl.fit(a, **{"max_epochs": 2, "accelerator": "cpu", **kw}),
    "tl.select_n_latent": lambda a, **kw: sctbr.tl.select_n_latent(a, **{"max_epochs": 2, **kw}),
    "tl.stability": lambda a, **kw: sctbr.tl.stability(a, **{"max_epochs": 2, **kw}),
    "tl.causal_effects": lambda a, **kw: sctbr.tl.causal_effects(a, **kw),
    "pp.subsample": lambda a, **kw: sctbr.pp.subsample(a, **{"groupby": "environment", "max_cells": 10, **kw}),
    "pp.environment_tree": lambda a, **kw: sctbr.pp.environment_tree(a, **{"groupby": "environment", **kw}),
    "pp.subclusters": lambda a, **kw: sctbr.pp.subclusters(a, **{"groupby": "environment", **kw}),
    "TBR": _model,
    "TBR.train": _train,
}

TABLE = [
    # numeric training arguments (tl.tbr, tl.fit, TBR.train share the checks)
    ("tl.tbr", {"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1, got 0"),
    ("tl.tbr", {"batch_size": 12.5}, TypeError, r"`batch_size` must be an integer"),
    ("tl.tbr", {"max_epochs": 0}, ValueError, r"`max_epochs` must be an integer >= 1 or None, got 0"),
    ("tl.tbr", {"lr": 0.0}, ValueError, r"`lr` must be a finite number > 0, got 0.0\. The learning rate"),
    ("tl.tbr", {"lr": float("inf")}, ValueError, r"`lr`"),
    ("tl.tbr", {"lr": "fast"}, TypeError, r"`lr` must be a finite number"),
    ("tl.tbr", {"train_size": 0.0}, ValueError, r"`train_size` must be a finite number > 0 and <= 1, got 0.0"),
    ("tl.tbr", {"validation_size": 1.0}, ValueError, r"`validation_size`"),
    ("tl.tbr", {"train_size": 0.9, "validation_size": 0.2}, ValueError, r"`train_size` \+ `validation_size`"),
    ("tl.tbr", {"hidden": (64, 0)}, ValueError, r"`hidden` must hold positive integers"),
    ("tl.tbr", {"hidden": 64}, TypeError, r"`hidden` must be a sequence of positive integers"),
    ("tl.tbr", {"n_restarts": 0}, ValueError, r"`n_restarts` must be an integer >= 1, got 0"),
    ("tl.tbr", {"n_latent": 2.0}, TypeError, r"`n_latent` must be an integer"),
    ("tl.tbr", {"lam": -1.0}, ValueError, r"`lam` must be a finite number >= 0"),
    ("tl.tbr", {"lam": "big"}, ValueError, r"`lam` must be a non-negative number or 'auto'"),
    ("tl.tbr", {"lam": "auto", "lam_grid": [1e-3]}, ValueError, r"`lam_grid` must hold at least 2"),
    ("tl.tbr", {"lam": "auto", "lam_grid": [1e-3, -1.0]}, ValueError, r"`lam_grid`"),
    ("tl.tbr", {"lam": "auto", "path_epochs": 0.0}, ValueError, r"`path_epochs`"),
    ("tl.tbr", {"fit_fraction": 1.5}, ValueError, r"`fit_fraction` must be a finite number >= 0 and <= 1, got 1.5"),
    ("tl.tbr", {"penalty": "l2"}, ValueError, r"`penalty` must be one of \['l1', 'log'\], got 'l2'"),
    ("tl.tbr", {"loss": "hinge"}, ValueError, r"`loss` must be 'auto', 'mse' or 'logistic'"),
    ("tl.tbr", {"random_state": -1}, ValueError, r"`random_state` must be an integer >= 0"),
    ("tl.tbr", {"random_state": 0.5}, TypeError, r"`random_state`"),
    ("tl.tbr", {"key_added": 3}, (TypeError, ValueError), r"key_added"),
    ("tl.baseline", {"batch_size": 0}, ValueError, r"`batch_size`"),
    ("tl.baseline", {"max_epochs": -3}, ValueError, r"`max_epochs`"),
    ("tl.fit", {"batch_size": 0}, ValueError, r"`batch_size`"),
    ("tl.fit", {"train_kwargs": {"fit_fraction": -0.1}}, ValueError, r"`fit_fraction`"),
    # key and column arguments
    ("tl.tbr", {"groupby": "nope"}, KeyError, r"'nope' is not a column of adata.obs"),
    ("tl.tbr", {"target": "nope"}, KeyError, r"'nope' is not a column of adata.obs"),
    ("tl.tbr", {"layer": "nope"}, KeyError, r"Layer 'nope' not found"),
    ("tl.tbr", {"var_names": ["x0", "x0", "x1"]}, ValueError, r"`var_names` lists \['x0'\] more than once"),
    ("tl.tbr", {"var_names": ["x0", "zz"]}, KeyError, r"`var_names` are not in adata.var_names"),
    ("tl.select_n_latent", {"candidates": [0, 1]}, ValueError, r"candidates"),
    ("tl.select_n_latent", {"rtol": -1}, ValueError, r"`rtol`"),
    ("tl.select_n_latent", {"batch_size": 0}, ValueError, r"`batch_size`"),
    ("tl.stability", {"n_seeds": 1}, ValueError, r"`n_seeds` must be an integer >= 2"),
    ("tl.stability", {"threshold": 2}, ValueError, r"`threshold`"),
    ("tl.stability", {"lr": -1.0}, ValueError, r"`lr`"),
    ("tl.causal_effects", {"alpha": 1.5}, ValueError, r"`alpha`"),
    ("tl.causal_effects", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.subsample", {"max_cells": 0}, ValueError, r"`max_cells`"),
    ("pp.subsample", {"min_cells": -1}, ValueError, r"`min_cells`"),
    ("pp.subsample", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.environment_tree", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.subclusters", {"groupby": "nope"}, KeyError, r"nope"),
    # the model
    ("TBR", {"n_latent": 0}, ValueError, r"`n_latent` must be an integer >= 1, got 0"),
    ("TBR", {"hidden": (8, -1)}, ValueError, r"`hidden`"),
    ("TBR", {"lam": float("nan")}, ValueError, r"`lam`"),
    ("TBR", {"penalty": "l0"}, ValueError, r"`penalty`"),
    ("TBR", {"proximal": "yes"}, TypeError, r"`proximal` must be True or False"),
    ("TBR.train", {"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1, got 0"),
    ("TBR.train", {"max_epochs": 0}, ValueError, r"`max_epochs`"),
    ("TBR.train", {"lr": -1e-3}, ValueError, r"`lr`"),
    ("TBR.train", {"sparsify_lr_factor": 0}, ValueError, r"`sparsify_lr_factor`"),
    ("TBR.train", {"validation_size": -0.1}, ValueError, r"`validation_size`"),
    ("TBR.train", {"early_stopping": "yes"}, TypeError, r"`early_stopping`"),
]


def _snapshot(adata):
    return adata.obs.copy(), sorted(adata.obsm), sorted(adata.uns), list(adata.var_names), adata.X.copy()


def _assert_untouched(adata, snap, *, uns_may_grow: bool):
    obs, obsm, uns, var_names, x = snap
    # TBR.setup_anndata registers the AnnData (scvi-tools' own bookkeeping: an `_scvi_*` obs column, uns entries)
    pd.testing.assert_frame_equal(adata.obs.loc[:, [c for c in adata.obs if not c.startswith("_scvi")]], obs)
    assert sorted(adata.obsm) == obsm
    if not uns_may_grow:
        assert sorted(adata.uns) == uns
    assert list(adata.var_names) == var_names
    np.testing.assert_array_equal(adata.X, x)


@pytest.fixture(scope="module")
def fitted(make_adata, torch_single_thread):
    adata = make_adata()
    sctbr.tl.tbr(adata, n_latent=2, hidden=(8,), max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    return adata


@pytest.mark.parametrize(("function", "kwargs", "error", "match"), TABLE, ids=lambda v: str(v)[:40])
def test_bad_argument(make_adata, fitted, monkeypatch, function, kwargs, error, match):
    adata = fitted.copy() if function == "tl.causal_effects" else make_adata()
    # no fit may start: a bad argument must fail before any training
    monkeypatch.setattr(TBR, "_run_fit", lambda *a, **k: pytest.fail("training started"), raising=False)
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        FUNCTIONS[function](adata, **kwargs)
    _assert_untouched(adata, snap, uns_may_grow=function.startswith("TBR"))


@pytest.mark.parametrize("axis", ["var_names", "obs_names"])
@pytest.mark.parametrize("function", ["tl.tbr", "TBR"])
def test_duplicate_names_are_a_clear_error(make_adata, axis, function):
    adata = make_adata()
    names = list(getattr(adata, axis))
    names[1] = names[0]
    setattr(adata, axis, names)
    snap = _snapshot(adata)
    with pytest.raises(ValueError, match=rf"adata.{axis} has 1 duplicated name.*adata.{axis}_make_unique\(\)"):
        FUNCTIONS[function](adata)
    _assert_untouched(adata, snap, uns_may_grow=function == "TBR")


@pytest.mark.parametrize(
    ("function", "kwargs", "error", "match"),
    [
        (sctbr.datasets.simulate, {"depth": 0}, ValueError, r"depth"),
        (sctbr.datasets.simulate, {"n_obs_per_env": 0}, ValueError, r"n_obs_per_env"),
        (sctbr.datasets.simulate, {"n_latent": 0}, ValueError, r"n_latent"),
        (sctbr.datasets.simulate, {"n_inputs": 0}, ValueError, r"n_inputs"),
        (sctbr.datasets.simulate, {"noise_y": -1.0}, ValueError, r"noise_y"),
        (sctbr.datasets.random_tree, {"n_leaves": 0}, ValueError, r"n_leaves"),
        (sctbr.datasets.random_tree, {"n_leaves": 2.5}, (TypeError, ValueError), r"n_leaves"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_dataset_argument(function, kwargs, error, match):
    with pytest.raises(error, match=match):
        function(**kwargs)
