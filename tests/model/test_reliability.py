"""Long fits: checkpoints and resume, interrupts, divergence, saved versions, training on backed files (the data path itself: ``tests/model/test_data.py``)."""

from __future__ import annotations

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
