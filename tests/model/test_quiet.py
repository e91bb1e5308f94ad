"""sctbr's fits are quiet: no Lightning banners or tips at default verbosity, no misleading scvi-tools failure line."""

from __future__ import annotations

import logging
import warnings

import pytest
import scanpy as sc
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

import sctbr
from sctbr.model._quiet import LIGHTNING_LOGGERS, quiet_training

NOISE = (
    "GPU available",
    "TPU available",
    "HPU available",
    "litlogger",
    "smaller than the logging interval",
    "LeafSpec",
    "in eval mode at the start of training",
    "Exception raised during training",
    "NameError",
)


@pytest.fixture
def lightning_defaults(caplog):
    """Lightning's loggers as a user has them (conftest silences them for the other tests), captured by caplog."""
    saved = [(log, log.level, log.propagate) for log in map(logging.getLogger, ("lightning", *LIGHTNING_LOGGERS))]
    for log, _, _ in saved:
        log.setLevel(logging.NOTSET)
        log.propagate = True
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)  # what Lightning sets on import
    caplog.set_level(logging.INFO)
    verbosity = sc.settings.verbosity
    sc.settings.verbosity = "warning"  # scanpy's default
    yield caplog
    sc.settings.verbosity = verbosity
    for log, level, propagate in saved:
        log.setLevel(level)
        log.propagate = propagate


def _everything(capfd, caplog, recwarn) -> str:
    out, err = capfd.readouterr()
    return "\n".join([out, err, caplog.text, *(str(w.message) for w in recwarn)])


def test_capture_sees_lightning_messages(lightning_defaults, capfd, recwarn):
    """The capture below works: outside a fit, Lightning's info messages and warnings are seen."""
    rank_zero_info("GPU available: False, used: False")
    warnings.warn("The number of training batches (1) is smaller than the logging interval", UserWarning, stacklevel=1)
    text = _everything(capfd, lightning_defaults, recwarn)
    assert "GPU available" in text
    assert "smaller than the logging interval" in text


def test_quiet_training_is_scoped_and_honours_debug_verbosity(lightning_defaults, capfd, recwarn):
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    with quiet_training():
        rank_zero_info("GPU available: False, used: False")
        warnings.warn("The number of training batches (1) is smaller than the logging interval", stacklevel=1)
    assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == levels
    assert "GPU available" not in _everything(capfd, lightning_defaults, recwarn)
    sc.settings.verbosity = "debug"
    with quiet_training():
        rank_zero_info("GPU available: False, used: False")
    assert "GPU available" in _everything(capfd, lightning_defaults, recwarn)


def test_tiny_fit_prints_no_banners(lightning_defaults, capfd, recwarn):
    adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=30, random_state=0)
    capfd.readouterr()
    sctbr.tl.tbr(adata, max_epochs=1, accelerator="cpu")
    sctbr.tl.tbr(adata, max_epochs=3, accelerator="cpu", key_added="two_phases")  # fit and sparsify phases
    text = _everything(capfd, lightning_defaults, recwarn)
    assert [s for s in NOISE if s in text] == []
    assert "X_tbr" in adata.obsm


class _Boom(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        raise ValueError("boom from a callback")


def test_training_error_propagates_without_scvi_nameerror_line(lightning_defaults, capfd, recwarn):
    from scvi.train import _trainrunner

    adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=30, random_state=0)
    capfd.readouterr()
    with pytest.raises(ValueError, match="boom from a callback"):
        sctbr.tl.tbr(adata, max_epochs=1, accelerator="cpu", callbacks=[_Boom()])
    text = _everything(capfd, lightning_defaults, recwarn)
    assert "Exception raised during training" not in text
    assert "NameError" not in text
    assert "print" not in vars(_trainrunner)  # the filter is removed after the fit
