"""One Lightning fit in phases (fit, sparsify, lambda path): the progress bar, early stopping and the phase plan
of :mod:`sctbr.model._phases`."""

from __future__ import annotations

import numpy as np
import pytest

from sctbr import EnvironmentTree
from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(2)  # the tree of the small simulation


def test_one_progress_bar_labelled_with_the_phase(small_adata, fast_model_kwargs, capsys):
    """One bar over all epochs of the fit (not one per phase restarting at epoch 1), named after the phase."""
    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=TREE, **fast_model_kwargs)
    model.train(max_epochs=4, fit_fraction=0.5, accelerator="cpu", enable_progress_bar=True)
    err = capsys.readouterr().err
    assert "fit:" in err
    assert "sparsify: 100%" in err
    assert "4/4" in err
    assert "1/2" not in err  # no bar of its own for a phase


def test_phase_labels_show_lambda_only_on_a_path():
    """The bar names a sparsify phase by its lambda when there are several (a path), with or without a fit phase."""
    from sctbr.model._phases import label, plan_phases

    path = plan_phases(10, n_fit=0, lr=1e-2, sparsify_lr=1e-2, lam=0.0, grid=np.array([0.1, 0.01]))
    assert [label(p, path) for p in path] == ["sparsify λ=0.1", "sparsify λ=0.01"]
    one = plan_phases(10, n_fit=5, lr=1e-2, sparsify_lr=1e-2, lam=0.1)
    assert [label(p, one) for p in one] == ["fit", "sparsify"]


def test_early_stopping_ends_a_phase_not_the_fit(make_adata):
    """Early stopping in the fit phase moves on to the sparsify phase, which still runs."""
    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=2, hidden=(8,), lam=0.1)
    model.train(
        max_epochs=400,
        fit_fraction=0.95,
        lr=0.3,
        early_stopping=True,
        early_stopping_patience=1,
        early_stopping_min_delta=1.0,
        accelerator="cpu",
        enable_progress_bar=False,
    )
    fit, sparsify = model.trainer.lightning_module.phases
    assert fit.epochs < 50  # of 380
    assert sparsify.start == fit.end  # the sparsify phase moved up, and ran (it may stop early too)
    assert 1 <= sparsify.epochs <= 20
    assert len(model.history["validation_loss"]) == sparsify.end
    assert hasattr(model, "refinement_")
