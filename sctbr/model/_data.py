"""Data path of :class:`~sctbr.model.TBR`: stratified split, memory-lean arrays and fast tensor batches.

The TBR encoder is tiny, so per-batch overhead dominates training time. Instead of scvi-tools'
``AnnDataLoader`` (which indexes the AnnData for every batch), the registered arrays are read once and
batches are cut from them:

- dense float32 inputs are used in place (no copy); other dtypes are converted to float32 once;
- sparse inputs stay sparse (CSR) until a batch is formed;
- inputs of a backed (on-disk) AnnData are read in row blocks, restricted to the registered columns: either
  loaded block by block into memory (``backed="load"``: the file's other columns are never read) or streamed,
  block by block, for every epoch (``backed="stream"``: memory holds one block);
- under DDP every process iterates its own shard of each epoch's (common) shuffled order, with the same number
  of batches on every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY

#: Bytes of the file read per block of a backed matrix (all of its columns), and per block of a finiteness check.
BLOCK_BYTES = 64 * 2**20


def stratified_split(
    groups: np.ndarray,
    train_size: float,
    validation_size: float,
    *,
    random_state: int = 0,
    min_cells: int = 2,
    group_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split cell indices into train/validation/test within each group (environment).

    Every group contributes the same fractions, so no environment is missing from training. A group with too
    few cells to give at least one training cell (and one validation cell when ``validation_size > 0``) raises
    a ``ValueError`` naming it. Runs in ``O(n log n)`` (one stable sort), also for thousands of groups.
    """
    if not 0 < train_size <= 1 or not 0 <= validation_size < 1 or train_size + validation_size > 1 + 1e-9:
        raise ValueError(
            f"`train_size` ({train_size}) and `validation_size` ({validation_size}) must be fractions in (0, 1] "
            "that sum to at most 1."
        )
    rng = np.random.default_rng(random_state)
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")  # each group's cells in increasing order, groups sorted
    codes, starts = np.unique(groups[order], return_index=True)
    ends = np.r_[starts[1:], len(order)].astype(int)
    train, val, test = [], [], []
    too_small = []
    need = min_cells if validation_size > 0 else 1
    for g, s, e in zip(codes, starts, ends, strict=True):
        idx = order[s:e]
        if len(idx) < need:
            too_small.append((group_names[g] if group_names is not None else g, len(idx)))
            continue
        idx = rng.permutation(idx)
        n_val = max(1, int(round(validation_size * len(idx)))) if validation_size > 0 else 0
        n_train = max(1, min(len(idx) - n_val, int(round(train_size * len(idx)))))
        train.append(idx[:n_train])
        val.append(idx[n_train : n_train + n_val])
        test.append(idx[n_train + n_val :])
    if too_small:
        listed = ", ".join(f"{name!r} ({n} cells)" for name, n in too_small[:10])
        raise ValueError(
            f"Environments with too few cells to split into training and validation cells: {listed}. "
            f"Each needs at least {min_cells} cells: drop them (e.g. sctbr.pp.subsample(..., min_cells=...)) "
            "or pass validation_size=0."
        )
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.array([], dtype=int)  # noqa: E731
    return cat(train), cat(val), cat(test)


# ---------------------------------------------------------------------------------------------------- backed rows


def is_backed_matrix(x) -> bool:
    """Whether ``x`` is an on-disk matrix of a backed AnnData (an h5py dataset or anndata's backed sparse matrix)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency of anndata
        return False
    if isinstance(x, h5py.Dataset):
        return True
    return hasattr(x, "to_memory") and hasattr(x, "group") and hasattr(x, "format")


class BackedRows:
    """Rows of an on-disk matrix (a backed AnnData's ``X``), restricted to some columns, read by row blocks.

    Reads are contiguous row ranges of about :data:`BLOCK_BYTES` of the file, so the whole matrix is never in
    memory. Row sets that are scattered over the file are read by sorted fancy indexing instead. Pickling (for
    ``ddp_spawn``) stores the file name and reopens the file read-only.

    Parameters
    ----------
    matrix
        ``h5py.Dataset`` (dense) or anndata's backed CSR/CSC dataset.
    columns
        Column indices to keep (``None``: all).
    block_bytes
        Bytes of the file per block read.
    """

    def __init__(self, matrix, columns: np.ndarray | None = None, block_bytes: int = BLOCK_BYTES):
        self.matrix = matrix
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        n_obs, n_file = (int(s) for s in matrix.shape)
        n_cols = n_file if self.columns is None else len(self.columns)
        self.shape = (n_obs, n_cols)
        self.dtype = np.dtype(np.float32)
        self.block_bytes = int(block_bytes)
        self.block_rows = max(1, self.block_bytes // (4 * max(1, n_file)))

    # -- pickling: reopen the file in the receiving process --------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        m = self.matrix
        group = m if _is_h5(m) else m.group
        state["matrix"] = (str(group.file.filename), str(group.name), _is_h5(m))
        return state

    def __setstate__(self, state: dict) -> None:
        filename, name, dense = state.pop("matrix")
        self.__dict__.update(state)
        import h5py

        node = h5py.File(filename, "r")[name]
        if dense:
            self.matrix = node
        else:
            try:
                from anndata.io import sparse_dataset
            except ImportError:  # pragma: no cover - anndata < 0.11
                from anndata.experimental import sparse_dataset
            self.matrix = sparse_dataset(node)

    # -- reads --------------------------------------------------------------------------------------------------
    def _select(self, block):
        if sp.issparse(block):
            block = sp.csr_matrix(block)
            if self.columns is not None:
                block = block[:, self.columns]
            return block.astype(np.float32, copy=False)
        block = np.asarray(block)
        if self.columns is not None:
            block = block[:, self.columns]
        return np.ascontiguousarray(block, dtype=np.float32)

    def read(self, start: int, stop: int):
        """Rows ``start:stop`` (float32; CSR for a sparse file), restricted to the columns."""
        return self._select(self.matrix[int(start) : int(stop)])

    def blocks(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of consecutive row blocks covering the matrix."""
        for start in range(0, self.shape[0], self.block_rows):
            yield start, min(self.shape[0], start + self.block_rows)

    def take(self, idx) -> np.ndarray:
        """Dense float32 rows ``idx`` (any order, repeats allowed)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        if len(idx) == 0:
            return out
        order = np.argsort(idx, kind="stable")
        rows_sorted = idx[order]
        unique, inverse = np.unique(rows_sorted, return_inverse=True)
        lo, hi = int(unique[0]), int(unique[-1]) + 1
        parts = []
        if hi - lo <= 4 * len(unique) + 64:
            # a compact row set: read its range in contiguous blocks, keep the wanted rows
            for start in range(lo, hi, self.block_rows):
                stop = min(hi, start + self.block_rows)
                wanted = unique[(unique >= start) & (unique < stop)] - start
                if len(wanted):
                    parts.append(_dense(self.read(start, stop)[wanted]))
        else:
            # scattered rows: sorted fancy indexing (h5py needs increasing indices), in bounded pieces
            step = max(1, self.block_rows)
            for s in range(0, len(unique), step):
                parts.append(_dense(self._select(self.matrix[unique[s : s + step]])))
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out[order] = rows[inverse]
        return out

    def load(self):
        """All rows in memory (float32; CSR for a sparse file), read block by block."""
        blocks = [self.read(a, b) for a, b in self.blocks()]
        if not blocks:
            return np.empty(self.shape, dtype=np.float32)
        if sp.issparse(blocks[0]):
            return sp.vstack(blocks, format="csr", dtype=np.float32)
        out = np.empty(self.shape, dtype=np.float32)
        pos = 0
        for b in blocks:
            out[pos : pos + len(b)] = b
            pos += len(b)
        return out


def read_columns(x, columns):
    """Some columns of a matrix, in memory; an on-disk matrix (a backed AnnData's ``X``) is read block by block.

    Parameters
    ----------
    x
        A numpy array, a scipy sparse matrix, or the ``X`` (or a layer) of an AnnData opened with ``backed="r"``.
    columns
        Integer positions of the columns to keep, in the order wanted.

    Returns
    -------
    ``x[:, columns]``; for an on-disk matrix a float32 array (CSR matrix for a sparse file) read by row blocks of
    about 64 MiB, so the whole file is never in memory at once.

    Examples
    --------
    >>> import anndata as ad
    >>> import numpy as np
    >>> from sctbr.model import read_columns
    >>> x = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> read_columns(x, [2, 0])
    array([[2., 0.],
           [5., 3.]], dtype=float32)
    >>> ad.AnnData(x).write_h5ad("small.h5ad")
    >>> backed = ad.read_h5ad("small.h5ad", backed="r")
    >>> read_columns(backed.X, [2, 0])
    array([[2., 0.],
           [5., 3.]], dtype=float32)
    >>> backed.file.close()
    """
    return BackedRows(x, columns).load() if is_backed_matrix(x) else x[:, columns]


def _is_h5(x) -> bool:
    import h5py

    return isinstance(x, h5py.Dataset)


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else x


# ---------------------------------------------------------------------------------------------------- arrays


def check_finite(x, what: str = "inputs") -> None:
    """Raise a clear error for NaN or infinite values, checking block by block (no full-size temporary)."""
    bad, first = 0, None
    if isinstance(x, BackedRows):
        chunks = ((a, x.read(a, b)) for a, b in x.blocks())
    elif sp.issparse(x):
        x = sp.csr_matrix(x) if not isinstance(x, sp.csr_matrix) else x
        step = max(1, BLOCK_BYTES // 4)
        chunks = ((None, x.data[s : s + step]) for s in range(0, len(x.data), step))
    else:
        x = np.asarray(x)
        rows = max(1, BLOCK_BYTES // (4 * max(1, x.shape[1] if x.ndim > 1 else 1)))
        chunks = ((s, x[s : s + rows]) for s in range(0, len(x), rows))
    for start, chunk in chunks:
        values = chunk.data if sp.issparse(chunk) else chunk
        finite = np.isfinite(values)
        if not finite.all():
            n = int(values.size - np.count_nonzero(finite))
            if first is None and start is not None and not sp.issparse(chunk):
                r, c = np.argwhere(~finite)[0]
                first = (start + int(r), int(c))
            bad += n
    if bad:
        where = f" (first at cell {first[0]}, input {first[1]})" if first is not None else ""
        raise ValueError(
            f"The {what} contain {bad} NaN or infinite values{where}. Impute or drop them (e.g. np.nan_to_num, or "
            "filter cells) before fitting."
        )


def max_abs(x) -> float:
    """Largest absolute input value (block by block); used to explain a diverged fit."""
    if isinstance(x, BackedRows):
        return max((float(np.abs(_dense(x.read(a, b))).max(initial=0.0)) for a, b in x.blocks()), default=0.0)
    if sp.issparse(x):
        return float(np.abs(x.data).max(initial=0.0))
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    rows = max(1, BLOCK_BYTES // (4 * max(1, x.shape[1] if x.ndim > 1 else 1)))
    return max((float(np.nanmax(np.abs(x[s : s + rows]), initial=0.0)) for s in range(0, len(x), rows)), default=0.0)


def prepare_arrays(
    x, y: np.ndarray | None, env: np.ndarray, *, columns: np.ndarray | None = None, stream: bool = False
) -> dict:
    """Hold inputs, target and environment codes for batching, without needless copies of the inputs.

    Parameters
    ----------
    x
        Inputs: a dense array (used in place when it is C-contiguous float32), a scipy sparse matrix (kept sparse,
        CSR float32), or the on-disk matrix of a backed AnnData.
    y
        Target(s) (``None``: zeros, for inference).
    env
        Environment codes.
    columns
        Input columns to use (``None``: all).
    stream
        For a backed ``x``: leave the inputs on disk (:class:`BackedRows`, read by blocks for every batch)
        instead of reading the selected columns into memory block by block.

    Raises
    ------
    ValueError
        For NaN or infinite inputs.
    """
    if is_backed_matrix(x):
        rows = BackedRows(x, columns)
        xs = rows if stream else rows.load()
    else:
        if columns is not None:
            x = x[:, np.asarray(columns)]
        if sp.issparse(x):
            xs = x if isinstance(x, sp.csr_matrix) else sp.csr_matrix(x)
            xs = xs.astype(np.float32, copy=False)
        else:
            xs = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    check_finite(xs)
    if not isinstance(xs, (BackedRows, sp.csr_matrix)):
        xs = torch.from_numpy(xs)
    yt = torch.from_numpy(np.asarray(y if y is not None else np.zeros(len(env)), dtype=np.float32))
    return {X_KEY: xs, Y_KEY: yt, ENV_KEY: torch.from_numpy(np.asarray(env, dtype=np.int64))}


def batch_from(data: dict, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut one batch (dense tensors) from the arrays prepared by :func:`prepare_arrays`."""
    x = data[X_KEY]
    if isinstance(x, BackedRows):
        xb = torch.from_numpy(x.take(idx.numpy()))
    elif isinstance(x, sp.csr_matrix):
        xb = torch.from_numpy(x[idx.numpy()].toarray())
    else:
        xb = x.index_select(0, idx)
    return {X_KEY: xb, Y_KEY: data[Y_KEY].index_select(0, idx), ENV_KEY: data[ENV_KEY].index_select(0, idx)}


# ---------------------------------------------------------------------------------------------------- batches


class _Batches:
    """Iterable of dict batches over a fixed index set, reshuffled each epoch with a seeded generator.

    The order of epoch ``e`` depends on ``seed + e`` only (``e`` from ``epoch_fn``, the trainer's epoch, so a fit
    resumed from a checkpoint sees the same batches as an uninterrupted one). With ``world_size > 1`` every
    process keeps its shard (``rank::world_size``, truncated to the same length on every process) of the common
    order. Inputs on disk (:class:`BackedRows`) are shuffled by blocks: the block order and the cells within a
    block are shuffled, and one block is read at a time.
    """

    def __init__(
        self,
        data: dict,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        steps_per_call: int = 1,
        *,
        epoch_fn: Callable[[], int | None] | None = None,
        rank: int = 0,
        world_size: int = 1,
        block_cells: int | None = None,
    ):
        self.data = data
        self.steps_per_call = max(1, int(steps_per_call))
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.epoch_fn = epoch_fn
        self.rank, self.world_size = int(rank), max(1, int(world_size))
        source = data[X_KEY]
        self.streamed = isinstance(source, BackedRows) and shuffle
        if self.streamed:
            cells = block_cells or max(self.batch_size * self.steps_per_call, source.block_rows // 2)
            self.blocks = list(torch.split(self.indices, max(1, int(cells))))

    def _local(self, n: int) -> int:
        return n // self.world_size if self.world_size > 1 else n

    def _shard(self, idx: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return idx
        return idx[self.rank :: self.world_size][: self._local(len(idx))]

    def _n_batches(self) -> int:
        bs = self.batch_size
        if self.streamed:
            return sum((self._local(len(b)) + bs - 1) // bs for b in self.blocks)
        return (self._local(len(self.indices)) + bs - 1) // bs

    def __len__(self) -> int:
        return (self._n_batches() + self.steps_per_call - 1) // self.steps_per_call

    def _generator(self) -> torch.Generator:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is None:
            epoch = self.epoch
        self.epoch = int(epoch) + 1
        return torch.Generator().manual_seed(self.seed + int(epoch))

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        bs = self.batch_size
        if self.streamed:
            g = self._generator()
            for b in torch.randperm(len(self.blocks), generator=g).tolist():
                piece = self.blocks[b]
                local = torch.randperm(len(piece), generator=g)
                local = self._shard(local)
                block = {
                    X_KEY: torch.from_numpy(self.data[X_KEY].take(piece.numpy())),
                    Y_KEY: self.data[Y_KEY].index_select(0, piece),
                    ENV_KEY: self.data[ENV_KEY].index_select(0, piece),
                }
                for s in range(0, len(local), bs):
                    sel = local[s : s + bs]
                    yield {k: v.index_select(0, sel) for k, v in block.items()}
            return
        idx = self.indices
        if self.shuffle:
            idx = idx[torch.randperm(len(idx), generator=self._generator())]
        idx = self._shard(idx)
        for s in range(0, len(idx), bs):
            yield batch_from(self.data, idx[s : s + bs])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = self._batches()
        if self.steps_per_call == 1:
            yield from batches
            return
        group = []
        for b in batches:
            group.append(b)
            if len(group) == self.steps_per_call:
                yield group
                group = []
        if group:
            yield group


class TBRDataModule(pl.LightningDataModule):
    """Lightning data module with a stratified split by environment.

    Parameters
    ----------
    data
        Arrays from :func:`prepare_arrays`.
    train_size, validation_size
        Fractions of each environment's cells used for training and validation; the rest is a test set.
    batch_size
        Cells per training batch (per process under DDP).
    random_state
        Seed of the split and of the batch order.
    steps_per_call
        Mini-batches handed to the training plan per Lightning step (each gets its own optimiser step); more
        amortises Lightning's per-step overhead, which dominates for this small network.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.model import TBRDataModule
    >>> from sctbr.model._data import prepare_arrays
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(200, 5)).astype(np.float32), rng.normal(size=200)
    >>> data = prepare_arrays(x, y, np.repeat([0, 1], 100))  # two environments of 100 cells
    >>> dm = TBRDataModule(data, train_size=0.6, validation_size=0.2, random_state=0)
    >>> dm.n_train, dm.n_val, len(dm.test_idx)
    (120, 40, 40)
    """

    def __init__(
        self,
        data: dict,
        *,
        train_size: float = 0.8,
        validation_size: float = 0.2,
        batch_size: int = 128,
        random_state: int = 0,
        env_names: list[str] | None = None,
        steps_per_call: int = 16,
    ):
        super().__init__()
        self.steps_per_call = int(steps_per_call)
        self.data = data
        self.batch_size = int(batch_size)
        self.random_state = int(random_state)
        env = data[ENV_KEY].numpy()
        self.train_idx, self.val_idx, self.test_idx = stratified_split(
            env, train_size, validation_size, random_state=random_state, group_names=env_names
        )
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)

    def _distributed(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _current_epoch(self) -> int | None:
        # a training plan in phases gives the epoch within the phase: every phase sees the batch orders of a fit of
        # its own (and a resumed fit the same as an uninterrupted one)
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        return int(getattr(getattr(trainer, "lightning_module", None), "phase_epoch", trainer.current_epoch))

    def train_dataloader(self) -> _Batches:
        rank, world = self._distributed()
        return _Batches(
            self.data,
            self.train_idx,
            self.batch_size,
            True,
            self.random_state,
            steps_per_call=self.steps_per_call,
            epoch_fn=self._current_epoch,
            rank=rank,
            world_size=world,
        )

    def val_dataloader(self) -> _Batches | list:
        if self.n_val == 0:
            return []
        rank, world = self._distributed()
        return _Batches(
            self.data, self.val_idx, max(self.batch_size, 4096), shuffle=False, seed=0, rank=rank, world_size=world
        )
