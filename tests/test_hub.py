"""A saved sctbr.model.TBR round-trips through scvi-tools' hub (scvi.hub.HubModel), offline.

``scvi.hub`` needs ``huggingface_hub`` (``pip install "sctbr[hub]"``); the test is skipped without it. No network:
the round trip is local (save, ``HubModel.save``, a fresh ``HubModel`` from the folder, ``load_model``), with
``HF_HUB_OFFLINE=1`` and sockets that refuse to connect.
"""

from __future__ import annotations

import socket
from importlib.metadata import version

import numpy as np
import pytest

from sctbr.model import TBR

pytest.importorskip("huggingface_hub")
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_tbr_round_trips_through_scvi_hub(small_adata, tmp_path, offline):
    from huggingface_hub import ModelCard
    from scvi.hub import HubMetadata, HubModel

    TBR.setup_anndata(small_adata, target="y", groupby="environment")
    model = TBR(small_adata, tree=small_adata.uns["environment_tree"], n_latent=2, hidden=(8,))
    model.train(max_epochs=3, accelerator="cpu", enable_progress_bar=False)
    folder = tmp_path / "tbr"
    model.save(folder, save_anndata=True)

    metadata = HubMetadata.from_dir(str(folder), anndata_version=version("anndata"), model_parent_module="sctbr.model")
    assert metadata.model_cls_name == "TBR"
    card = ModelCard("---\nlicense: bsd-3-clause\nlibrary_name: scvi-tools\ntags: [sctbr]\n---\n# A TBR model\n")
    HubModel(str(folder), metadata=metadata, model_card=card).save(overwrite=True)

    hub = HubModel(str(folder))  # metadata and model card read back from the folder
    assert hub.metadata.model_parent_module == "sctbr.model"
    hub.load_model(accelerator="cpu")  # with the AnnData saved next to the model
    loaded = hub.model
    assert isinstance(loaded, TBR)
    np.testing.assert_allclose(
        loaded.get_latent_representation(small_adata), model.get_latent_representation(small_adata), rtol=1e-6
    )
    np.testing.assert_allclose(loaded.predict(small_adata), model.predict(small_adata), rtol=1e-6)
    # and with the user's AnnData instead of the saved one
    hub = HubModel(str(folder))
    hub.load_model(adata=small_adata.copy(), accelerator="cpu")
    np.testing.assert_allclose(hub.model.get_deltas().to_numpy(), model.get_deltas().to_numpy())
