"""Shared fixtures: tiny simulated AnnData objects and settings for fast training."""

from __future__ import annotations

import itertools
import logging

import anndata as ad
import pytest
import torch

import sctbr

# Lightning and scvi-tools talk a lot on every fit; the tests only care about errors.
for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)

#: A simulation small enough to fit in a fraction of a second: 6 environments x 40 cells, 4 inputs, 2 latents.
SMALL_SIMULATION = {"depth": 2, "n_obs_per_env": 40, "n_inputs": 4, "n_latent": 2, "random_state": 0}

_NOISE = (
    # Lightning / torch chatter that tiny fits trigger by design
    r"ignore:.*number of training batches.*:UserWarning",
    r"ignore:.*does not have many workers.*:UserWarning",
    r"ignore:.*module\(s\) in eval mode.*:UserWarning",
    r"ignore:.*Sparse invariant checks.*:UserWarning",
    r"ignore:.*LeafSpec.*",
)


def pytest_configure(config):
    for line in _NOISE:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def _simulation_cache() -> dict:
    return {}


@pytest.fixture(scope="session")
def make_adata(_simulation_cache):
    """Factory of small simulated AnnData objects; every call returns a fresh copy (cached per parameters)."""

    def make(**kwargs):
        params = {**SMALL_SIMULATION, **kwargs}
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in _simulation_cache:
            _simulation_cache[key] = sctbr.datasets.simulate(**params)
        return _simulation_cache[key].copy()

    return make


@pytest.fixture
def small_adata(make_adata):
    """A fresh copy of the default small simulation (240 cells, environments n0..n11 of a depth-2 tree)."""
    return make_adata()


@pytest.fixture
def h5ad_roundtrip(tmp_path):
    """Write an AnnData to an h5ad file and read it back: what sctbr writes must stay h5ad-writable."""
    counter = itertools.count()

    def roundtrip(adata: ad.AnnData) -> ad.AnnData:
        path = tmp_path / f"roundtrip_{next(counter)}.h5ad"
        adata.write_h5ad(path)
        return ad.read_h5ad(path)

    return roundtrip


@pytest.fixture(scope="session")
def fast_model_kwargs() -> dict:
    """Keyword arguments of :class:`sctbr.model.TBR` (and ``tl.tbr``) for a tiny network (do not mutate)."""
    return {"n_latent": 2, "hidden": (16,)}


@pytest.fixture(scope="session")
def fast_train_kwargs() -> dict:
    """Keyword arguments of ``TBR.train`` (and ``tl.tbr``) for a short, quiet CPU fit (do not mutate)."""
    return {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture(scope="module")
def torch_single_thread():
    """Run torch on one thread for a test module: tiny models are faster so (no thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
