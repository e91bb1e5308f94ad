"""The default batch size, learning rate and stopping rule (``sctbr.model._policy``), and that fits apply them."""

from __future__ import annotations

import math

import pytest

from sctbr.model import TBR
from sctbr.model._policy import DEFAULT_LR, LARGE_DATA, batch_size_for, lr_for, resolve


@pytest.mark.parametrize(
    ("n_train", "batch"),
    [(100, 128), (2_880, 128), (LARGE_DATA - 1, 128), (LARGE_DATA, 512), (9_600, 512), (16_383, 512),
     (16_384, 1024), (609_600, 1024)],
)  # fmt: skip
def test_batch_size_grows_with_the_training_set_only_where_steps_stay_plentiful(n_train, batch):
    assert batch_size_for(n_train) == batch
    if batch > 128:
        assert n_train / batch >= 16  # at least 16 optimiser steps per epoch


def test_learning_rate_scales_with_the_square_root_of_the_batch():
    assert lr_for(128) == pytest.approx(DEFAULT_LR)
    assert lr_for(512) == pytest.approx(2 * DEFAULT_LR)
    assert lr_for(1024) == pytest.approx(math.sqrt(8) * DEFAULT_LR)


def test_explicit_values_win_over_the_policy():
    assert resolve(50_000, None, None, None) == (1024, pytest.approx(lr_for(1024)), True)
    assert resolve(50_000, 64, None, None) == (64, DEFAULT_LR, True)  # a given batch size keeps the base lr
    assert resolve(50_000, None, 1e-3, False) == (1024, 1e-3, False)
    assert resolve(1_000, None, None, None) == (128, pytest.approx(DEFAULT_LR), False)
    assert resolve(1_000, None, None, True)[2] is True
    # no validation cells, or several processes: no stopping rule unless asked for
    assert resolve(50_000, None, None, None, can_stop=False)[2] is False


def _fit(adata, **kwargs):
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=2, hidden=(8,), lam=0.1)
    model.train(accelerator="cpu", enable_progress_bar=False, **kwargs)
    return model


def test_a_large_fit_uses_large_batches_and_stops_on_a_plateau(make_adata):
    """10 242 cells (8 193 training cells): batches of 512 at lr 6e-3, and the stopping rule is on by default."""
    adata = make_adata(n_obs_per_env=1707)  # 6 environments x 1 707 cells
    assert 0.8 * adata.n_obs >= LARGE_DATA
    # a stopping rule that fires after one epoch without a 1.0 improvement: on by default here
    model = _fit(adata, max_epochs=40, early_stopping_patience=1, early_stopping_min_delta=1.0)
    assert (model.batch_size_, model.lr_) == (512, pytest.approx(2 * DEFAULT_LR))
    assert len(model.history["train_loss"]) < 10  # of 40 epochs
    # the user's values win: batch size and learning rate as given, and no stopping rule
    model = _fit(adata, max_epochs=3, batch_size=256, lr=1e-3, early_stopping=False)
    assert (model.batch_size_, model.lr_) == (256, 1e-3)
    assert len(model.history["train_loss"]) == 3


def test_a_small_fit_keeps_batches_of_128_and_every_epoch(small_adata):
    model = _fit(small_adata, max_epochs=6, early_stopping_patience=1, early_stopping_min_delta=1.0)
    assert (model.batch_size_, model.lr_) == (128, DEFAULT_LR)
    assert len(model.history["train_loss"]) == 6  # the stopping rule is off below 8 192 training cells
