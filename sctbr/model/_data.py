"""Data path of :class:`~sctbr.model.TBR`: stratified split, memory-lean arrays and fast tensor batches.

The TBR encoder is tiny, so per-batch overhead dominates training time. Instead of scvi-tools'
``AnnDataLoader`` (which indexes the AnnData for every batch), the registered arrays are read once and
batches are cut from them:

- dense float32 inputs are used in place (no copy); other dtypes are converted to float32 once;
- sparse inputs stay sparse (CSR) until a batch is formed;
- inputs of a backed (on-disk) AnnData are read in row blocks, restricted to the registered columns: either
  loaded block by block into memory (``backed="load"``: the file's other columns are never read) or streamed,
  block by block, for every epoch (``backed="stream"``: memory holds one block);
- on an accelerator, the arrays are copied to the device once per fit when they fit (``_resident.py``) and the
  batches are cut there; the batch order is drawn on the host, so it is the same on every device;
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
from sctbr.model._backed import BackedRows, check_finite, is_backed_matrix, max_abs, read_columns
from sctbr.model._resident import resident_arrays

__all__ = ["BackedRows", "TBRDataModule", "batch_from", "max_abs", "prepare_arrays", "read_columns", "stratified_split"]


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
    block are shuffled, and one block is read at a time. With ``resident`` (the arrays on a device, from
    ``resident_arrays``) the same order is cut from those: one copy of the epoch's
    indices to the device, none per batch.
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
        resident: dict | None = None,
    ):
        self.data = data
        self.resident = resident
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
        data = self.data
        if self.resident is not None:
            data = self.resident
            idx = idx.to(data[ENV_KEY].device)
        for s in range(0, len(idx), bs):
            yield batch_from(data, idx[s : s + bs])

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

    In a fit, :meth:`setup` puts the arrays on the fit's device when that is an accelerator (:meth:`place`); the
    copy, in ``resident``, is released by :meth:`teardown`.

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
        #: The arrays on the training device (``None``: batches are cut from :attr:`data` on the host).
        self.resident: dict | None = None

    def place(self, device, *, free_bytes: int | None = None) -> bool:
        """Copy the arrays to ``device`` once (if they fit) and cut every batch there; whether they are there.

        ``free_bytes`` overrides the device's free memory (``None``: asked from torch).
        """
        device = torch.device(device)
        if self.resident is not None and self.resident[ENV_KEY].device == device:
            return True
        self.resident = resident_arrays(self.data, device, free_bytes=free_bytes)
        return self.resident is not None

    def setup(self, stage: str | None = None) -> None:
        """Lightning hook (the fit's device is known): on an accelerator, the arrays go to it (:meth:`place`)."""
        strategy = getattr(getattr(self, "trainer", None), "strategy", None)
        device = getattr(strategy, "root_device", None)
        if device is not None and device.type != "cpu":  # on CPU the host arrays are used in place
            self.place(device)

    def teardown(self, stage: str | None = None) -> None:
        """Lightning hook: release the device copy of the arrays."""
        self.resident = None

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
            resident=self.resident,
        )

    def val_dataloader(self) -> _Batches | list:
        if self.n_val == 0:
            return []
        rank, world = self._distributed()
        return _Batches(
            self.data,
            self.val_idx,
            max(self.batch_size, 4096),
            shuffle=False,
            seed=0,
            rank=rank,
            world_size=world,
            resident=self.resident,
        )
