"""Cap the number of cells per group (``sctbr.pp.subsample``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

import sctbr._logging as logg
from sctbr._utils import to_memory
from sctbr._validation import check_bool, check_int, check_obs_key

#: Key of ``adata.uns`` where :func:`subsample` records what it kept and dropped.
SUBSAMPLE_KEY = "subsample"


def subsample(
    adata: AnnData,
    groupby: str,
    *,
    max_cells: int,
    min_cells: int = 0,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Cap every group at ``max_cells`` cells and drop groups with fewer than ``min_cells``.

    The paper's preprocessing caps each cell type at a maximum number of cells so that large cell types do not
    dominate training. Cells are drawn without replacement with a seeded generator; the kept cells stay in their
    original order. Cells without a label (NaN) are dropped. Dropped groups are named in a warning and recorded.

    Parameters
    ----------
    adata
        Cells x genes. May be backed on disk when ``copy=True`` (only the kept cells are then read).
    groupby
        Column of ``adata.obs`` with the groups (cell types).
    max_cells
        Largest number of cells kept per group.
    min_cells
        Groups with fewer cells (before capping) are dropped entirely.
    random_state
        Seed of the draw; the same seed keeps the same cells.
    copy
        Return a subsampled copy instead of subsetting ``adata`` in place.

    Returns
    -------
    The subsampled AnnData with ``copy=True``, else ``None``. Unused categories of ``obs[groupby]`` are
    removed. ``uns["subsample"]`` records ``groupby``, ``max_cells``, ``min_cells``, ``random_state``,
    ``dropped_groups`` and ``counts`` (cells per group before and after).

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> small = sctbr.pp.subsample(adata, "cell_type", max_cells=100, min_cells=20, copy=True)
    >>> int(small.obs["cell_type"].value_counts().max())
    100
    """
    check_obs_key(adata, "groupby", groupby)
    check_int("max_cells", max_cells, fix="The largest number of cells kept per group, e.g. 500.")
    check_int("min_cells", min_cells, low=0, fix="Groups with fewer cells are dropped; 0 keeps every group.")
    check_int("random_state", random_state, low=0)
    check_bool("copy", copy)
    max_cells, min_cells = int(max_cells), int(min_cells)
    if min_cells > max_cells:
        raise ValueError(f"`min_cells` ({min_cells}) is larger than `max_cells` ({max_cells}).")
    if adata.isbacked and not copy:
        raise ValueError("`adata` is backed on disk: pass copy=True to get the subsample in memory.")

    labels = adata.obs[groupby]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype("category")
    codes = labels.cat.codes.to_numpy()
    categories = list(labels.cat.categories)
    sizes = np.bincount(codes[codes >= 0], minlength=len(categories))
    n_unlabelled = int((codes < 0).sum())

    too_small = [c for c, n in zip(categories, sizes, strict=True) if 0 < n < min_cells]
    kept_groups = [i for i, n in enumerate(sizes) if n >= max(min_cells, 1)]
    if not kept_groups:
        raise ValueError(
            f"No group of adata.obs[{groupby!r}] has at least min_cells={min_cells} cells "
            f"(largest: {int(sizes.max()) if sizes.size else 0}); lower `min_cells`."
        )

    rng = np.random.default_rng(random_state)
    keep = []
    for i in kept_groups:
        idx = np.flatnonzero(codes == i)
        if len(idx) > max_cells:
            idx = rng.choice(idx, size=max_cells, replace=False)
        keep.append(idx)
    keep = np.sort(np.concatenate(keep))

    after = np.bincount(codes[keep], minlength=len(categories))
    counts = pd.DataFrame(
        {"before": sizes.astype(np.int64), "after": after.astype(np.int64)},
        index=pd.Index([str(c) for c in categories], name=groupby),
    )
    record = {
        "groupby": groupby,
        "max_cells": max_cells,
        "min_cells": min_cells,
        "random_state": int(random_state),
        "dropped_groups": np.asarray([str(c) for c in too_small], dtype=str),
        "n_unlabelled_dropped": n_unlabelled,
        "counts": counts,
    }
    if too_small:
        warnings.warn(
            f"Dropped {len(too_small)} group(s) of adata.obs[{groupby!r}] with fewer than {min_cells} cells: "
            + ", ".join(f"{c!r} ({int(sizes[categories.index(c)])})" for c in too_small),
            UserWarning,
            stacklevel=2,
        )
    if n_unlabelled:
        warnings.warn(
            f"Dropped {n_unlabelled} cells without a label in adata.obs[{groupby!r}].", UserWarning, stacklevel=2
        )
    logg.info(f"subsample: kept {len(keep)} of {adata.n_obs} cells")

    if copy:
        out = to_memory(adata[keep])
    else:
        adata._inplace_subset_obs(keep)
        out = adata
    col = out.obs[groupby]
    if isinstance(col.dtype, pd.CategoricalDtype):
        out.obs[groupby] = col.cat.remove_unused_categories()
    out.uns[SUBSAMPLE_KEY] = record
    return out if copy else None
