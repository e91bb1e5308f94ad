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
    "pp.magic": lambda a, **kw: sctbr.pp.magic(a, **kw),
    "TBR": _model,
    "TBR.train": _train,
    "datasets.semisynthetic": lambda a, **kw: sctbr.datasets.semisynthetic(
        a, **{"latent_genes": ["x0"], "groupby": "environment", "layer": None, **kw}
    ),
    "datasets.weakly_correlated_genes": lambda a, **kw: sctbr.datasets.weakly_correlated_genes(
        a, **{"layer": None, **kw}
    ),
    "datasets.select_epithelial": lambda a, **kw: sctbr.datasets.select_epithelial(a, **kw),
}

TABLE = [
    # numeric training arguments (tl.tbr, tl.fit, TBR.train share the checks)
    ("tl.tbr", {"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1 or None, got 0"),
    ("tl.tbr", {"batch_size": 12.5}, TypeError, r"`batch_size` must be an integer"),
    ("tl.tbr", {"max_epochs": 0}, ValueError, r"`max_epochs` must be an integer >= 1 or None, got 0"),
    ("tl.tbr", {"lr": 0.0}, ValueError, r"`lr` must be a finite number > 0 or None, got 0.0\. The learning rate"),
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
    ("tl.causal_effects", {"alpha": 0}, ValueError, r"`alpha` must be a finite number > 0 and < 1, got 0\. 0.05"),
    ("tl.causal_effects", {"alpha": "5%"}, TypeError, r"`alpha`"),
    ("tl.causal_effects", {"cov_type": "HC9"}, ValueError, r"`cov_type` must be one of"),
    ("tl.causal_effects", {"key": 3}, TypeError, r"`key` must be a non-empty str, got 3"),
    ("tl.causal_effects", {"groupby": 3}, TypeError, r"`groupby` must be a non-empty str or None"),
    ("tl.causal_effects", {"target": ["y"]}, TypeError, r"`target` must be a non-empty str or None"),
    ("tl.causal_effects", {"split": 1}, TypeError, r"`split` must be a str or a list of str or None"),
    ("tl.causal_effects", {"split": "holdout"}, ValueError, r"`split` must be None or among"),
    ("pp.subsample", {"max_cells": 0}, ValueError, r"`max_cells`"),
    ("pp.subsample", {"min_cells": -1}, ValueError, r"`min_cells`"),
    ("pp.subsample", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.subsample", {"max_cells": 2.5}, TypeError, r"`max_cells` must be an integer >= 1, got 2.5"),
    ("pp.subsample", {"random_state": -1}, ValueError, r"`random_state` must be an integer >= 0"),
    ("pp.subsample", {"copy": "yes"}, TypeError, r"`copy` must be True or False, got 'yes'"),
    ("pp.subsample", {"groupby": 3}, TypeError, r"`groupby` must be the name \(str\)"),
    ("pp.environment_tree", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.environment_tree", {"n_pcs": -1}, ValueError, r"`n_pcs` must be an integer >= 0 or None, got -1"),
    ("pp.environment_tree", {"use_rep": 3}, TypeError, r"`use_rep` must be a non-empty str or None"),
    ("pp.environment_tree", {"linkage_method": "nearest"}, ValueError, r"`linkage_method` must be one of"),
    ("pp.environment_tree", {"cor_method": "cosine"}, ValueError, r"`cor_method` must be one of"),
    ("pp.environment_tree", {"within": 1}, TypeError, r"`within`"),
    ("pp.subclusters", {"groupby": "nope"}, KeyError, r"nope"),
    ("pp.subclusters", {"resolution": 0}, ValueError, r"`resolution` must be a finite number > 0, got 0\. The"),
    ("pp.subclusters", {"resolution": "high"}, TypeError, r"`resolution`"),
    ("pp.subclusters", {"min_cells": 0}, ValueError, r"`min_cells` must be an integer >= 1, got 0"),
    ("pp.subclusters", {"min_cells": 2.5}, TypeError, r"`min_cells` must be an integer"),
    ("pp.subclusters", {"n_neighbors": 1}, ValueError, r"`n_neighbors` must be an integer >= 2, got 1"),
    ("pp.subclusters", {"n_pcs": 1.5}, TypeError, r"`n_pcs`"),
    ("pp.subclusters", {"use_rep": 0}, TypeError, r"`use_rep`"),
    ("pp.subclusters", {"random_state": -2}, ValueError, r"`random_state`"),
    ("pp.subclusters", {"key_added": ""}, TypeError, r"`key_added`"),
    ("pp.magic", {"knn": 0}, ValueError, r"`knn` must be an integer >= 1, got 0\. The number of nearest"),
    ("pp.magic", {"t": 1.5}, TypeError, r"`t` must be an integer >= 1, got 1.5"),
    ("pp.magic", {"n_pca": 0}, ValueError, r"`n_pca` must be an integer >= 1 or None, got 0"),
    ("pp.magic", {"random_state": -1}, ValueError, r"`random_state`"),
    ("pp.magic", {"n_jobs": 0}, ValueError, r"`n_jobs` must be a non-zero integer"),
    ("pp.magic", {"n_jobs": 1.0}, TypeError, r"`n_jobs`"),
    ("pp.magic", {"layer": 3}, TypeError, r"`layer` must be a non-empty str or None"),
    ("pp.magic", {"genes": 5}, TypeError, r"`genes` must be a str or a list of str or None, got 5"),
    ("pp.magic", {"genes": ["x0", 1]}, TypeError, r"`genes` must be .*\[1\] are not str"),
    ("pp.magic", {"library_size": 1}, TypeError, r"`library_size`"),
    ("pp.magic", {"key_added": ""}, ValueError, r"`key_added` must be a non-empty string"),
    ("pp.magic", {"knn": 10_000}, ValueError, r"more cells"),
    # the model
    ("TBR", {"n_latent": 0}, ValueError, r"`n_latent` must be an integer >= 1, got 0"),
    ("TBR", {"hidden": (8, -1)}, ValueError, r"`hidden`"),
    ("TBR", {"lam": float("nan")}, ValueError, r"`lam`"),
    ("TBR", {"penalty": "l0"}, ValueError, r"`penalty`"),
    ("TBR", {"proximal": "yes"}, TypeError, r"`proximal` must be True or False"),
    ("TBR.train", {"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1 or None, got 0"),
    ("TBR.train", {"max_epochs": 0}, ValueError, r"`max_epochs`"),
    ("TBR.train", {"lr": -1e-3}, ValueError, r"`lr`"),
    ("TBR.train", {"sparsify_lr_factor": 0}, ValueError, r"`sparsify_lr_factor`"),
    ("TBR.train", {"validation_size": -0.1}, ValueError, r"`validation_size`"),
    ("TBR.train", {"early_stopping": "yes"}, TypeError, r"`early_stopping`"),
    ("TBR.train", {"final_refine": "yes"}, TypeError, r"`final_refine` must be True or False"),
    ("tl.tbr", {"final_refine": 1}, TypeError, r"`final_refine`"),
    ("TBR.train", {"final_objective": "l0"}, ValueError, r"`final_objective` must be 'l1' or 'log'"),
    ("tl.tbr", {"final_objective": "L1"}, ValueError, r"`final_objective` must be 'l1' or 'log'"),
    # data sets that take the user's AnnData
    ("datasets.semisynthetic", {"noise_y": -1.0}, ValueError, r"`noise_y` must be a finite number >= 0, got -1.0"),
    ("datasets.semisynthetic", {"noise_y": "low"}, TypeError, r"`noise_y`"),
    ("datasets.semisynthetic", {"delta_scale": float("nan")}, ValueError, r"`delta_scale`"),
    ("datasets.semisynthetic", {"random_state": 1.5}, TypeError, r"`random_state`"),
    ("datasets.semisynthetic", {"k": 1.5}, ValueError, r"`k`.*\(0, 1\)"),
    ("datasets.semisynthetic", {"k": "one"}, TypeError, r"`k` must be a count"),
    ("datasets.semisynthetic", {"k": 2}, ValueError, r"`k` \(changes per arc\) must be between 0 and n_latent=1"),
    ("datasets.semisynthetic", {"latent_genes": 5}, TypeError, r"`latent_genes` must be a str or a list of str"),
    ("datasets.semisynthetic", {"input_genes": 5}, TypeError, r"`input_genes`"),
    ("datasets.semisynthetic", {"groupby": 5}, TypeError, r"`groupby` must be a non-empty str"),
    ("datasets.semisynthetic", {"layer": 5}, TypeError, r"`layer`"),
    ("datasets.semisynthetic", {"sources": 5}, TypeError, r"`sources`"),
    ("datasets.weakly_correlated_genes", {"n_genes": 0}, ValueError, r"`n_genes` must be an integer >= 1, got 0"),
    ("datasets.weakly_correlated_genes", {"n_genes": 2.0}, TypeError, r"`n_genes`"),
    ("datasets.weakly_correlated_genes", {"max_corr": 0.0}, ValueError, r"`max_corr` must be a finite number > 0"),
    ("datasets.weakly_correlated_genes", {"max_corr": 1.5}, ValueError, r"`max_corr`"),
    ("datasets.weakly_correlated_genes", {"min_regulators": -1}, ValueError, r"`min_regulators`"),
    ("datasets.weakly_correlated_genes", {"min_fraction": 2}, ValueError, r"`min_fraction`"),
    ("datasets.weakly_correlated_genes", {"layer": 0}, TypeError, r"`layer`"),
    ("datasets.weakly_correlated_genes", {"exclude": 3}, TypeError, r"`exclude`"),
    ("datasets.weakly_correlated_genes", {"sources": 3}, TypeError, r"`sources`"),
    ("datasets.select_epithelial", {"key": 3}, TypeError, r"`key` must be a non-empty str, got 3"),
    ("datasets.select_epithelial", {"tissues": 3}, TypeError, r"`tissues` must be a str or a list of str or None"),
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
        (sctbr.datasets.random_tree, {"n_leaves": 3, "random_state": -1}, ValueError, r"`random_state`"),
        (sctbr.datasets.random_tree, {"n_leaves": 3, "prefix": 1}, TypeError, r"`prefix` must be a str"),
        (sctbr.datasets.house_keeping_genes, {"drop_weak": "no"}, TypeError, r"`drop_weak` must be True or False"),
        (sctbr.datasets.regulators, {"genes": 5}, TypeError, r"`genes` must be a str or a list of str, got 5"),
        (sctbr.datasets.regulators, {"genes": ["VCP", None]}, TypeError, r"`genes` must be .*\[None\] are not str"),
        (sctbr.datasets.regulators, {"genes": "VCP", "sources": 5}, TypeError, r"`sources`"),
        (sctbr.datasets.read_gtex, {"path": 5}, TypeError, r"`path` must be a path \(str or pathlib.Path\), got 5"),
        (sctbr.datasets.read_gtex, {"path": "missing.h5ad", "backed": "w"}, ValueError, r"`backed` must be None"),
        (sctbr.datasets.read_gtex, {"path": "missing.h5ad"}, FileNotFoundError, r"missing.h5ad not found"),
        (sctbr.datasets.select_epithelial, {"adata": "atlas.h5ad"}, TypeError, r"`adata` must be an AnnData"),
        (sctbr.datasets.weakly_correlated_genes, {"adata": None}, TypeError, r"`adata` must be an AnnData"),
        (sctbr.datasets.semisynthetic, {"adata": None, "latent_genes": ["x"], "groupby": "g"}, TypeError, r"`adata`"),
        (sctbr.datasets.pbmc3k, {"n_obs": 10}, TypeError, r"n_obs"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_dataset_argument(function, kwargs, error, match):
    # pbmc3k takes no arguments: Python's own TypeError names the unexpected one
    with pytest.raises(error, match=match):
        function(**kwargs)
