"""In-memory data module: stratified train/validation/test split and fast tensor batches.

The TBR encoder is tiny, so per-batch overhead dominates training time. Instead of scvi-tools'
``AnnDataLoader`` (which indexes the AnnData for every batch), the registered arrays are read once and
batches are cut from tensors; sparse inputs stay sparse until a batch is formed.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch

from sctbr.model._module import ENV_KEY, X_KEY, Y_KEY


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
    a ``ValueError`` naming it.
    """
    if not 0 < train_size <= 1 or not 0 <= validation_size < 1 or train_size + validation_size > 1 + 1e-9:
        raise ValueError(
            f"`train_size` ({train_size}) and `validation_size` ({validation_size}) must be fractions in (0, 1] "
            "that sum to at most 1."
        )
    rng = np.random.default_rng(random_state)
    train, val, test = [], [], []
    codes = np.unique(groups)
    too_small = []
    for g in codes:
        idx = np.flatnonzero(groups == g)
        need = min_cells if validation_size > 0 else 1
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


class _Batches:
    """Iterable of dict batches over a fixed index set; reshuffled with a seeded generator each pass."""

    def __init__(
        self, data: dict, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int, steps_per_call: int = 1
    ):
        self.data = data
        self.steps_per_call = max(1, int(steps_per_call))
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n_batches = (len(self.indices) + self.batch_size - 1) // self.batch_size
        return (n_batches + self.steps_per_call - 1) // self.steps_per_call

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        idx = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = idx[torch.randperm(len(idx), generator=g)]
            self.epoch += 1
        batches = (batch_from(self.data, idx[s : s + self.batch_size]) for s in range(0, len(idx), self.batch_size))
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


def batch_from(data: dict, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut one batch (dense tensors) from the arrays prepared by :func:`prepare_arrays`."""
    x = data[X_KEY]
    if isinstance(x, sp.csr_matrix):
        xb = torch.from_numpy(x[idx.numpy()].toarray())
    else:
        xb = x.index_select(0, idx)
    return {X_KEY: xb, Y_KEY: data[Y_KEY].index_select(0, idx), ENV_KEY: data[ENV_KEY].index_select(0, idx)}


def prepare_arrays(x, y: np.ndarray | None, env: np.ndarray) -> dict:
    """Hold inputs (dense tensor, or scipy CSR kept sparse), target and environment codes."""
    if sp.issparse(x):
        xs = sp.csr_matrix(x, dtype=np.float32)
    else:
        xs = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
    yt = torch.from_numpy(np.asarray(y if y is not None else np.zeros(len(env)), dtype=np.float32))
    return {X_KEY: xs, Y_KEY: yt, ENV_KEY: torch.from_numpy(np.asarray(env, dtype=np.int64))}


class TBRDataModule(pl.LightningDataModule):
    """Lightning data module with a stratified split by environment.

    Parameters
    ----------
    data
        Arrays from :func:`prepare_arrays`.
    train_size, validation_size
        Fractions of each environment's cells used for training and validation; the rest is a test set.
    batch_size
        Cells per training batch.
    random_state
        Seed of the split and of the batch order.
    steps_per_call
        Mini-batches handed to the training plan per Lightning step (each gets its own optimiser step); more
        amortises Lightning's per-step overhead, which dominates for this small network.
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

    def train_dataloader(self) -> _Batches:
        return _Batches(
            self.data, self.train_idx, self.batch_size, True, self.random_state, steps_per_call=self.steps_per_call
        )

    def val_dataloader(self) -> _Batches | list:
        if self.n_val == 0:
            return []
        return _Batches(self.data, self.val_idx, max(self.batch_size, 4096), shuffle=False, seed=0)
