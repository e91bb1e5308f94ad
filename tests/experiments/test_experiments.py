"""``sctbr.experiments``: every experiment at a test-only scale returns the tidy schema; the CLI writes its files.

The test-only profile ``"test"`` (depth-2 trees, 40 cells per environment, 3 epochs, one seed, k in {0, 1}) runs each
experiment in a second or two (the real-cell ones share one MAGIC run of PBMC3k, a few seconds). The slow test runs
``sparsity_sweep`` at the ``quick`` profile and checks the paper's claim at k = 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sctbr
from sctbr import EnvironmentTree
from sctbr.experiments import PROFILES, Profile
from sctbr.experiments.__main__ import main
from sctbr.experiments._common import COLUMNS, fit_method
from sctbr.experiments._profiles import get_profile
from sctbr.experiments._real import _choose_held_out, _one_sparse_heads
from sctbr.experiments._report import EXPERIMENTS, markdown, verdict

TEST = get_profile("test")
N_ENVS = 6  # non-root nodes of the depth-2 test tree
# rows = methods x settings x repetitions
EXPECTED_ROWS = {
    "sparsity_sweep": 2 * len(TEST.ks),
    "leaves_only": 2 * len(TEST.ks),
    "linear_psi": 2 * len(TEST.ks),
    "bernoulli_changes": 2 * len(TEST.rates),
    "latent_dimension": 2 * len(TEST.latent_dims),
    "causal_effects": 2 * N_ENVS,
    "semisynthetic_sweep": 2 * len(TEST.semi_ks),
    "transfer": 2 * len(TEST.transfer_ks) * TEST.n_held_out,
}


@pytest.fixture(scope="module")
def results(torch_single_thread):
    cache: dict[str, pd.DataFrame] = {}

    def get(name: str) -> pd.DataFrame:
        if name not in cache:
            cache[name] = getattr(sctbr.experiments, name)("test", random_state=3, accelerator="cpu")
        return cache[name]

    return get


def test_every_experiment_is_exported_and_registered():
    assert set(EXPECTED_ROWS) == set(EXPERIMENTS)
    for name in EXPECTED_ROWS:
        assert name in sctbr.experiments.__all__
    assert set(PROFILES) == {"quick", "local", "paper"}


@pytest.mark.parametrize("name", list(EXPECTED_ROWS))
def test_experiment_returns_the_tidy_schema(results, name):
    df = results(name)
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert len(df) == EXPECTED_ROWS[name]
    assert (df["experiment"] == name).all()
    assert (df["profile"] == "test").all()
    assert sorted(df["method"].unique()) == ["baseline", "tbr"]
    assert (df["seed"] == 3).all()
    assert df["seed"].dtype == np.int64
    assert df["n_latent"].dtype == np.int64
    for col in ("mcc", "test_mse", "transfer_mse", "fit_seconds"):
        assert df[col].dtype == np.float64, col
    assert df["mcc"].between(0, 1).all()
    assert (df["test_mse"] > 0).all()
    assert np.isfinite(df["test_mse"]).all()
    assert (df["fit_seconds"] > 0).all()
    if name == "transfer":
        assert np.isfinite(df["transfer_mse"]).all()
        assert (df["transfer_mse"] > 0).all()
    else:
        assert df["transfer_mse"].isna().all()


@pytest.mark.parametrize(
    ("name", "x", "levels"),
    [
        ("sparsity_sweep", "k", list(TEST.ks)),
        ("bernoulli_changes", "k", list(TEST.rates)),
        ("latent_dimension", "n_latent", list(TEST.latent_dims)),
        ("semisynthetic_sweep", "k", list(TEST.semi_ks)),
    ],
)
def test_experiment_sweeps_the_requested_settings(results, name, x, levels):
    df = results(name)
    assert sorted(df[x].unique().tolist()) == levels
    for method in ("tbr", "baseline"):
        assert sorted(df.loc[df["method"] == method, x].tolist()) == levels
    if name == "bernoulli_changes":
        assert df["k"].dtype == np.float64
    else:
        assert df["k"].dtype == np.int64


def test_simulation_settings_are_recorded(results):
    leaves = results("leaves_only")
    assert leaves["leaves_only"].all()
    assert (leaves["depth"] == TEST.depth + 1).all()
    assert (leaves["n_environments"] == 2 ** (TEST.depth + 1)).all()
    assert (results("linear_psi")["psi"] == "linear").all()
    dims = results("latent_dimension")
    assert (dims["n_latent_true"] == TEST.n_latent_true).all()
    assert (dims["k"] == 1).all()


def test_causal_effects_has_one_ate_error_per_environment(results):
    df = results("causal_effects")
    for method in ("tbr", "baseline"):
        rows = df[df["method"] == method]
        assert rows["environment"].nunique() == N_ENVS
        assert (rows["ate_error"] >= 0).all()
        assert np.isfinite(rows["ate_error"]).all()
    assert set(df["environment"]) == set(EnvironmentTree.balanced(TEST.depth).nodes) - {"root"}


def test_transfer_holds_out_a_type_and_names_its_well_populated_neighbour(results):
    df = results("transfer")
    assert (df["held_out"] != df["neighbour"]).all()
    assert (df["n_held_out_cells"] > 0).all()
    assert df[["held_out", "neighbour"]].drop_duplicates().shape[0] == TEST.n_held_out


def test_fit_method_scores_on_the_test_cells_of_the_papers_split(make_adata, torch_single_thread):
    adata = make_adata()
    row = fit_method(adata, "tbr", n_latent=2, seed=0, profile=TEST, max_epochs=2, accelerator="cpu")
    split = adata.obs["tbr_split"].astype(str).to_numpy()  # the split is a categorical obs column
    assert abs((split == "test").mean() - 0.25) < 0.05
    assert abs((split == "train").mean() - 0.5) < 0.05
    test = split == "test"
    expected_mcc = sctbr.metrics.mcc(adata.obsm["Z_true"][test], adata.obsm["X_tbr"][test])
    assert row["mcc"] == pytest.approx(expected_mcc)
    resid = (adata.obs["tbr_prediction"] - adata.obs["y"]).to_numpy()
    assert row["test_mse"] == pytest.approx(np.mean(resid[test] ** 2))
    assert row["validation_mse"] == pytest.approx(np.mean(resid[split == "validation"] ** 2))
    assert row["mcc"] != pytest.approx(sctbr.metrics.mcc(adata.obsm["Z_true"], adata.obsm["X_tbr"]))


def test_lambda_grid_keeps_the_best_validation_fit_only(make_adata, torch_single_thread):
    adata = make_adata()
    lams = (0.0, 0.3)
    scores = {}
    for lam in lams:
        other = make_adata()
        scores[lam] = fit_method(
            other, "tbr", n_latent=2, seed=0, profile=TEST, max_epochs=2, lams=(lam,), accelerator="cpu"
        )
    row = fit_method(adata, "tbr", n_latent=2, seed=0, profile=TEST, max_epochs=2, lams=lams, accelerator="cpu")
    best = min(lams, key=lambda lam: scores[lam]["validation_mse"])
    assert row["lam"] == best
    assert row["test_mse"] == pytest.approx(scores[best]["test_mse"])
    assert [k for k in adata.uns if k.startswith("tbr")] == ["tbr"]
    assert [k for k in adata.obsm if k.startswith("X_tbr")] == ["X_tbr"]


def test_held_out_types_need_a_well_populated_closest_neighbour():
    tree = EnvironmentTree({"a": "r", "b": "r", "c": "a", "d": "a", "e": "b", "f": "b"})
    counts = pd.Series({"c": 100, "d": 5, "e": 100, "f": 100})
    chosen = set()
    for seed in range(20):
        pairs = _choose_held_out(tree, counts, 1, 50, np.random.default_rng(seed))
        assert len(pairs) == 1
        held, neighbour = pairs[0]
        assert counts[neighbour] >= 50
        assert neighbour == tree.closest(held, [c for c in counts.index if c != held])
        chosen.add(held)
    assert "c" not in chosen  # its closest observed type, d, has 5 cells
    assert chosen == {"d", "e", "f"}
    with pytest.raises(ValueError, match="min_neighbour_cells"):
        _choose_held_out(tree, counts, 1, 500, np.random.default_rng(0))


def test_held_out_head_is_a_one_sparse_change_of_the_neighbours(make_adata):
    adata = make_adata(n_latent=3, n_inputs=4)
    weights_before = np.array(adata.uns["simulation"]["weights"])
    nodes = list(adata.uns["simulation"]["nodes"])
    changed = _one_sparse_heads(adata, "environment", [("n00", "n01")], np.random.default_rng(0), noise_y=0.0)
    weights = adata.uns["simulation"]["weights"]
    diff = weights[nodes.index("n00")] - weights[nodes.index("n01")]
    assert np.count_nonzero(diff) == 1
    assert np.flatnonzero(diff)[0] == changed["n00"]
    np.testing.assert_array_equal(
        np.delete(weights, nodes.index("n00"), 0), np.delete(weights_before, nodes.index("n00"), 0)
    )
    cells = (adata.obs["environment"] == "n00").to_numpy()
    np.testing.assert_allclose(
        adata.obs["y"].to_numpy()[cells], adata.obsm["Z_true"][cells] @ weights[nodes.index("n00")], rtol=1e-5
    )


def test_profiles_take_overrides_and_reject_unknown_settings():
    prof = get_profile("quick", ks=[0, 1], depth=2)
    assert isinstance(prof, Profile)
    assert prof.ks == (0, 1)
    assert prof.depth == 2
    assert prof.name == "quick"
    assert PROFILES["quick"].depth == 3  # the registered profile is unchanged
    with pytest.raises(TypeError, match="Unknown profile setting"):
        get_profile("quick", dpeth=2)
    with pytest.raises(ValueError, match="Unknown profile"):
        get_profile("huge")
    with pytest.raises(ValueError, match="Unknown method"):
        sctbr.experiments.sparsity_sweep("test", methods=("tbr", "magic"))
    with pytest.raises(ValueError, match="Unknown experiment"):
        sctbr.experiments.run("fig9")


def test_paper_profile_has_the_papers_scale():
    paper = PROFILES["paper"]
    assert 2**paper.depth == 128  # leaves of the balanced tree
    assert paper.n_obs_per_env == 3000
    assert paper.n_repeats == 10
    assert paper.semi_lams == (0.0, 1e-1, 1e-2, 1e-3, 1e-4)


def _fake(name: str, tbr: float, base: float, metric: str = "mcc") -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for method, value in (("tbr", tbr), ("baseline", base)):
            rows.append({"experiment": name, "method": method, "k": 1, "seed": seed, metric: value + 0.02 * seed})
    return pd.DataFrame(rows)


def test_verdict_compares_tbr_and_baseline_at_k1():
    assert verdict("sparsity_sweep", _fake("sparsity_sweep", 0.9, 0.6)).startswith(
        "TBR ahead of the baseline on MCC at k = 1: yes"
    )
    assert ": no (" in verdict("leaves_only", _fake("leaves_only", 0.5, 0.6))
    assert ": yes (" in verdict("causal_effects", _fake("causal_effects", 0.1, 1.0, "ate_error"))
    assert ": yes (" in verdict("transfer", _fake("transfer", 1.0, 2.0, "transfer_mse"))


def test_verdict_finds_the_plateau_of_the_latent_dimension():
    mse = {1: 1.0, 2: 0.3, 3: 0.1, 4: 0.095, 5: 0.09}
    df = pd.DataFrame(
        [{"method": "tbr", "n_latent": d, "test_mse": v, "n_latent_true": 3, "k": 1, "seed": 0} for d, v in mse.items()]
    )
    assert "at the true dimension: yes (plateau at n_latent = 3" in verdict("latent_dimension", df)
    df.loc[df["n_latent"] == 3, "test_mse"] = 0.2
    assert "at the true dimension: no (plateau at n_latent = 4" in verdict("latent_dimension", df)


def test_causal_effects_summary_sets_the_papers_numbers_beside_the_run():
    df = _fake("causal_effects", 0.1, 1.0, "ate_error").assign(environment=["n0", "n0", "n1", "n1"])
    text = markdown("causal_effects", df, TEST, seconds=1.0)
    assert "| paper (Table 3) | 0.05 ± 0.07 | 1.51 ± 1.8 |" in text
    assert "| pooled, this run | 0.11 ± 0.014 | 1.01 ± 0.014 |" in text


def test_cli_writes_csv_figure_and_summary(tmp_path, torch_single_thread, capsys):
    main(["sparsity_sweep", "--profile", "test", "--out", str(tmp_path), "--accelerator", "cpu"])
    csv, png, md = (tmp_path / f"sparsity_sweep.{ext}" for ext in ("csv", "png", "md"))
    for path in (csv, png, md):
        assert path.exists(), path
    back = pd.read_csv(csv)
    assert list(back.columns[: len(COLUMNS)]) == COLUMNS
    assert len(back) == EXPECTED_ROWS["sparsity_sweep"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "| k | MCC tbr | MCC baseline | test MSE tbr | test MSE baseline |" in text
    assert "TBR ahead of the baseline on MCC at k = 1" in text
    assert "sparsity_sweep" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fig9", "--profile", "test", "--out", str(tmp_path)])


def test_cli_set_changes_profile_fields(tmp_path, torch_single_thread):
    out = tmp_path / "spot"
    main(["sparsity_sweep", "--profile", "test", "--out", str(out), "--set", "ks=1", "--set", "methods=tbr"])
    back = pd.read_csv(out / "sparsity_sweep.csv")
    assert set(back["k"]) == {1}
    assert set(back["method"]) == {"tbr"}
    assert len(back) == 1  # the test profile's one repetition, one k, one method


@pytest.mark.parametrize(
    ("item", "message"),
    [("n_repeat=2", "unknown profile field 'n_repeat'"), ("n_repeats", "write FIELD=VALUE")],
)
def test_cli_set_rejects_bad_fields(tmp_path, capsys, item, message):
    with pytest.raises(SystemExit):
        main(["sparsity_sweep", "--profile", "test", "--out", str(tmp_path), "--set", item])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # rejected before any fit or file


@pytest.mark.slow
def test_quick_sparsity_sweep_tbr_beats_the_baseline_at_k1(torch_single_thread):
    df = sctbr.experiments.sparsity_sweep("quick", accelerator="cpu")
    at_k1 = df[df["k"] == 1].groupby("method")["mcc"].mean()
    # measured (3 seeds, depth-3 tree, 100 epochs): TBR 0.89, baseline 0.56
    assert at_k1["tbr"] > at_k1["baseline"] + 0.1, at_k1.to_dict()


@pytest.fixture(scope="module")
def subcluster_results(torch_single_thread):
    return sctbr.experiments.semisynthetic_sweep(
        "test", environments="subclusters", latents="weakly_correlated", random_state=3, accelerator="cpu"
    )


def test_subcluster_tree_follows_the_cell_types(subcluster_results):
    from sctbr.experiments._real import _prepare

    prepared, groupby, _ = _prepare(None, None, TEST, 3, "subclusters")
    tree = EnvironmentTree.coerce(dict(prepared.uns["environment_tree"]))
    pairs = prepared.obs[[groupby, "cell_type"]].astype(str).drop_duplicates()
    assert pairs[groupby].is_unique  # every sub-cluster lies in one cell type
    types = dict(zip(pairs[groupby], pairs["cell_type"], strict=True))
    assert sorted(tree.leaves) == sorted(types)  # the sub-clusters are the leaves
    assert 20 <= len(types) <= 45
    assert int(subcluster_results["n_environments"].iloc[0]) == len(types)
    for t in set(types.values()):
        subs = [s for s, ty in types.items() if ty == t]
        if len(subs) == 1:  # a single sub-cluster takes its type's place
            assert t not in tree
            continue
        below = {leaf for leaf in tree.leaves if t in tree.ancestors(leaf)}
        assert below == set(subs), t  # the type's sub-clusters form the subtree under the type, nothing else
    # the types are joined by the cell-type dendrogram: no sub-cluster's internal node above a type node
    for node in tree.nodes:
        if "/" in node:
            assert tree.parent(node).split("/")[0] == node.split("/")[0]


def test_weakly_correlated_latents_respect_the_rule_and_report_chance(subcluster_results):
    from sctbr.experiments._real import _prepare

    prepared, _, _ = _prepare(None, None, TEST, 3, "subclusters")
    genes = subcluster_results["latent_genes"].iloc[0].split(";")
    assert len(genes) >= 3
    z = np.asarray(prepared.layers["magic"][:, prepared.var_names.get_indexer(genes)])
    corr = np.abs(np.corrcoef(z.T)[np.triu_indices(len(genes), 1)])
    assert corr.max() < TEST.max_latent_corr
    regs = sctbr.datasets.regulators(genes)
    for g in genes:
        assert len([tf for tf in regs[g] if tf in prepared.var_names and tf != g]) >= TEST.min_regulators
        assert not set(regs[g]) & set(genes) - {g}
    # the inputs (all the genes' regulators) predict every latent gene (cross-validated, up to fold noise)
    inputs = sorted({tf for g in genes for tf in regs[g] if tf in prepared.var_names} - set(genes))
    x = np.asarray(prepared.layers["magic"][:, prepared.var_names.get_indexer(inputs)])
    x = x[:, x.std(0) > 0]
    for j, g in enumerate(genes):
        assert sctbr.datasets.regulator_r2(x, z[:, j]) > TEST.min_latent_r2 - 0.05, g
    df = subcluster_results
    assert len(df) == 2 * len(TEST.semi_ks)
    assert set(df["environments"]) == {"subclusters"}
    assert set(df["latents"]) == {"weakly_correlated"}
    z_std = (z - z.mean(0)) / z.std(0)
    assert df["chance_mcc"].iloc[0] == pytest.approx(sctbr.metrics.chance_mcc(z_std, random_state=3), abs=1e-6)
    assert 0.4 < df["chance_mcc"].iloc[0] < 0.8
    assert df["span_r2"].between(-1e-9, 1 + 1e-9).all()
    assert df["chance_mcc_fit"].between(0, 1).all()  # the chance level of each fit's own span


def test_house_keeping_default_is_unchanged_and_reports_chance(results):
    df = results("semisynthetic_sweep")
    assert set(df["environments"]) == {"cell_types"}
    assert set(df["latents"]) == {"house_keeping"}
    assert int(df["n_environments"].iloc[0]) <= 9
    assert df["chance_mcc"].iloc[0] > 0.7  # co-expressed house-keeping genes: random mixtures score high
