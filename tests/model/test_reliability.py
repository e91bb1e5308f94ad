"""Long fits: checkpoints and resume, interrupts, divergence, saved versions, backed and sparse data paths."""

from __future__ import annotations

import pickle
import signal

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import sctbr
from sctbr import EnvironmentTree
from sctbr.model import TBR
from sctbr.model._checkpoint import current_version
from sctbr.model._data import BackedRows, TBRDataModule, _Batches, prepare_arrays
from sctbr.model._module import ENV_KEY, X_KEY, Y_KEY

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TREE = EnvironmentTree.balanced(2)
#: 6 epochs: 3 of stage 1 (lam = 0), basis refinement, 3 of stage 3 (proximal steps).
TRAIN = {"max_epochs": 6, "fit_fraction": 0.5, "accelerator": "cpu", "enable_progress_bar": False, "batch_size": 32}


def new_model(adata, lam: float = 0.1) -> TBR:
    """lam = 0.1 gives exact zeros in Delta within the 3 proximal epochs (evidence that stage 3 ran)."""
    TBR.setup_anndata(adata, target="y", groupby="environment")
    return TBR(adata, tree=TREE, n_latent=2, hidden=(16,), lam=lam)


class InterruptAt(pl.Callback):
    """Raise KeyboardInterrupt (as Ctrl+C would) at the end of the n-th training epoch, counted over all stages."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def snapshot(adata: ad.AnnData) -> dict:
    return {
        "obsm": set(adata.obsm),
        "obs": list(adata.obs.columns),
        "uns": set(adata.uns),
        "X": np.array(adata.X, copy=True),
    }


def assert_unchanged(adata: ad.AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert (after["obsm"], after["obs"], after["uns"]) == (before["obsm"], before["obs"], before["uns"])
    np.testing.assert_array_equal(after["X"], before["X"])


# ---------------------------------------------------------------------- checkpoints and resume


@pytest.fixture(scope="module")
def uninterrupted(make_adata, torch_single_thread):
    model = new_model(make_adata())
    model.train(**TRAIN)
    return model


def _history(model) -> dict:
    return {k: v.iloc[:, 0].to_numpy(dtype=float) for k, v in model.history.items()}


# epoch 2 is inside the fit phase (the checkpoint of epoch 1 exists); epoch 5 is the 2nd epoch of the sparsify phase
# (the checkpoint of epoch 4 holds the refinement's result, done at the start of epoch 4)
@pytest.mark.parametrize("interrupt_at", [2, 5])
def test_resume_after_interrupt_equals_an_uninterrupted_fit(make_adata, uninterrupted, tmp_path, interrupt_at):
    model = new_model(make_adata())
    # As in an interactive Python session. A Python started as a background job of a non-interactive shell
    # (`cmd &` in a script, as CI runners may do) inherits SIGINT ignored, so the handler is set here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.train(checkpoint_dir=tmp_path, callbacks=[InterruptAt(interrupt_at)], **TRAIN)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN was undone
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not model.is_trained_

    resumed = new_model(make_adata())
    counter = InterruptAt(0)  # never fires; counts the epochs trained
    resumed.train(checkpoint_dir=tmp_path, resume=True, callbacks=[counter], **TRAIN)
    # only the interrupted epoch and the later ones are trained again
    assert counter.seen == TRAIN["max_epochs"] - (interrupt_at - 1)
    # same numbers, exactly (CPU): weights, latents, refinement and the loss history of every epoch
    for key, value in uninterrupted.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[key], value, rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(resumed.get_latent_representation(), uninterrupted.get_latent_representation())
    assert resumed.refinement_["penalty_after"] == uninterrupted.refinement_["penalty_after"]
    expected = _history(uninterrupted)
    got = _history(resumed)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
    assert (resumed.get_deltas().to_numpy() == 0).any()  # the proximal stage ran
    np.testing.assert_array_equal(resumed.train_indices, uninterrupted.train_indices)


def test_resuming_a_finished_fit_replays_it_without_training(make_adata, uninterrupted, tmp_path):
    model = new_model(make_adata())
    model.train(checkpoint_dir=tmp_path, **TRAIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "sctbr_checkpoint.json"]

    replay = new_model(make_adata())
    counter = InterruptAt(0)  # never fires; counts the epochs trained
    replay.train(checkpoint_dir=tmp_path, resume=True, callbacks=[counter], **TRAIN)
    assert counter.seen == 0
    np.testing.assert_array_equal(replay.get_latent_representation(), uninterrupted.get_latent_representation())
    assert replay.refinement_["penalty_after"] == uninterrupted.refinement_["penalty_after"]
    assert len(replay.history["train_loss"]) == TRAIN["max_epochs"]


AUTO = {**TRAIN, "max_epochs": 8, "lam_grid": [1e-3, 0.1], "path_epochs": 0.25}  # phases of 4, 4 and 2 epochs


def test_resume_inside_a_lambda_path_equals_an_uninterrupted_fit(make_adata, tmp_path):
    """Interrupted in the path's second lambda: the first lambda's scores and solution come from the checkpoint."""
    uninterrupted = new_model(make_adata(), lam="auto")
    uninterrupted.train(**AUTO)
    model = new_model(make_adata(), lam="auto")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.train(checkpoint_dir=tmp_path, callbacks=[InterruptAt(10)], **AUTO)
    finally:
        signal.signal(signal.SIGINT, previous)
    resumed = new_model(make_adata(), lam="auto")
    counter = InterruptAt(0)
    resumed.train(checkpoint_dir=tmp_path, resume=True, callbacks=[counter], **AUTO)
    assert counter.seen == 1
    pd.testing.assert_frame_equal(resumed.lam_path_, uninterrupted.lam_path_)
    assert resumed.lam_ == uninterrupted.lam_
    for key, value in uninterrupted.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_checkpoints_of_another_fit_are_refused(make_adata, tmp_path):
    model = new_model(make_adata())
    with pytest.raises(KeyboardInterrupt):
        model.train(checkpoint_dir=tmp_path, callbacks=[InterruptAt(1)], **TRAIN)
    other = new_model(make_adata())
    with pytest.raises(ValueError, match=r"other settings \(lr: checkpoint 0.003, now 0.01"):
        other.train(checkpoint_dir=tmp_path, resume=True, **{**TRAIN, "lr": 0.01})
    with pytest.raises(FileExistsError, match="resume=True"):
        other.train(checkpoint_dir=tmp_path, **TRAIN)


def test_resume_without_checkpoints_starts_fresh(make_adata, uninterrupted, tmp_path):
    model = new_model(make_adata())
    model.train(checkpoint_dir=tmp_path / "new", resume=True, **TRAIN)
    np.testing.assert_array_equal(model.get_latent_representation(), uninterrupted.get_latent_representation())


# ---------------------------------------------------------------------- interrupts leave the AnnData untouched


@pytest.mark.parametrize("verb", ["tbr", "baseline"])
@pytest.mark.parametrize("interrupt_at", [1, 3])
def test_ctrl_c_during_training_writes_nothing(small_adata, verb, interrupt_at):
    before = snapshot(small_adata)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        getattr(sctbr.tl, verb)(
            small_adata, n_latent=2, hidden=(8,), callbacks=[InterruptAt(interrupt_at)], **{**TRAIN, "max_epochs": 4}
        )
    assert_unchanged(small_adata, before)
    assert signal.getsignal(signal.SIGINT) is handler


# ---------------------------------------------------------------------- divergence


@pytest.mark.parametrize(
    ("scale", "lr", "match"),
    [
        (1e30, 3e-3, r"diverged in epoch 0 of stage 'fit'.*largest \|input\| is 3\.\d+e\+30"),
        (1.0, 1e30, r"diverged in epoch 0 of stage 'fit' \(lr=1e\+30\).*Lower the learning rate \(e\.g\. lr=0\.001\)"),
    ],
)
def test_divergence_stops_with_a_hint(make_adata, scale, lr, match):
    adata = make_adata()
    adata.X = adata.X * np.float32(scale)
    model = new_model(adata)
    with pytest.raises(FloatingPointError, match=match):
        model.train(**{**TRAIN, "max_epochs": 40, "lr": lr})
    assert len(model.history.get("train_loss", [])) <= 1  # stopped in the first epoch, not after 40
    assert not model.is_trained_
    with pytest.raises(RuntimeError):
        model.get_latent_representation()  # no NaN latents


def test_divergence_in_tl_tbr_writes_nothing(small_adata):
    small_adata.X = small_adata.X * np.float32(1e30)
    before = snapshot(small_adata)
    with pytest.raises(FloatingPointError, match="diverged"):
        sctbr.tl.tbr(small_adata, n_latent=2, hidden=(8,), **TRAIN)
    assert_unchanged(small_adata, before)


# ---------------------------------------------------------------------- saved versions


@pytest.fixture(scope="module")
def saved_model(uninterrupted, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    uninterrupted.save(path)
    return path


def _with_version(src, dst, version):
    dst.mkdir()
    payload = torch.load(src / "model.pt", weights_only=False)
    if version is None:
        del payload["attr_dict"]["sctbr_version_"]
    else:
        payload["attr_dict"]["sctbr_version_"] = version
    torch.save(payload, dst / "model.pt")
    return dst


def test_save_records_the_version_and_load_accepts_it(saved_model, uninterrupted, make_adata):
    payload = torch.load(saved_model / "model.pt", weights_only=False)
    assert payload["attr_dict"]["sctbr_version_"] == current_version() == sctbr.__version__
    loaded = TBR.load(saved_model, adata=make_adata(), accelerator="cpu")
    np.testing.assert_array_equal(loaded.get_latent_representation(), uninterrupted.get_latent_representation())


@pytest.mark.parametrize(
    ("version", "match"),
    [
        ("99.0.0", r"written by sctbr 99\.0\.0, newer than the installed .*Upgrade sctbr"),
        ("0.0.1", r"written by sctbr 0\.0\.1; the installed sctbr .* reads models from 0\.1\.0 on\. Refit"),
        (None, "records no sctbr version"),
        ("not a version", "unreadable sctbr version 'not a version'"),
    ],
)
def test_load_refuses_an_incompatible_version(saved_model, tmp_path, make_adata, version, match):
    path = _with_version(saved_model, tmp_path / "edited", version)
    adata = make_adata()
    uns_before = set(adata.uns)
    with pytest.raises(ValueError, match=match):
        TBR.load(path, adata=adata, accelerator="cpu")
    assert set(adata.uns) == uns_before  # refused before scvi-tools registered the AnnData


def test_a_patch_release_is_compatible(saved_model, tmp_path, make_adata):
    major, minor = (int(v) for v in current_version().split(".")[:2])
    path = _with_version(saved_model, tmp_path / "patch", f"{major}.{minor}.99")
    TBR.load(path, adata=make_adata(), accelerator="cpu")


# ---------------------------------------------------------------------- memory-lean data path


def test_dense_float32_inputs_are_not_copied():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    data = prepare_arrays(x, np.zeros(50), np.zeros(50, dtype=int))
    assert np.shares_memory(data[X_KEY].numpy(), x)


def test_sparse_inputs_stay_sparse_until_a_batch():
    x = sp.random(60, 30, density=0.1, format="csr", dtype=np.float32, random_state=0)
    data = prepare_arrays(x, np.zeros(60), np.zeros(60, dtype=int))
    assert isinstance(data[X_KEY], sp.csr_matrix)
    assert np.shares_memory(data[X_KEY].data, x.data)  # no copy of a float32 CSR matrix
    batch = next(iter(_Batches(data, np.arange(60), 16, shuffle=True, seed=0)))
    assert batch[X_KEY].layout == torch.strided
    assert batch[X_KEY].shape == (16, 30)


@pytest.fixture
def backed_files(tmp_path):
    """A dense and a sparse h5ad file of 300 cells x 7 genes."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 7)).astype(np.float32)
    x[x < 0.3] = 0
    paths = {}
    for kind, matrix in (("dense", x), ("sparse", sp.csr_matrix(x))):
        paths[kind] = tmp_path / f"{kind}.h5ad"
        ad.AnnData(matrix).write_h5ad(paths[kind])
    return x, paths


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_backed_rows_read_any_rows_and_columns(backed_files, kind):
    x, paths = backed_files
    backed = ad.read_h5ad(paths[kind], backed="r")
    cols = np.array([5, 0, 3])
    rows = BackedRows(backed.X, cols, block_bytes=4 * 7 * 16)  # 16 rows per block
    assert rows.shape == (300, 3)
    for idx in (np.arange(300), np.array([250, 3, 3, 17, 299]), np.arange(100, 140)[::-1], np.array([], dtype=int)):
        np.testing.assert_array_equal(rows.take(idx), x[idx][:, cols])
    loaded = rows.load()
    np.testing.assert_array_equal(loaded.toarray() if sp.issparse(loaded) else loaded, x[:, cols])
    assert sp.issparse(loaded) == (kind == "sparse")
    clone = pickle.loads(pickle.dumps(rows))  # ddp_spawn sends it to other processes
    np.testing.assert_array_equal(clone.take(np.array([7, 1])), x[[7, 1]][:, cols])


def test_streamed_epochs_visit_every_cell_once_in_a_new_order(backed_files):
    x, paths = backed_files
    backed = ad.read_h5ad(paths["dense"], backed="r")
    data = prepare_arrays(backed.X, np.arange(300), np.zeros(300, dtype=int), stream=True)
    assert isinstance(data[X_KEY], BackedRows)
    train = np.sort(np.random.default_rng(0).choice(300, 240, replace=False))
    batches = _Batches(data, train, 10, shuffle=True, seed=0, block_cells=64)
    orders = []
    for _ in range(2):
        seen = [b for b in batches]
        assert len(seen) == len(batches)
        cells = np.concatenate([b[Y_KEY].numpy().astype(int) for b in seen])
        np.testing.assert_array_equal(np.sort(cells), train)
        for b in seen:  # inputs belong to their cells
            np.testing.assert_array_equal(b[X_KEY].numpy(), x[b[Y_KEY].numpy().astype(int)])
        orders.append(cells)
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize("streamed", [False, True])
def test_ddp_shards_are_disjoint_and_equally_long(backed_files, streamed):
    x, paths = backed_files
    backed = ad.read_h5ad(paths["dense"], backed="r")
    data = prepare_arrays(backed.X, np.arange(300), np.zeros(300, dtype=int), stream=streamed)
    train = np.arange(0, 300, 1)[:251]
    shards = [
        _Batches(data, train, 16, shuffle=True, seed=3, rank=r, world_size=2, block_cells=64, steps_per_call=2)
        for r in (0, 1)
    ]
    cells = []
    for shard in shards:
        seen = list(shard)
        assert len(seen) == len(shard)
        cells.append(np.concatenate([b[Y_KEY].numpy() for group in seen for b in group]).astype(int))
    assert len(shards[0]) == len(shards[1])  # the same number of steps on every process (DDP would hang)
    assert len(cells[0]) == len(cells[1])
    assert not set(cells[0]) & set(cells[1])
    assert len(cells[0]) + len(cells[1]) >= len(train) - (8 if streamed else 1)


def _fit_latents(adata, **train):
    model = new_model(adata)
    model.train(**{**TRAIN, "max_epochs": 3, **train})
    return model


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_training_and_inference_on_a_backed_file(make_adata, tmp_path, kind):
    memory = make_adata()
    if kind == "sparse":
        memory.X = sp.csr_matrix(memory.X)
    path = tmp_path / "cells.h5ad"
    memory.write_h5ad(path)
    reference = _fit_latents(memory.copy())
    z_ref = reference.get_latent_representation()

    # "load": the registered inputs are read into memory block by block: the same fit as in memory
    backed = ad.read_h5ad(path, backed="r")
    loaded = _fit_latents(backed, backed="load")
    np.testing.assert_array_equal(loaded.get_latent_representation(), z_ref)

    # "stream": blocks are read for every epoch (another batch order); inference streams too
    backed = ad.read_h5ad(path, backed="r")
    streamed = _fit_latents(backed, backed="stream")
    z_stream = streamed.get_latent_representation()
    assert z_stream.shape == z_ref.shape
    assert np.isfinite(z_stream).all()
    np.testing.assert_allclose(z_stream, streamed.get_latent_representation(memory.copy()), atol=1e-6)
    assert streamed.history["mse_validation"].iloc[-1, 0] < 1.5 * reference.history["mse_validation"].iloc[-1, 0]
    # a model trained in memory encodes a backed file
    np.testing.assert_allclose(reference.get_latent_representation(ad.read_h5ad(path, backed="r")), z_ref, atol=1e-6)


def test_tl_tbr_on_a_backed_file(make_adata, tmp_path):
    memory = make_adata()
    path = tmp_path / "cells.h5ad"
    memory.write_h5ad(path)
    kwargs = {"n_latent": 2, "hidden": (8,), "var_names": ["x3", "x0", "x2"], **TRAIN, "max_epochs": 3}
    sctbr.tl.tbr(memory, **kwargs)
    backed = ad.read_h5ad(path, backed="r")
    sctbr.tl.tbr(backed, **kwargs)  # results go to the in-memory annotations
    assert backed.isbacked
    np.testing.assert_array_equal(backed.obsm["X_tbr"], memory.obsm["X_tbr"])
    out = tmp_path / "with_results.h5ad"
    backed.write_h5ad(out)
    back = ad.read_h5ad(out)
    np.testing.assert_array_equal(back.obsm["X_tbr"], memory.obsm["X_tbr"])
    np.testing.assert_array_equal(back.X, memory.X)


def test_datamodule_is_seeded_by_the_trainer_epoch():
    """Batch order is a function of (seed, epoch), so a resumed fit sees the batches of an uninterrupted one."""
    data = prepare_arrays(np.eye(40, dtype=np.float32), np.arange(40), np.repeat(np.arange(4), 10))
    dm = TBRDataModule(data, batch_size=8, steps_per_call=1)

    class FakeTrainer:
        global_rank, world_size, current_epoch = 0, 1, 0

    dm.trainer = FakeTrainer()
    first = [b[Y_KEY].tolist() for b in dm.train_dataloader()]
    dm.trainer.current_epoch = 3
    fourth = [b[Y_KEY].tolist() for b in dm.train_dataloader()]
    fresh = TBRDataModule(data, batch_size=8, steps_per_call=1)
    fresh.trainer = FakeTrainer()
    fresh.trainer.current_epoch = 3
    assert [b[Y_KEY].tolist() for b in fresh.train_dataloader()] == fourth
    assert first != fourth
    assert sorted(sum(first, [])) == sorted(dm.train_idx.tolist())
    assert ENV_KEY in next(iter(dm.val_dataloader()))
