"""Inputs of a backed (on-disk) AnnData: rows read by blocks, restricted to the registered columns, and the
block-wise checks (finite values, largest absolute value) that work for in-memory, sparse and backed matrices alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

#: Bytes of the file read per block of a backed matrix (all of its columns), and per block of a finiteness check.
BLOCK_BYTES = 64 * 2**20


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
