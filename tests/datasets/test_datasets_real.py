"""Tests for the real-data part of sctbr.datasets: gene lists, regulators, PBMC3k, GTEx reader, semisynthetic.

The last test is the acceptance test of the whole workflow on the bundled PBMC3k (marked slow).
"""

from __future__ import annotations

import gzip
import logging
import re
import warnings
from importlib.resources import files

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sctbr
from sctbr import EnvironmentTree
from sctbr.datasets import tree_weights
from sctbr.datasets._gtex import GTEX_OBS_COLUMNS
from sctbr.datasets._regulators import tf_targets

HK_ALL = ["C1orf43", "CHMP2A", "EMC7", "GPI", "PSMB2", "PSMB4", "RAB7A", "REEP5", "SNRPD3", "VCP", "VPS29"]


# --------------------------------------------------------------------------------------------------------------------
# house-keeping genes, regulators
# --------------------------------------------------------------------------------------------------------------------


def test_house_keeping_genes_are_the_papers_list():
    assert sctbr.datasets.house_keeping_genes(drop_weak=False) == HK_ALL
    assert sctbr.datasets.house_keeping_genes() == [g for g in HK_ALL if g not in ("GPI", "RAB7A")]


def test_bundled_tf_table_has_unique_symbol_edges():
    path = files("sctbr.datasets").joinpath("_data", "tf_targets.csv.gz")
    with path.open("rb") as fh, gzip.open(fh, "rt") as text:
        assert text.readline().strip() == "tf,target,sources"
    table = tf_targets()
    assert len(table) > 50_000
    assert not table.duplicated(["tf", "target"]).any()
    assert not table["tf"].str.startswith("COMPLEX").any()
    uniprot = re.compile(r"^[OPQ][0-9][A-Z0-9]{3}[0-9]$")
    assert not table["tf"].str.match(uniprot).any()
    assert not table["target"].str.match(uniprot).any()
    assert (table["sources"].str.len() > 0).all()


def test_regulators_returns_the_tfs_of_each_gene_in_order():
    regs = sctbr.datasets.regulators(["VCP", "PSMB4", "NOT_A_GENE"])
    assert list(regs) == ["VCP", "PSMB4", "NOT_A_GENE"]
    assert regs["PSMB4"] == ["YY1"]
    assert regs["NOT_A_GENE"] == []
    assert regs["VCP"] == sorted(regs["VCP"])
    assert {"E2F1", "PBX1", "SP1"} <= set(regs["VCP"])
    table = tf_targets()
    assert set(regs["VCP"]) == set(table.loc[table["target"] == "VCP", "tf"])
    assert sctbr.datasets.regulators("PSMB4") == {"PSMB4": ["YY1"]}


def test_regulators_can_be_restricted_to_resources():
    everything = sctbr.datasets.regulators(["VCP", "EMC7"])
    trrust = sctbr.datasets.regulators(["VCP", "EMC7"], sources="TRRUST")
    encode = sctbr.datasets.regulators(["VCP", "EMC7"], sources=["encode"])
    for gene in ("VCP", "EMC7"):
        assert set(trrust[gene]) <= set(everything[gene])
        assert set(encode[gene]) <= set(everything[gene])
    assert trrust["VCP"]
    assert trrust["VCP"] != everything["VCP"]
    table = tf_targets(sources="TRRUST")
    assert table["sources"].str.contains("TRRUST").all()
    with pytest.raises(ValueError, match="Unknown resource"):
        sctbr.datasets.regulators(["VCP"], sources=["hTFtarget"])


# --------------------------------------------------------------------------------------------------------------------
# PBMC3k
# --------------------------------------------------------------------------------------------------------------------


def test_pbmc3k_loads_counts_labels_and_the_workflow_genes(tmp_path):
    adata = sctbr.datasets.pbmc3k()
    assert adata.n_obs == 2638
    assert sp.issparse(adata.X)
    assert adata.X.format == "csr"
    assert np.all(adata.X.data == np.round(adata.X.data))
    assert adata.X.data.min() > 0
    expected = ["CD4 T naive", "CD4 T memory", "CD8 T", "NK", "B", "CD14 Mono", "FCGR3A Mono", "DC", "Platelet"]
    assert list(adata.obs["cell_type"].cat.categories) == expected
    assert adata.obs["cell_type"].value_counts().min() >= 10
    assert set(HK_ALL) <= set(adata.var_names)
    regs = {tf for tfs in sctbr.datasets.regulators(HK_ALL).values() for tf in tfs}
    assert set(adata.var_names[adata.var["regulator"]]) <= regs
    assert adata.var["regulator"].sum() >= 15
    assert adata.var["highly_variable"].sum() > 1000
    # the library size covers all genes, more than the bundled ones
    bundled = np.asarray(adata.X.sum(axis=1)).ravel()
    assert np.all(adata.obs["total_counts"].to_numpy() >= bundled)
    # labels follow the markers
    mean = pd.DataFrame(adata[:, ["MS4A1", "PPBP", "CD8A"]].X.toarray(), columns=["MS4A1", "PPBP", "CD8A"])
    by_type = mean.groupby(adata.obs["cell_type"].to_numpy()).mean()
    assert by_type["MS4A1"].idxmax() == "B"
    assert by_type["PPBP"].idxmax() == "Platelet"
    assert by_type["CD8A"].idxmax() == "CD8 T"


# --------------------------------------------------------------------------------------------------------------------
# GTEx reader (on a small file with the atlas's schema)
# --------------------------------------------------------------------------------------------------------------------

GTEX_TYPES = [
    "Epithelial cell (basal)",
    "Epithelial cell (luminal)",
    "Epithelial cell (alveolar type II)",
    "Fibroblast",
    "Immune (T cell)",
]


def _gtex_file(tmp_path, *, drop_column: str | None = None, counts: bool = True) -> tuple[str, ad.AnnData]:
    rng = np.random.default_rng(0)
    n, n_genes = 150, 12
    broad = rng.choice(GTEX_TYPES, size=n)
    obs = pd.DataFrame(
        {
            "Broad cell type": pd.Categorical(broad),
            "Granular cell type": pd.Categorical([f"{b} sub{rng.integers(2)}" for b in broad]),
            "Cell types level 2": pd.Categorical([b.split(" (")[0] for b in broad]),
            "tissue": pd.Categorical(rng.choice(["breast", "lung", "prostate"], size=n)),
            "Sample ID": [f"S{i % 7}" for i in range(n)],
        },
        index=[f"nucleus{i}" for i in range(n)],
    )
    if drop_column is not None:
        obs = obs.drop(columns=drop_column)
    raw = sp.random(n, n_genes, density=0.4, format="csr", random_state=1, dtype=np.float32)
    raw.data = np.ceil(raw.data * 10)
    adata = ad.AnnData(X=np.log1p(raw), obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    if counts:
        adata.layers["counts"] = raw
    path = str(tmp_path / "gtex.h5ad")
    adata.write_h5ad(path, compression="gzip")
    return path, adata


def test_read_gtex_reads_the_atlas_in_memory(tmp_path):
    path, original = _gtex_file(tmp_path)
    adata = sctbr.datasets.read_gtex(path)
    assert not adata.isbacked
    assert adata.shape == original.shape
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), original.layers["counts"].toarray())
    for col in GTEX_OBS_COLUMNS:
        assert col in adata.obs


@pytest.mark.parametrize("missing", ["Broad cell type", "tissue", "Cell types level 2"])
def test_read_gtex_names_missing_columns(tmp_path, missing):
    path, _ = _gtex_file(tmp_path, drop_column=missing)
    with pytest.raises(ValueError, match=re.escape(f"obs columns ['{missing}'] are missing")):
        sctbr.datasets.read_gtex(path, backed="r")


def test_read_gtex_requires_the_counts_layer_and_the_file(tmp_path):
    path, _ = _gtex_file(tmp_path, counts=False)
    with pytest.raises(ValueError, match=r"layers\['counts'\]"):
        sctbr.datasets.read_gtex(path)
    with pytest.raises(FileNotFoundError, match="GTEx portal"):
        sctbr.datasets.read_gtex(tmp_path / "nope.h5ad")
    with pytest.raises(ValueError, match="backed"):
        sctbr.datasets.read_gtex(path, backed="w")


def test_read_gtex_backed_keeps_matrices_on_disk_and_selects_epithelial_cells(tmp_path):
    path, original = _gtex_file(tmp_path)
    adata = sctbr.datasets.read_gtex(path, backed="r")
    try:
        assert adata.isbacked
        counts = adata.layers["counts"]
        # neither X nor the counts were loaded: both are read from the file on indexing
        assert not isinstance(counts, np.ndarray | sp.spmatrix | sp.sparray)
        assert isinstance(adata.file._file, h5py.File)

        epi = sctbr.datasets.select_epithelial(adata)
        is_epi = original.obs["Broad cell type"].astype(str).str.startswith("Epithelial cell (")
        assert not epi.isbacked
        assert list(epi.obs_names) == list(original.obs_names[is_epi.to_numpy()])
        assert list(epi.obs["Broad cell type"].cat.categories) == sorted(GTEX_TYPES[:3])
        assert type(epi.layers["counts"]) is sp.csr_matrix
        np.testing.assert_array_equal(
            epi.layers["counts"].toarray(), original[is_epi.to_numpy()].layers["counts"].toarray()
        )
        np.testing.assert_allclose(epi.X.toarray(), original[is_epi.to_numpy()].X.toarray())

        lung = sctbr.datasets.select_epithelial(adata, tissues=["lung"])
        assert set(lung.obs["tissue"]) == {"lung"}
        assert lung.n_obs == int((is_epi & (original.obs["tissue"] == "lung")).sum())
        with pytest.raises(ValueError, match="Unknown tissues"):
            sctbr.datasets.select_epithelial(adata, tissues=["brain"])
    finally:
        adata.file.close()
    # the selection is an ordinary AnnData: it round-trips through h5ad
    epi.write_h5ad(tmp_path / "epi.h5ad")
    back = ad.read_h5ad(tmp_path / "epi.h5ad")
    np.testing.assert_array_equal(back.layers["counts"].toarray(), epi.layers["counts"].toarray())


def test_select_epithelial_in_memory_and_without_epithelial_cells(tmp_path):
    path, original = _gtex_file(tmp_path)
    adata = sctbr.datasets.read_gtex(path)
    epi = sctbr.datasets.select_epithelial(adata)
    assert epi.n_obs == int(original.obs["Broad cell type"].astype(str).str.startswith("Epithelial").sum())
    stroma = adata[~adata.obs["Broad cell type"].astype(str).str.startswith("Epithelial")].copy()
    with pytest.raises(ValueError, match="No epithelial cells"):
        sctbr.datasets.select_epithelial(stroma)
    with pytest.raises(KeyError, match="nope"):
        sctbr.datasets.select_epithelial(adata, key="nope")


# --------------------------------------------------------------------------------------------------------------------
# semisynthetic
# --------------------------------------------------------------------------------------------------------------------

TYPES = ["t0", "t1", "t2", "t3", "t4"]


def _expression(seed: int = 0, n_per_type: int = 40) -> ad.AnnData:
    """Positive 'MAGIC' expression of the house-keeping genes, their regulators and one unrelated gene."""
    rng = np.random.default_rng(seed)
    regs = sorted({tf for tfs in sctbr.datasets.regulators(HK_ALL).values() for tf in tfs})
    genes = HK_ALL + [g for g in regs if g not in HK_ALL] + ["UNRELATED"]
    n = n_per_type * len(TYPES)
    x = np.abs(rng.normal(1.0, 0.5, size=(n, len(genes)))) + np.repeat(rng.uniform(0, 1, size=(len(TYPES), 1)), 40, 0)
    x[:, genes.index("AR")] = 0.0  # an undetected regulator
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.repeat(TYPES, n_per_type), categories=TYPES)})
    obs.index = [f"c{i}" for i in range(n)]
    adata = ad.AnnData(X=sp.csr_matrix(np.round(x * 3)), obs=obs, var=pd.DataFrame(index=genes))
    adata.layers["magic"] = x.astype(np.float32)
    tree = {"A": "root", "B": "root", "C": "B", "t0": "A", "t1": "A", "t2": "B", "t3": "C", "t4": "C"}
    sctbr.pp.environment_tree(adata, "cell_type", tree=tree)
    return adata


def _semi(adata, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sctbr.datasets.semisynthetic(adata, groupby="cell_type", **kwargs)


def test_semisynthetic_holds_out_latents_and_uses_their_regulators(tmp_path):
    adata = _expression()
    with pytest.warns(UserWarning, match="Dropped") as record:
        semi = sctbr.datasets.semisynthetic(
            adata, latent_genes=sctbr.datasets.house_keeping_genes(), groupby="cell_type", noise_y=0.1, random_state=0
        )
    messages = " ".join(str(w.message) for w in record)
    assert "'C1orf43'" in messages  # no regulator in the table
    assert "constant: ['AR']" in messages
    latent = list(semi.uns["simulation"]["latent_genes"])
    assert latent == ["CHMP2A", "EMC7", "PSMB2", "PSMB4", "REEP5", "SNRPD3", "VCP", "VPS29"]
    regs = sctbr.datasets.regulators(latent)
    expected_inputs = {tf for g in latent for tf in regs[g]} - {"AR"}
    assert set(semi.var_names) == expected_inputs
    assert not set(semi.var_names) & set(latent)
    assert semi.var.loc["YY1", "regulates"] == "EMC7;PSMB4"

    # Z and X are the standardised expression of the latent genes and the inputs
    z = semi.obsm["Z_true"]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    source = adata[:, latent].layers["magic"]
    np.testing.assert_allclose(z, (source - source.mean(0)) / source.std(0), atol=1e-4)
    np.testing.assert_allclose(semi.layers["magic"], adata[:, list(semi.var_names)].layers["magic"])
    np.testing.assert_allclose(semi.X.std(0), 1, atol=1e-4)

    # the tree and the defaults are stored for sctbr.tl.tbr
    tree = EnvironmentTree.coerce(dict(semi.uns["environment_tree"]))
    assert tree == EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    assert semi.uns["environment_tree"]["groupby"] == "cell_type"
    assert semi.uns["sctbr"] == {"target": "y", "groupby": "cell_type", "tree_key": "environment_tree"}
    assert list(semi.obs_names) == list(adata.obs_names)

    back = ad.read_h5ad(_write(semi, tmp_path))
    np.testing.assert_array_equal(back.obsm["Z_true"], z)
    np.testing.assert_array_equal(back.obs["y"], semi.obs["y"])


def _write(adata, tmp_path, name="semi.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def test_semisynthetic_phenotype_follows_the_simulators_process():
    adata = _expression()
    semi = _semi(adata, latent_genes=["PSMB4", "VCP", "VPS29"], k=1, noise_y=0.05, random_state=7)
    sim = semi.uns["simulation"]
    tree = EnvironmentTree.coerce(dict(semi.uns["environment_tree"]))
    # exactly the simulator's weights for this seed (tree_weights reused, first draws of the generator)
    w0, deltas, weights = tree_weights(tree, 3, 1, rng=np.random.default_rng(7), all_latents_change=True)
    np.testing.assert_array_equal(sim["root_weights"], w0)
    np.testing.assert_array_equal(sim["deltas"], deltas)
    np.testing.assert_array_equal(sim["weights"], weights)
    assert ((sim["deltas"] != 0).sum(axis=1) == 1).all()  # k = 1 change per arc
    assert (sim["deltas"] != 0).any(axis=0).all()  # every latent changes somewhere
    assert list(sim["arc_labels"]) == list(tree.arc_labels)
    assert set(sim) >= set(sctbr.datasets.simulate(depth=3, n_obs_per_env=2).uns["simulation"])
    assert sim["params"]["leaves_only"]
    # y = w_e . z + noise, with w_e the head of the cell's type
    rows = tree.node_index(list(semi.obs["cell_type"].astype(str)))
    residual = semi.obs["y"].to_numpy() - np.einsum("ij,ij->i", semi.obsm["Z_true"], weights[rows])
    assert residual.std() == pytest.approx(0.05, rel=0.2)
    # seeded
    again = _semi(adata, latent_genes=["PSMB4", "VCP", "VPS29"], k=1, noise_y=0.05, random_state=7)
    np.testing.assert_array_equal(again.obs["y"], semi.obs["y"])
    other = _semi(adata, latent_genes=["PSMB4", "VCP", "VPS29"], k=1, noise_y=0.05, random_state=8)
    assert not np.allclose(other.obs["y"], semi.obs["y"])


@pytest.mark.filterwarnings("ignore:Dropped .* input gene")
def test_semisynthetic_never_uses_a_latent_gene_as_input():
    adata = _expression()
    # YY1 regulates PSMB4 and EMC7; holding YY1 out as a latent removes it from the inputs
    with pytest.warns(UserWarning, match=r"latent genes themselves.*\['YY1'\]"):
        semi = sctbr.datasets.semisynthetic(
            adata, latent_genes=["EMC7", "YY1", "VCP"], groupby="cell_type", noise_y=0.1, random_state=0
        )
    assert "YY1" not in semi.var_names
    assert "YY1" in semi.uns["simulation"]["latent_genes"]  # YY1 has regulators of its own (e.g. SP1)
    assert "SP1" in semi.var_names
    with pytest.warns(UserWarning, match=r"latent genes themselves.*\['VCP'\]"):
        semi = sctbr.datasets.semisynthetic(
            adata,
            latent_genes=["PSMB4", "VCP"],
            input_genes=["VCP", "SP1", "MYC"],
            groupby="cell_type",
            noise_y=0.1,
            random_state=0,
        )
    assert list(semi.var_names) == ["SP1", "MYC"]
    assert list(semi.uns["simulation"]["latent_genes"]) == ["PSMB4", "VCP"]


def test_semisynthetic_reports_and_drops_missing_genes():
    adata = _expression()
    with pytest.warns(UserWarning, match=r"missing from adata.*\['NOT_A_GENE'\]"):
        semi = sctbr.datasets.semisynthetic(
            adata, latent_genes=["VCP", "NOT_A_GENE"], groupby="cell_type", noise_y=0.1, random_state=0
        )
    assert list(semi.uns["simulation"]["latent_genes"]) == ["VCP"]
    with pytest.warns(UserWarning, match=r"missing from adata: \['NOPE'\]"):
        semi = sctbr.datasets.semisynthetic(
            adata, latent_genes=["VCP"], input_genes=["SP1", "NOPE"], groupby="cell_type", noise_y=0.1, random_state=0
        )
    assert list(semi.var_names) == ["SP1"]


def test_semisynthetic_uses_only_genes_imputed_in_a_subset_magic_layer():
    adata = _expression()
    adata.uns["magic"] = {"genes": np.array(["VCP", "SP1", "E2F1"])}
    semi = _semi(adata, latent_genes=["VCP", "PSMB4"], noise_y=0.1, random_state=0)
    assert list(semi.uns["simulation"]["latent_genes"]) == ["VCP"]
    assert set(semi.var_names) == {"SP1", "E2F1"}


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        ("none", {"latent_genes": ["C1orf43", "GPI"]}, ValueError, "None of the latent genes"),
        ("none", {"latent_genes": ["NOT_A_GENE"]}, ValueError, "None of the latent genes"),
        ("none", {"latent_genes": ["VCP"], "input_genes": ["VCP"]}, ValueError, "No input genes"),
        ("none", {"latent_genes": ["VCP"], "layer": "nope"}, KeyError, "nope"),
        ("no_magic", {"latent_genes": ["VCP"]}, KeyError, r"sctbr\.pp\.magic"),
        ("no_tree", {"latent_genes": ["VCP"]}, ValueError, r"sctbr\.pp\.environment_tree"),
        ("none", {"latent_genes": ["VCP"], "tree": {"t0": "r", "t1": "r"}}, ValueError, "not nodes of the tree"),
        ("none", {"latent_genes": ["VCP", "PSMB4"], "k": 3}, ValueError, "between 0 and n_latent=2"),
        ("none", {"latent_genes": ["VCP", "PSMB4"], "k": 1.5}, ValueError, "rate"),
        ("small_tree", {"latent_genes": ["VCP", "PSMB4", "EMC7"]}, ValueError, "too few to change all 3"),
        ("none", {"latent_genes": ["VCP"], "noise_y": -1.0}, ValueError, "noise_y"),
        ("none", {"latent_genes": []}, ValueError, "empty"),
    ],
)
def test_semisynthetic_errors_leave_input_untouched(change, kwargs, error, match):
    adata = _expression()
    if change == "no_magic":
        del adata.layers["magic"]
    elif change == "no_tree":
        del adata.uns["environment_tree"]
    elif change == "small_tree":
        adata = adata[adata.obs["cell_type"].isin(["t0", "t1"])].copy()
        adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
        sctbr.pp.environment_tree(adata, "cell_type", tree={"t0": "r", "t1": "r"})
    before_uns = sorted(adata.uns)
    before_layers = {k: np.array(v) for k, v in adata.layers.items()}
    before_obs = adata.obs.copy()
    noise_y = kwargs.pop("noise_y", 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(error, match=match):
            sctbr.datasets.semisynthetic(adata, groupby="cell_type", noise_y=noise_y, random_state=0, **kwargs)
    assert sorted(adata.uns) == before_uns
    assert set(adata.layers) == set(before_layers)
    for key, value in before_layers.items():
        np.testing.assert_array_equal(adata.layers[key], value)
    pd.testing.assert_frame_equal(adata.obs, before_obs)


# --------------------------------------------------------------------------------------------------------------------
# Acceptance: the whole workflow on the bundled PBMC3k, no network
# --------------------------------------------------------------------------------------------------------------------

ACCEPTANCE_SEEDS = (0, 1, 2, 3, 4)


@pytest.mark.slow
def test_pbmc3k_workflow_tbr_beats_baseline_at_k1(tmp_path):
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    adata = sctbr.datasets.pbmc3k()

    sctbr.pp.magic(adata, library_size="total_counts")
    assert adata.layers["magic"].shape == adata.shape
    sctbr.pp.subsample(adata, "cell_type", max_cells=200, min_cells=10, random_state=0)
    assert adata.obs["cell_type"].value_counts().max() == 200
    assert sctbr.pp.environment_tree(adata, "cell_type") is None
    tree = sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])
    assert sorted(tree.leaves) == sorted(adata.obs["cell_type"].cat.categories)
    adata = ad.read_h5ad(_write(adata, tmp_path, "pbmc.h5ad"))  # the preprocessed data round-trip

    scores = []
    for seed in ACCEPTANCE_SEEDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            semi = sctbr.datasets.semisynthetic(
                adata,
                latent_genes=sctbr.datasets.house_keeping_genes(),
                groupby="cell_type",
                k=1,
                noise_y=0.1,
                random_state=seed,
            )
        n_latent = semi.obsm["Z_true"].shape[1]
        assert n_latent >= 6
        assert semi.n_vars >= 10
        fit = {"n_latent": n_latent, "max_epochs": 60, "random_state": seed, "accelerator": "cpu"}
        sctbr.tl.tbr(semi, enable_progress_bar=False, **fit)
        sctbr.tl.baseline(semi, enable_progress_bar=False, **fit)
        assert semi.obsm["X_tbr"].shape == semi.obsm["Z_true"].shape
        assert semi.obsm["X_baseline"].shape == semi.obsm["Z_true"].shape
        tbr = sctbr.metrics.mcc(semi.obsm["Z_true"], semi.obsm["X_tbr"])
        base = sctbr.metrics.mcc(semi.obsm["Z_true"], semi.obsm["X_baseline"])
        scores.append((tbr, base))
        print(f"seed {seed}: MCC TBR {tbr:.3f}, baseline {base:.3f}")
    tbr_mean, base_mean = np.mean(scores, axis=0)
    assert tbr_mean > base_mean, f"TBR {tbr_mean:.3f} vs baseline {base_mean:.3f} (per seed: {scores})"


def test_regulator_r2_is_cross_validated_least_squares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = x @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.5 * rng.normal(size=400)
    r2 = sctbr.datasets.regulator_r2(x, y)
    assert 0.8 < r2 < 1 - 0.25 / y.var() + 0.02  # near the noise ceiling, never above it by more than CV noise
    # out of fold: many useless columns on few cells predict worse than the mean, in-sample R² would be high
    noise = rng.normal(size=(30, 20))
    assert sctbr.datasets.regulator_r2(noise, rng.normal(size=30)) < 0
    with pytest.raises(ValueError, match="one row per value"):
        sctbr.datasets.regulator_r2(x, y[:10])
    with pytest.raises(ValueError, match="`n_folds` must be an integer >= 2"):
        sctbr.datasets.regulator_r2(x, y, n_folds=1)


def test_weakly_correlated_genes_min_r2_keeps_only_genes_the_inputs_predict():
    adata = _expression()
    genes = list(adata.var_names)
    regs = sctbr.datasets.regulators(genes)
    target = next(g for g in HK_ALL if len([t for t in regs[g] if t in genes and t not in ("AR", g)]) >= 3)
    magic = adata.layers["magic"]
    tfs = [genes.index(t) for t in regs[target] if t in genes and t not in ("AR", target)]
    magic[:, genes.index(target)] = magic[:, tfs].sum(1) + 0.05 * np.random.default_rng(1).normal(size=adata.n_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        free = sctbr.datasets.weakly_correlated_genes(adata, 2)
    assert len(free) == 2
    assert free != [target]
    with pytest.warns(UserWarning, match=r"Only 1 of 2 genes meet the rule .*`min_r2`"):
        strict = sctbr.datasets.weakly_correlated_genes(adata, 2, min_r2=0.8)
    assert strict == [target]
    # the rule's own measure: the picked gene is predicted from its regulators, the others of `free` are not
    r2 = {
        g: sctbr.datasets.regulator_r2(
            magic[:, [genes.index(t) for t in regs[g] if t in genes and t != g]], magic[:, genes.index(g)]
        )
        for g in {*free, target}
    }
    assert r2[target] > 0.95
    assert all(r2[g] < 0.8 for g in free if g != target)
    with pytest.raises(ValueError, match="`min_r2`"):
        sctbr.datasets.weakly_correlated_genes(adata, 3, min_r2=1.5)
