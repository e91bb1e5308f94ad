"""The bundled 10x PBMC3k dataset with cell-type labels."""

from __future__ import annotations

from importlib.resources import as_file, files

import anndata as ad

_PBMC_FILE = "pbmc3k_tbr.h5ad"


def pbmc3k() -> ad.AnnData:
    """The 10x Genomics PBMC3k counts with cell-type labels, bundled with sctbr (no network needed).

    2,638 peripheral blood mononuclear cells (the 2,700 of the 10x "3k PBMCs from a Healthy Donor" data set,
    CC BY 4.0, after the Scanpy tutorial's quality control) and the genes the semi-synthetic workflow needs:
    the eleven house-keeping genes, the transcription factors that regulate them (:func:`regulators`) and are
    detected, the highly variable genes and the marker genes used for the labels. Built by
    ``data/make_pbmc3k.py``; see ``data/README.md`` for provenance.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR, float32) and

    - ``obs["cell_type"]``: CD4 T naive, CD4 T memory, CD8 T, NK, B, CD14 Mono, FCGR3A Mono, DC and Platelet
      (seeded Leiden clusters labelled by marker genes);
    - ``obs["leiden"]``, ``obs["n_genes_by_counts"]``, ``obs["pct_counts_mt"]``;
    - ``obs["total_counts"]``: library size over all 32,738 genes; pass ``library_size="total_counts"`` to
      :func:`sctbr.pp.magic` to normalise by it rather than by the counts of the bundled genes only;
    - ``var`` flags ``house_keeping``, ``regulator``, ``highly_variable`` and ``marker``;
    - ``obsm["X_umap"]`` and the provenance in ``uns["pbmc3k"]``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> adata.obs["cell_type"].nunique()
    9
    """
    resource = files("sctbr.datasets").joinpath("_data", _PBMC_FILE)
    with as_file(resource) as path:
        return ad.read_h5ad(path)
