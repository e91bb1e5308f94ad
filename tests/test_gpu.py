"""GPU path: runs only where CUDA is available (skipped on CPU machines and in CPU CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sctbr

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_tbr_trains_on_gpu_and_identifies_latents():
    adata = sctbr.datasets.simulate(depth=4, n_obs_per_env=300, k=1, random_state=0)
    model = sctbr.tl.tbr(
        adata,
        accelerator="gpu",
        devices=1,
        return_model=True,
        train_size=0.5,
        validation_size=0.25,
        enable_progress_bar=False,
    )
    assert next(model.module.parameters()).device.type == "cuda"
    test = (adata.obs["tbr_split"] == "test").to_numpy()
    assert sctbr.metrics.mcc(adata.obsm["Z_true"][test], adata.obsm["X_tbr"][test]) >= 0.95


def test_cpu_accelerator_stays_on_cpu_even_with_a_gpu():
    adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=40, random_state=0)
    model = sctbr.tl.tbr(adata, max_epochs=2, accelerator="cpu", return_model=True, enable_progress_bar=False)
    assert next(model.module.parameters()).device.type == "cpu"
    assert np.isfinite(adata.obsm["X_tbr"]).all()


def test_training_arrays_stay_on_the_gpu():
    """The registered arrays are copied to the GPU once; every batch is cut there, and the copy is released."""
    from lightning.pytorch.callbacks import Callback

    class SeeData(Callback):
        def __init__(self):
            self.devices = set()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            resident = trainer.datamodule.resident
            self.devices |= {v.device.type for v in resident.values()} if resident is not None else {"host"}
            self.devices |= {v.device.type for b in batch for v in b.values()}

    seen = SeeData()
    adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=40, random_state=0)
    model = sctbr.tl.tbr(
        adata,
        max_epochs=2,
        accelerator="gpu",
        devices=1,
        return_model=True,
        enable_progress_bar=False,
        callbacks=[seen],
    )
    assert seen.devices == {"cuda"}
    assert model.trainer.datamodule.resident is None
