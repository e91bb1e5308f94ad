"""Library-size normalisation shared by :func:`sctbr.pp.magic` and :func:`sctbr.pp.environment_tree`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Counts per cell after normalisation (Scanpy's usual ``normalize_total(target_sum=1e4)``).
TARGET_SUM = 1e4
# Entries inspected to decide whether a matrix holds counts.
_N_CHECK = 100_000


def looks_like_counts(x) -> bool:
    """Whether ``x`` holds non-negative integers (raw counts, possibly stored as floats)."""
    values = x.data if sp.issparse(x) else np.asarray(x).ravel()
    values = values[:_N_CHECK]
    if values.size == 0:
        return True
    if not np.issubdtype(values.dtype, np.number):
        return False
    return bool(np.all(values >= 0) and np.all(np.mod(values, 1) == 0))


def log_normalize(x, library_size: np.ndarray | None = None) -> sp.csr_matrix | np.ndarray:
    """``log1p`` of counts scaled to :data:`TARGET_SUM` per cell, as a new float32 matrix (``x`` is not changed).

    ``library_size`` (one value per cell) defaults to the row sums of ``x``; cells with a zero library size stay
    zero.
    """
    if library_size is None:
        library_size = np.asarray(x.sum(axis=1)).ravel()
    library_size = np.asarray(library_size, dtype=np.float64).ravel()
    scale = np.divide(TARGET_SUM, library_size, out=np.zeros_like(library_size), where=library_size > 0)
    if sp.issparse(x):
        out = sp.csr_matrix(x, dtype=np.float32, copy=True)
        out = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ out)
        np.log1p(out.data, out=out.data)
        return out
    out = np.asarray(x, dtype=np.float32) * scale[:, None].astype(np.float32)
    return np.log1p(out)
