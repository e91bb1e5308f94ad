"""Training data resident on the training device (:mod:`sctbr.model._resident`), tested on CPU.

The path that a CUDA fit takes (copy once, cut batches by index on the device) is run here with the device forced to
``"cpu"``; its memory rule is run with the free memory given or patched. ``tests/test_gpu.py`` runs it on CUDA.
"""

from __future__ import annotations

import io

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback

import sctbr
from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.model import TBRDataModule
from sctbr.model import _resident as resident_module
from sctbr.model._data import _Batches, prepare_arrays
from sctbr.model._resident import resident_bytes

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def scanpy_log():
    """scanpy's log at verbosity "info", written into a buffer (settings restored afterwards)."""
    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    buffer = io.StringIO()
    sc.settings.logfile, sc.settings.verbosity = buffer, "info"
    yield buffer
    sc.settings.verbosity, sc.settings.logfile = verbosity, logfile


def _data(kind: str = "dense", n: int = 120, p: int = 6) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, p)).astype(np.float32)
    x[x < 0.2] = 0
    if kind == "sparse":
        x = sp.csr_matrix(x)
    return prepare_arrays(x, rng.normal(size=n), np.repeat(np.arange(4), n // 4))


def _batches(loader) -> list[dict]:
    return [b for group in loader for b in (group if isinstance(group, list) else [group])]


def _assert_same(got: list[dict], expected: list[dict], device: str = "cpu") -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        for key in (X_KEY, Y_KEY, ENV_KEY):
            assert g[key].device.type == device
            assert torch.equal(g[key].cpu(), e[key])


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("steps_per_call", [1, 4])
def test_resident_batches_equal_the_host_batches(kind, steps_per_call):
    """The same batches, in the same order (drawn on the host), cut from the arrays on the device."""
    host = TBRDataModule(_data(kind), batch_size=16, steps_per_call=steps_per_call)
    on_device = TBRDataModule(_data(kind), batch_size=16, steps_per_call=steps_per_call)
    assert on_device.place("cpu")
    assert on_device.resident[X_KEY].layout == torch.strided  # sparse inputs are dense on the device
    for _ in range(2):  # two epochs: the order changes, the same way on both
        _assert_same(_batches(on_device.train_dataloader()), _batches(host.train_dataloader()))
    _assert_same(_batches(on_device.val_dataloader()), _batches(host.val_dataloader()))


def test_dense_arrays_are_not_copied_on_cpu():
    data = _data("dense")
    dm = TBRDataModule(data, batch_size=16)
    assert dm.place("cpu")
    for key in (X_KEY, Y_KEY, ENV_KEY):
        assert dm.resident[key].data_ptr() == data[key].data_ptr()


class _Trainer:
    """The parts of a Lightning trainer that the data module reads."""

    global_rank, world_size, current_epoch = 0, 1, 0

    def __init__(self, device: str):
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


def test_setup_on_cpu_keeps_the_host_path():
    dm = TBRDataModule(_data("dense"), batch_size=16)
    dm.trainer = _Trainer("cpu")
    dm.setup("fit")
    assert dm.resident is None


def test_setup_on_an_accelerator_falls_back_when_memory_is_short(monkeypatch, scanpy_log):
    """The memory check runs before any copy: too little free memory keeps the host path, with a log message."""
    data = _data("dense")
    need = resident_bytes(data)
    monkeypatch.setattr(resident_module, "free_memory", lambda device: 2 * need - 2)
    dm = TBRDataModule(data, batch_size=16)
    dm.trainer = _Trainer("cuda:0")  # never touched: the arrays do not fit
    dm.setup("fit")
    assert dm.resident is None
    assert "Training data stay in host memory" in scanpy_log.getvalue()
    assert "cuda:0" in scanpy_log.getvalue()
    assert next(iter(dm.train_dataloader()))[0][X_KEY].device.type == "cpu"


def test_memory_rule_uses_half_of_the_free_memory():
    data = _data("sparse")
    need = resident_bytes(data)
    assert need == 120 * 6 * 4 + 120 * 4 + 120 * 8  # inputs dense float32, target float32, codes int64
    assert TBRDataModule(data).place("cpu", free_bytes=2 * need)
    assert not TBRDataModule(data).place("cpu", free_bytes=2 * need - 2)


def test_streamed_inputs_stay_on_disk(tmp_path, scanpy_log):
    x = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
    ad.AnnData(x).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    dm = TBRDataModule(prepare_arrays(backed.X, np.zeros(80), np.repeat(np.arange(2), 40), stream=True))
    assert not dm.place("cpu", free_bytes=2**40)
    assert "stay on disk" in scanpy_log.getvalue()


def test_ddp_shards_are_those_of_the_host_path():
    data = _data("dense")
    dm = TBRDataModule(data, batch_size=8)
    assert dm.place("cpu")
    for rank in (0, 1):
        kwargs = {"seed": 3, "rank": rank, "world_size": 2}
        host = _Batches(data, dm.train_idx, 8, True, **kwargs)
        resident = _Batches(data, dm.train_idx, 8, True, resident=dm.resident, **kwargs)
        _assert_same(list(resident), list(host))


def test_teardown_releases_the_device_copy():
    dm = TBRDataModule(_data("dense"))
    dm.place("cpu")
    dm.teardown("fit")
    assert dm.resident is None


class _SeeData(Callback):
    def __init__(self):
        self.resident = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.resident.append(trainer.datamodule.resident)


def test_cpu_fit_copies_nothing(small_adata):
    """A CPU fit cuts its batches from the host arrays (the device path is the host path there)."""
    seen = _SeeData()
    model = sctbr.tl.tbr(
        small_adata,
        n_latent=2,
        max_epochs=2,
        accelerator="cpu",
        return_model=True,
        enable_progress_bar=False,
        callbacks=[seen],
    )
    assert seen.resident
    assert all(r is None for r in seen.resident)
    assert model.trainer.datamodule.resident is None
