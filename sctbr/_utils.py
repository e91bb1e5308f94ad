"""Small helpers shared by every layer: the defaults sctbr records in ``adata.uns``, environment order, in-memory
copies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from sctbr._constants import DEFAULTS_KEY, TREE_KEY  # noqa: F401  (TREE_KEY: re-exported for old imports)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (``None``: unchanged) and restore the previous setting afterwards,
    also on errors. The fit applies its thread rule with it, the experiments their profile's ``n_threads``."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def record_defaults(adata: ad.AnnData, **values: Any) -> None:
    """Record ``target``/``groupby``/``tree_key`` so that ``sctbr.tl.tbr(adata)`` finds them."""
    current = dict(adata.uns.get(DEFAULTS_KEY, {}))
    current.update({k: v for k, v in values.items() if v is not None})
    adata.uns[DEFAULTS_KEY] = current


def recorded_default(adata: ad.AnnData, name: str) -> Any | None:
    """Return a value recorded by :func:`record_defaults`, or None."""
    return dict(adata.uns.get(DEFAULTS_KEY, {})).get(name)


def environment_levels(environments: pd.Series) -> list[Any]:
    """Environment labels in categorical order (observed categories only) or sorted order.

    Labels of mixed types that cannot be sorted keep their order of appearance.
    """
    if isinstance(environments.dtype, pd.CategoricalDtype):
        present = set(environments.unique())
        return [c for c in environments.cat.categories if c in present]
    levels = list(pd.unique(environments))
    try:
        return sorted(levels)
    except TypeError:  # labels of mixed, non-comparable types: keep order of appearance
        return levels


def _plain(value: Any) -> Any:
    """An in-memory, non-view copy of a matrix-like value (sparse stays sparse)."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    if isinstance(value, h5py.Dataset):
        value = value[()]
    elif hasattr(value, "to_memory"):  # anndata's backed sparse datasets
        value = value.to_memory()
    if isinstance(value, pd.DataFrame):
        return value.copy()
    if sp.issparse(value):
        return sp.csc_matrix(value, copy=True) if value.format == "csc" else sp.csr_matrix(value, copy=True)
    return np.array(value)


def to_memory(adata: ad.AnnData) -> ad.AnnData:
    """An in-memory, non-view copy of ``adata`` (backed or not) with plain matrices.

    For a backed AnnData (or a view of one) only its cells are read, and, unlike ``AnnData.to_memory()``, the
    file stays open, so that more selections can follow. Layers read lazily from the file (as
    :func:`sctbr.datasets.read_gtex` sets them up) come back as plain matrices.
    """
    import copy

    if not adata.isbacked:
        out = adata.copy()
        for key in list(out.layers):
            if type(out.layers[key]).__module__.startswith("anndata"):
                out.layers[key] = _plain(out.layers[key])
        return out
    raw = None
    if adata.raw is not None:
        raw = {"X": _plain(adata.raw.X), "var": adata.raw.var.copy()}
    return ad.AnnData(
        X=_plain(adata.X),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=copy.deepcopy(dict(adata.uns)),
        obsm={k: _plain(v) for k, v in adata.obsm.items()},
        varm={k: _plain(v) for k, v in adata.varm.items()},
        obsp={k: _plain(v) for k, v in adata.obsp.items()},
        varp={k: _plain(v) for k, v in adata.varp.items()},
        layers={k: _plain(v) for k, v in adata.layers.items()},
        raw=raw,
    )
