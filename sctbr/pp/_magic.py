"""MAGIC denoising into a layer (``sctbr.pp.magic``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

import sctbr._logging as logg
from sctbr._validation import ArgumentTypeError, _is_int, check_int, check_names, check_str
from sctbr.pp._normalize import TARGET_SUM, log_normalize, looks_like_counts


def _input_matrix(adata: AnnData, layer: str | None):
    if adata.isbacked:
        raise ValueError(
            "`adata` is backed on disk; MAGIC needs the matrix in memory. Select the cells you need and call "
            "`adata = adata.to_memory()` (e.g. sctbr.datasets.select_epithelial(...) returns an in-memory AnnData)."
        )
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; adata has layers {list(adata.layers)}.")
    return adata.layers[layer]


def magic(
    adata: AnnData,
    *,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    knn: int = 5,
    t: int = 3,
    n_pca: int | None = 100,
    random_state: int = 0,
    key_added: str = "magic",
    library_size: str | None = None,
    n_jobs: int = 1,
) -> None:
    """Denoise expression with MAGIC and write it into a layer.

    Runs :func:`scanpy.external.pp.magic` (the ``magic-impute`` package) on a normalised copy of the counts.
    ``X``, ``raw`` and the input layer are never modified.

    Normalisation: when the input holds counts (non-negative integers, as stored in real files), each cell is
    scaled to 10 000 counts (library size normalisation, as MAGIC expects) and ``log1p``-transformed, i.e.
    Scanpy's ``normalize_total(target_sum=1e4)`` followed by ``log1p``. The imputed values are on that log
    scale. Input that is not counts (e.g. already log-normalised) is used as it is.

    Parameters
    ----------
    adata
        Cells x genes, in memory (counts in ``X`` or in ``layer``).
    layer
        Layer with the counts; ``None`` uses ``X``.
    genes
        Genes to impute. ``None`` imputes every gene and stores a dense layer. With a list, the diffusion
        graph is still built from all genes, but only these genes are imputed: the layer is then a sparse matrix
        whose other columns are empty, and ``uns[key_added]["genes"]`` lists the imputed genes. Use this for
        large data (e.g. the GTEx atlas), where a dense cells x genes layer does not fit in memory.
    knn
        Number of nearest neighbours of the MAGIC kernel.
    t
        Diffusion time (power of the Markov matrix).
    n_pca
        Principal components used to build the graph; ``None`` uses the genes directly.
    random_state
        Seed of MAGIC's randomised PCA; the same seed gives the same result.
    key_added
        Name of the layer (and of the ``uns`` entry with the parameters).
    library_size
        Column of ``adata.obs`` with each cell's total counts, used instead of the row sums. Useful when
        ``adata`` holds a subset of the genes, e.g. ``"total_counts"`` of :func:`sctbr.datasets.pbmc3k`.
    n_jobs
        Threads used by MAGIC.

    Returns
    -------
    ``None``. Writes ``adata.layers[key_added]`` (float32; dense for all genes, CSR with ``genes``) and
    ``adata.uns[key_added]`` with ``params``, ``normalization`` and (with ``genes``) ``genes``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> sctbr.pp.magic(adata, genes=sctbr.datasets.house_keeping_genes(), library_size="total_counts")
    >>> adata.layers["magic"].shape == adata.shape
    True
    """
    # Validate everything before computing.
    check_str("layer", layer, none_ok=True, fix="The name of a layer with the counts, or None for X.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    check_int("knn", knn, fix="The number of nearest neighbours, e.g. 5.")
    check_int("t", t, fix="The diffusion time, e.g. 3.")
    check_int("n_pca", n_pca, none_ok=True, fix="The number of principal components, e.g. 100, or None.")
    check_int("random_state", random_state, low=0)
    if not _is_int(n_jobs) or n_jobs == 0:
        error = ValueError if _is_int(n_jobs) else ArgumentTypeError
        raise error(f"`n_jobs` must be a non-zero integer (-1: all cores), got {n_jobs!r}. Threads of MAGIC, e.g. 1.")
    check_names("genes", genes, none_ok=True, fix="Gene names of adata.var_names, or None for every gene.")
    check_str("library_size", library_size, none_ok=True, fix="A column of adata.obs with total counts, or None.")
    x = _input_matrix(adata, layer)
    if layer is not None and key_added == layer:
        raise ValueError(f"`key_added` ({key_added!r}) equals the input `layer`; choose another name.")
    if adata.n_obs <= knn:
        raise ValueError(f"MAGIC needs more cells ({adata.n_obs}) than `knn` ({knn}).")
    if not adata.var_names.is_unique:
        raise ValueError("adata.var_names are not unique; call adata.var_names_make_unique() first.")
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} of `genes` are not in adata.var_names: {missing[:10]}.")
        if not genes:
            raise ValueError("`genes` is empty; pass None to impute every gene.")
        genes = list(dict.fromkeys(genes))
    lib = None
    if library_size is not None:
        if library_size not in adata.obs:
            raise KeyError(f"`library_size` column {library_size!r} not found in adata.obs.")
        lib = pd.to_numeric(adata.obs[library_size], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(lib)) or np.any(lib < 0):
            raise ValueError(f"adata.obs[{library_size!r}] must hold finite, non-negative library sizes.")

    counts = looks_like_counts(x)
    if counts:
        data = log_normalize(x, lib)
        normalization = f"normalize_total(target_sum={TARGET_SUM:g}) + log1p"
    else:
        if library_size is not None:
            raise ValueError("`library_size` is only used for counts, but the input is not counts (non-integers).")
        logg.info("The input is not counts (non-integer values): MAGIC runs on it as it is.")
        data = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
        normalization = "none (input used as given)"

    import scanpy as sc

    work = AnnData(
        X=data, obs=pd.DataFrame(index=adata.obs_names.copy()), var=pd.DataFrame(index=adata.var_names.copy())
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        out = sc.external.pp.magic(
            work,
            name_list=genes if genes is not None else "all_genes",
            knn=int(knn),
            t=int(t),
            n_pca=None if n_pca is None else int(n_pca),
            random_state=int(random_state),
            n_jobs=int(n_jobs),
            verbose=False,
            copy=True,
        )
    values = np.asarray(out.X, dtype=np.float32)
    if genes is None:
        result = values[:, out.var_names.get_indexer(adata.var_names)]
    else:
        cols = adata.var_names.get_indexer(out.var_names)
        coo = sp.coo_matrix(values)
        result = sp.csr_matrix((coo.data, (coo.row, cols[coo.col])), shape=adata.shape, dtype=np.float32)
        result.sort_indices()

    # Write only after MAGIC succeeded.
    adata.layers[key_added] = result
    adata.uns[key_added] = {
        "params": {
            "layer": layer if layer is not None else "X",
            "knn": int(knn),
            "t": int(t),
            "n_pca": int(n_pca) if n_pca is not None else 0,
            "random_state": int(random_state),
            "library_size": library_size if library_size is not None else "",
        },
        "normalization": normalization,
    }
    if genes is not None:
        adata.uns[key_added]["genes"] = np.asarray(genes, dtype=str)
