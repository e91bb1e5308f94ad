"""The stratified train/validation/test split and the memory-lean data path of :mod:`sctbr.model._data`."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.model import TBRDataModule
from sctbr.model._data import BackedRows, _Batches, prepare_arrays, stratified_split

pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ---------------------------------------------------------------------- stratified split


def test_split_keeps_every_group_in_training():
    groups = np.repeat(np.arange(5), [3, 10, 50, 7, 2])
    train, val, test = stratified_split(groups, 0.8, 0.2, random_state=0)
    assert set(groups[train]) == set(range(5))
    assert set(groups[val]) == set(range(5))  # validation_size > 0: at least one cell each


def test_split_is_disjoint_covering_and_sorted():
    groups = np.repeat(np.arange(4), [20, 30, 40, 50])
    train, val, test = stratified_split(groups, 0.6, 0.2, random_state=1)
    allidx = np.concatenate([train, val, test])
    assert len(allidx) == len(groups)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(len(groups)))
    for part in (train, val, test):
        np.testing.assert_array_equal(part, np.sort(part))


def test_split_respects_fractions_within_every_group():
    sizes = [20, 40, 100]
    groups = np.repeat(np.arange(3), sizes)
    train, val, test = stratified_split(groups, 0.6, 0.25, random_state=0)
    for g, n in enumerate(sizes):
        assert abs((groups[train] == g).sum() - 0.6 * n) <= 1
        assert abs((groups[val] == g).sum() - 0.25 * n) <= 1
        assert abs((groups[test] == g).sum() - 0.15 * n) <= 2


def test_split_depends_on_seed_only():
    groups = np.repeat(np.arange(3), 30)
    a = stratified_split(groups, 0.8, 0.2, random_state=4)
    b = stratified_split(groups, 0.8, 0.2, random_state=4)
    c = stratified_split(groups, 0.8, 0.2, random_state=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_split_too_small_group_is_named():
    groups = np.array([0] * 10 + [1] + [2] * 10)
    with pytest.raises(ValueError, match="'B cell' \\(1 cells\\)"):
        stratified_split(groups, 0.8, 0.2, group_names=["T cell", "B cell", "NK"])


def test_split_without_validation():
    groups = np.array([0] * 10 + [1])  # a single cell is enough without validation
    train, val, test = stratified_split(groups, 1.0, 0.0)
    assert len(val) == 0
    np.testing.assert_array_equal(train, np.arange(11))
    assert len(test) == 0


@pytest.mark.parametrize(("train_size", "validation_size"), [(0.0, 0.2), (0.9, 0.2), (0.8, 1.0), (1.5, 0.0)])
def test_split_bad_fractions(train_size, validation_size):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(np.zeros(10, dtype=int), train_size, validation_size)


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
