"""An outer progress bar counts the fits of select_n_latent, stability and the experiments; it hides on request.

Shown at scanpy's default verbosity; hidden with ``sc.settings.verbosity = "error"`` or when the fits' own bars are
turned off with ``enable_progress_bar=False``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

import sctbr


@pytest.fixture
def verbosity():
    before = sc.settings.verbosity
    yield
    sc.settings.verbosity = before


def _fake_fit_once(work, *, n_latent, random_state, fit_kwargs):
    """One refit without training: random latents, a prediction with a small error."""
    from sctbr.tl._refit import Fit

    rng = np.random.default_rng(random_state)
    n = work.n_obs
    split = np.where(np.arange(n) % 5 == 0, "validation", "train")
    pred = rng.normal(scale=0.1, size=n)
    latents = rng.normal(size=(n, n_latent)).astype(np.float32)
    return Fit(latents, pred, np.zeros(n), split, 0.0, {"target": "y", "groupby": "environment"})


def _run(tool, adata, **kwargs):
    if tool == "select_n_latent":
        sctbr.tl.select_n_latent(adata, candidates=[1, 2, 3], inplace=False, **kwargs)
    else:
        # the design check has no bar of its own inside stability (its sets are quick), so it is left out here
        sctbr.tl.stability(adata, n_seeds=3, n_latent=2, inplace=False, threshold=0.0, check_tree=False, **kwargs)


@pytest.mark.parametrize("tool", ["select_n_latent", "stability"])
@pytest.mark.parametrize(
    ("setting", "kwargs", "shown"),
    [
        ("warning", {}, True),  # scanpy's default verbosity
        ("info", {"enable_progress_bar": True}, True),
        ("warning", {"enable_progress_bar": False}, False),
        ("error", {}, False),
    ],
)
def test_outer_bar_over_the_fits(make_adata, monkeypatch, capsys, verbosity, tool, setting, kwargs, shown):
    monkeypatch.setattr(f"sctbr.tl._{'select' if tool == 'select_n_latent' else 'stability'}.fit_once", _fake_fit_once)
    sc.settings.verbosity = setting
    _run(tool, make_adata(), **kwargs)
    err = capsys.readouterr().err
    assert (f"{tool}: 100%" in err and "3/3" in err) is shown, err


@pytest.mark.parametrize(
    ("setting", "kwargs", "shown"),
    [("warning", {}, True), ("info", {"enable_progress_bar": False}, False), ("error", {}, False)],
)
def test_bar_over_the_design_checks_sets(make_adata, monkeypatch, capsys, verbosity, setting, kwargs, shown):
    monkeypatch.setattr("sctbr.tl._identifiability.design_mcc", lambda *args, **kw: 1.0)
    sc.settings.verbosity = setting
    sctbr.tl.identifiability(make_adata(), n_latent=[1, 2], n_sims=2, inplace=False, **kwargs)
    err = capsys.readouterr().err
    assert ("identifiability: 100%" in err and "4/4" in err) is shown, err


@pytest.mark.parametrize(("setting", "shown"), [("warning", True), ("error", False)])
def test_outer_bar_over_an_experiments_fits(capsys, verbosity, torch_single_thread, setting, shown):
    sc.settings.verbosity = setting
    df = sctbr.experiments.sparsity_sweep("test", random_state=3, accelerator="cpu")
    err = capsys.readouterr().err
    n_fits = len(df)  # one fit per row at the test profile (a single lambda)
    assert (f"sparsity_sweep: {n_fits}fit" in err.replace(" fit", "fit")) is shown, err
