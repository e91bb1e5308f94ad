"""Reader for the GTEx v8 single-nucleus RNA-seq atlas (Eraslan et al. 2022)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem, sparse_dataset

from sctbr._utils import to_memory
from sctbr._validation import check_names, check_path, check_str

#: Cell-type annotations of the atlas's ``obs``.
GTEX_CELL_TYPE_COLUMNS: tuple[str, ...] = ("Broad cell type", "Granular cell type", "Cell types level 2")
#: Columns :func:`read_gtex` requires in ``obs``.
GTEX_OBS_COLUMNS: tuple[str, ...] = (*GTEX_CELL_TYPE_COLUMNS, "tissue")
#: Layer with the raw counts.
GTEX_COUNTS_LAYER = "counts"
#: The epithelial broad cell types: ``"Epithelial cell (<subtype>)"``.
EPITHELIAL_PATTERN = re.compile(r"^Epithelial cell \(.+\)$")

_SPARSE = {"csr_matrix", "csc_matrix"}


def _check_schema(path: Path, obs_columns: Sequence[str], has_counts: bool) -> None:
    missing = [c for c in GTEX_OBS_COLUMNS if c not in obs_columns]
    problems = []
    if missing:
        problems.append(f"obs columns {missing} are missing (obs has {list(obs_columns)[:20]})")
    if not has_counts:
        problems.append(f"layers[{GTEX_COUNTS_LAYER!r}] with the raw counts is missing")
    if problems:
        raise ValueError(
            f"{path} does not look like the GTEx v8 snRNA-seq atlas (Eraslan et al. 2022): "
            + "; ".join(problems)
            + ". Expected obs columns "
            + ", ".join(repr(c) for c in GTEX_OBS_COLUMNS)
            + f" and raw counts in layers[{GTEX_COUNTS_LAYER!r}]."
        )


def _lazy(elem: h5py.Group | h5py.Dataset):
    """A matrix element of the file that is read only when indexed."""
    if isinstance(elem, h5py.Dataset):
        return elem
    encoding = elem.attrs.get("encoding-type", "")
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    if encoding in _SPARSE:
        return sparse_dataset(elem)
    return read_elem(elem)


def _read_backed(path: Path, mode: Literal["r", "r+"]) -> ad.AnnData:
    """Like ``anndata.read_h5ad(backed=mode)``, but layers stay on disk too (anndata would load them)."""
    f = h5py.File(path, mode)
    try:
        d = {k: read_elem(f[k]) for k in ("obs", "var", "uns", "obsm", "varm", "obsp", "varp") if k in f}
        if "layers" in f:
            d["layers"] = {k: _lazy(f["layers"][k]) for k in f["layers"]}
        if "raw" in f:
            d["raw"] = {k: read_elem(f["raw"][k]) for k in ("var", "varm") if k in f["raw"]}
        return ad.AnnData(filename=f, **d)
    except Exception:
        f.close()
        raise


def read_gtex(path: str | os.PathLike[str], *, backed: Literal["r", "r+"] | None = None) -> ad.AnnData:
    """Read the GTEx v8 snRNA-seq atlas and check its schema.

    The atlas of Eraslan et al. (2022, Science 376:eabl4290): 209,126 nuclei from eight tissues, raw counts in
    ``layers["counts"]``, cell types in ``obs`` columns ``"Broad cell type"``, ``"Granular cell type"`` and
    ``"Cell types level 2"``, and the ``"tissue"``. Download the h5ad from the GTEx portal (about 3 GB); the
    schema is checked before the matrices are read.

    Parameters
    ----------
    path
        Path of the h5ad file.
    backed
        ``None`` reads everything into memory. ``"r"`` (or ``"r+"``) reads only the annotations: ``X`` and
        every layer (including the counts) stay on disk and only the cells you select are read, e.g. by
        :func:`select_epithelial`. Unlike ``anndata.read_h5ad(backed="r")``, layers are not loaded either.

    Returns
    -------
    The AnnData (backed when ``backed`` is given; close it with ``adata.file.close()``).

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.read_gtex("GTEx_8_tissues_snRNAseq_atlas.h5ad", backed="r")  # doctest: +SKIP
    >>> epi = sctbr.datasets.select_epithelial(adata)  # doctest: +SKIP
    """
    check_path("path", path)
    if backed not in (None, "r", "r+"):
        raise ValueError(f"`backed` must be None, 'r' or 'r+', got {backed!r}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Download the GTEx v8 snRNA-seq atlas h5ad from the GTEx portal "
            "(https://gtexportal.org/home/downloads/adult-gtex/single_cell)."
        )
    with h5py.File(path, "r") as f:
        if "obs" not in f:
            raise ValueError(f"{path} has no obs: not an AnnData h5ad file.")
        obs = read_elem(f["obs"])
        has_counts = "layers" in f and GTEX_COUNTS_LAYER in f["layers"]
    _check_schema(path, list(obs.columns), has_counts)
    if backed is None:
        return ad.read_h5ad(path)
    return _read_backed(path, backed)


def select_epithelial(
    adata: ad.AnnData,
    *,
    key: str = "Broad cell type",
    tissues: Sequence[str] | None = None,
) -> ad.AnnData:
    """Select the epithelial cells of the GTEx atlas, the environments of the paper's semi-synthetic experiment.

    The epithelial cell types are the broad cell types named ``"Epithelial cell (<subtype>)"`` (e.g.
    ``"Epithelial cell (basal)"``). For a backed AnnData (:func:`read_gtex` with ``backed="r"``) only the
    selected cells are read from disk.

    Parameters
    ----------
    adata
        The atlas, in memory or backed.
    key
        Column of ``obs`` with the broad cell types.
    tissues
        Keep only cells of these values of ``obs["tissue"]``.

    Returns
    -------
    A new in-memory AnnData with the epithelial cells; unused categories of ``obs[key]`` are removed.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.read_gtex("GTEx_8_tissues_snRNAseq_atlas.h5ad", backed="r")  # doctest: +SKIP
    >>> epi = sctbr.datasets.select_epithelial(adata, tissues=["breast", "lung"])  # doctest: +SKIP
    >>> epi.obs["Broad cell type"].cat.categories  # doctest: +SKIP
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"`adata` must be an AnnData (e.g. from sctbr.datasets.read_gtex), got {type(adata).__name__}.")
    check_str("key", key, fix="The column of adata.obs with the broad cell types.")
    check_names("tissues", tissues, none_ok=True, fix="Values of adata.obs['tissue'], or None for all.")
    if key not in adata.obs:
        raise KeyError(f"Column {key!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    labels = adata.obs[key].astype(str)
    mask = labels.str.match(EPITHELIAL_PATTERN).to_numpy()
    if tissues is not None:
        if "tissue" not in adata.obs:
            raise KeyError("adata.obs has no 'tissue' column to select `tissues` from.")
        tissues = [tissues] if isinstance(tissues, str) else list(tissues)
        present = set(adata.obs["tissue"].astype(str))
        unknown = [t for t in tissues if t not in present]
        if unknown:
            raise ValueError(f"Unknown tissues {unknown}; adata.obs['tissue'] has {sorted(present)}.")
        mask &= adata.obs["tissue"].astype(str).isin(tissues).to_numpy()
    if not mask.any():
        raise ValueError(
            f"No epithelial cells (adata.obs[{key!r}] matching 'Epithelial cell (...)')"
            + (f" in tissues {tissues}" if tissues is not None else "")
            + "."
        )
    out = to_memory(adata[np.flatnonzero(mask)])
    col = out.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(str).astype("category")
    out.obs[key] = col.cat.remove_unused_categories()
    return out
