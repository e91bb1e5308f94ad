"""Plots read what ``sctbr.tl`` wrote, draw the expected artists, follow Scanpy's ax/show/save/return_fig contract
and compose in a grid."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import sctbr  # noqa: E402
from sctbr.pl._common import METHOD_COLORS  # noqa: E402

FIT = {"max_epochs": 3, "hidden": (16,), "n_latent": 2, "accelerator": "cpu", "enable_progress_bar": False}


#: Scanpy settings the tests change (restored after each test).
_SETTINGS = ("autoshow", "autosave", "figdir", "file_format_figs")


@pytest.fixture(autouse=True)
def _close_figures():
    """As in Scanpy's own tests: plots return their Axes (``autoshow`` off); figures and settings are reset after."""
    saved = {name: getattr(sc.settings, name) for name in _SETTINGS}
    sc.settings.autoshow = False
    yield
    plt.close("all")
    for name, value in saved.items():
        setattr(sc.settings, name, value)


@pytest.fixture(scope="module")
def fitted(make_adata, torch_single_thread):
    """The small simulation with a TBR fit under "tbr" and a baseline fit under "baseline" (do not mutate)."""
    adata = make_adata()
    sctbr.tl.tbr(adata, **FIT, enable_model_summary=False)
    sctbr.tl.baseline(adata, **FIT, enable_model_summary=False)
    return adata


@pytest.fixture
def results() -> pd.DataFrame:
    """A tidy results table: 2 methods x 3 sparsity levels x 3 seeds."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "method": m,
            "k": k,
            "seed": s,
            "mcc": rng.uniform(0.5, 1.0),
            "test_mse": rng.uniform(0.01, 1.0),
            "transfer_mse": rng.uniform(0.1, 1.0),
        }
        for k in (0, 1, 2)
        for s in range(3)
        for m in ("baseline", "tbr")
    ]
    return pd.DataFrame(rows)


def _scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def _n_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in _scatters(ax))


def _legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _big_tree_adata(n_leaves: int = 256, n_latent: int = 4) -> tuple[ad.AnnData, sctbr.EnvironmentTree]:
    """A synthetic ``uns`` entry as tl.tbr writes it, for a random tree with cells at the leaves only."""
    t = sctbr.datasets.random_tree(n_leaves, random_state=0)
    rng = np.random.default_rng(0)
    delta = np.where(rng.random((t.n_arcs, n_latent)) < 0.2, rng.normal(size=(t.n_arcs, n_latent)), 0.0)
    adata = ad.AnnData(obs=pd.DataFrame({"env": pd.Categorical(t.leaves)}, index=[f"c{i}" for i in range(n_leaves)]))
    latents = [f"latent_{i}" for i in range(n_latent)]
    adata.uns["tbr"] = {
        "params": {"method": "tbr", "groupby": "env", "n_latent": n_latent},
        "tree": t.to_dict(),
        "deltas": pd.DataFrame(delta, index=list(t.arc_labels), columns=latents),
        "environment_weights": pd.DataFrame(t.path_matrix() @ delta, index=list(t.nodes), columns=latents),
    }
    return adata, t


# ---------------------------------------------------------------------- every plot: Scanpy's ax/show/return_fig


PLOTS = {
    "mcc": lambda a, r, **kw: sctbr.pl.mcc(r, **kw),
    "prediction_error": lambda a, r, **kw: sctbr.pl.prediction_error(r, **kw),
    "transfer": lambda a, r, **kw: sctbr.pl.transfer(r, **kw),
    "tree": lambda a, r, **kw: sctbr.pl.tree(a, **kw),
    "tree_radial": lambda a, r, **kw: sctbr.pl.tree(a, radial=True, **kw),
    "weights": lambda a, r, **kw: sctbr.pl.weights(a, **kw),
    "history": lambda a, r, **kw: sctbr.pl.history(a, **kw),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_plot_returns_axes_with_show_false_and_the_figure_with_return_fig(name, fitted, results, tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() called with show=False"))
    ax = PLOTS[name](fitted, results, show=False)
    assert isinstance(ax, Axes)
    fig = PLOTS[name](fitted, results, return_fig=True)
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.exists()
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("name", list(PLOTS))
def test_plot_draws_into_the_given_axes(name, fitted, results):
    fig, (left, right) = plt.subplots(1, 2)
    out = PLOTS[name](fitted, results, ax=right, show=False)
    assert out is right
    assert right.has_data() or right.texts
    assert not left.has_data()
    assert plt.get_fignums() == [fig.number]


@pytest.mark.parametrize("autoshow", [True, False])
def test_show_none_follows_scanpy_autoshow_and_shown_plots_return_none(autoshow, results, monkeypatch):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    sc.settings.autoshow = autoshow
    out = sctbr.pl.mcc(results)
    assert calls == ([1] if autoshow else [])
    assert (out is None) if autoshow else isinstance(out, Axes)
    assert sctbr.pl.mcc(results, show=True) is None
    assert calls == ([1, 1] if autoshow else [1])
    assert isinstance(sctbr.pl.mcc(results, show=False), Axes)
    assert isinstance(sctbr.pl.mcc(results, show=True, return_fig=True), Figure)  # as Scanpy: not shown


@pytest.mark.parametrize(
    ("save", "name"),
    [(True, "mcc.pdf"), ("_fit.png", "mcc_fit.png"), ("_fit", "mcc_fit.pdf"), ("_a.svg", "mcc_a.svg")],
)
def test_save_writes_into_scanpy_figdir_as_scanpy_names_files(save, name, results, tmp_path, monkeypatch):
    sc.settings.figdir = tmp_path / "figures"
    sc.settings.file_format_figs = "pdf"
    assert sctbr.pl.mcc(results, save=save, show=False) is not None
    assert [p.name for p in (tmp_path / "figures").iterdir()] == [name]
    assert plt.get_fignums() == []  # as Scanpy: a saved figure is closed


def test_autosave_follows_scanpy(results, tmp_path, monkeypatch):
    sc.settings.figdir = tmp_path
    sc.settings.autosave = True
    sctbr.pl.transfer(results)
    assert [p.name for p in tmp_path.iterdir()] == [f"transfer.{sc.settings.file_format_figs}"]


def test_every_plot_follows_the_contract_in_its_signature():
    import inspect

    for name in sctbr.pl.__all__:
        params = inspect.signature(getattr(sctbr.pl, name)).parameters
        for arg, default in {"ax": None, "show": None, "save": None, "return_fig": False}.items():
            assert params[arg].default is default, f"sctbr.pl.{name}: {arg}={params[arg].default!r}"
            assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY


def test_colours_come_from_scanpy_palettes(fitted):
    from scanpy.plotting import palettes

    assert [METHOD_COLORS["tbr"], METHOD_COLORS["baseline"]] == palettes.default_20[:2]
    ax = sctbr.pl.tree(fitted, changes=False, show=False)  # the trained deltas: every latent has changes to draw
    latent_clouds = _scatters(ax)[2:]
    assert [to_hex(c.get_facecolor()[0]) for c in latent_clouds] == palettes.default_20[: len(latent_clouds)]


def test_environments_take_their_colours_from_uns(fitted):
    adata = fitted.copy()
    categories = list(adata.obs["environment"].cat.categories)
    adata.uns["environment_colors"] = [f"#0000{i:02x}" for i in range(len(categories))]
    colour = dict(zip(categories, adata.uns["environment_colors"], strict=True))
    ax = sctbr.pl.tree(adata, show=False)
    t = sctbr.EnvironmentTree.from_dict(adata.uns["tbr"]["tree"])
    filled = _scatters(ax)[0]
    names = [n for n in sctbr.pl._tree.tree_layout(t) if n in colour]
    assert [to_hex(c) for c in filled.get_facecolors()] == [colour[n] for n in names]
    ax = sctbr.pl.weights(adata, show=False)
    for tick in ax.get_yticklabels():
        assert to_hex(tick.get_bbox_patch().get_facecolor(), keep_alpha=False) == colour[tick.get_text()]
    # without colours in uns: grey nodes and plain labels, as before
    assert len({to_hex(c) for c in _scatters(sctbr.pl.tree(fitted, show=False))[0].get_facecolors()}) == 1


# ---------------------------------------------------------------------- results: mcc, prediction_error, transfer


def test_mcc_draws_a_box_per_method_and_level_and_every_repetition(results):
    ax = sctbr.pl.mcc(results)
    assert len(ax.patches) == 2 * 3  # boxes
    assert len(_scatters(ax)) == 2  # one point cloud per method
    assert _n_points(ax) == len(results)
    assert _legend_labels(ax) == ["tbr", "baseline"]  # TBR first, whatever the row order
    assert ax.get_legend().get_title().get_text() == "method"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    assert ax.get_xlabel() == "sparsity k"
    assert ax.get_ylabel() == "MCC"


def test_results_colours_follow_method_colors_and_new_methods_get_their_own(results):
    other = results[results["method"] == "tbr"].assign(method="ica")
    ax = sctbr.pl.mcc(pd.concat([results, other]))
    colours = {
        lab: to_hex(c.get_facecolor()[0], keep_alpha=False)
        for lab, c in zip(["tbr", "baseline", "ica"], _scatters(ax), strict=True)
    }
    assert colours["tbr"] == METHOD_COLORS["tbr"]
    assert colours["baseline"] == METHOD_COLORS["baseline"]
    assert colours["ica"] not in (METHOD_COLORS["tbr"], METHOD_COLORS["baseline"])
    assert len(ax.patches) == 3 * 3
    assert _legend_labels(ax) == ["tbr", "baseline", "ica"]


def test_results_order_and_hue_order_select_and_sort(results):
    ax = sctbr.pl.prediction_error(results, order=[2, 0], hue_order=["baseline"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "0"]
    assert len(ax.patches) == 2
    assert _legend_labels(ax) == ["baseline"]
    assert _n_points(ax) == 6


def test_prediction_error_labels_and_log_axis(results):
    ax = sctbr.pl.prediction_error(results, log=True)
    assert ax.get_ylabel() == "test MSE"
    assert ax.get_yscale() == "log"
    assert sctbr.pl.prediction_error(results).get_yscale() == "linear"


def test_transfer_drops_rows_without_transfer_error(results):
    results.loc[results["k"] == 0, "transfer_mse"] = np.nan  # another experiment's rows
    ax = sctbr.pl.transfer(results)
    assert ax.get_ylabel() == "MSE on unseen environments"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    assert _n_points(ax) == 12
    with pytest.raises(ValueError, match="transfer_mse"):
        sctbr.pl.transfer(results.assign(transfer_mse=np.nan))


def test_results_accept_sparsity_rates(results):
    results["k"] = results["k"].map({0: 0.0, 1: 0.1, 2: 0.25})
    ax = sctbr.pl.mcc(results, x="k")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.1", "0.25"]


@pytest.mark.parametrize("plot", [sctbr.pl.mcc, sctbr.pl.prediction_error, sctbr.pl.transfer])
def test_results_missing_column_names_it_and_lists_the_present_ones(plot, results):
    y = {sctbr.pl.mcc: "mcc", sctbr.pl.prediction_error: "test_mse", sctbr.pl.transfer: "transfer_mse"}[plot]
    with pytest.raises(KeyError, match=rf"\['{y}'\].*columns present: \['method', 'k'"):
        plot(results.drop(columns=y))
    with pytest.raises(KeyError, match="'n_latent'"):
        plot(results, x="n_latent")


# ---------------------------------------------------------------------- tree


def test_tree_draws_every_arc_node_and_change(fitted):
    t = sctbr.EnvironmentTree.from_dict(fitted.uns["tbr"]["tree"])
    deltas = fitted.uns["tbr"]["deltas"]
    ax = sctbr.pl.tree(fitted, changes=False)  # the trained Delta (the support estimate: test_tree_changes.py)
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines) == 1
    assert len(lines[0].get_segments()) == t.n_arcs
    scatters = _scatters(ax)
    # the simulation has cells in every node but the root: one filled cloud, one open root, one cloud per latent
    assert [len(c.get_offsets()) for c in scatters[:2]] == [t.n_nodes - 1, 1]
    assert sum(len(c.get_offsets()) for c in scatters[2:]) == int((deltas.to_numpy() != 0).sum())
    changed = [f"latent {j}" for j in range(deltas.shape[1]) if (deltas.iloc[:, j] != 0).any()]
    labels = [lab for lab in _legend_labels(ax) if not lab.startswith("|Δ|")]  # the size legend
    assert labels == ["environment with cells", "node without cells", *changed]
    assert sorted(t.get_text() for t in ax.texts) == sorted(t.leaves)


def test_tree_marker_area_grows_with_the_change(fitted):
    ax = sctbr.pl.tree(fitted, latents=[0], changes=False)
    cloud = _scatters(ax)[-1]
    delta = np.abs(fitted.uns["tbr"]["deltas"].iloc[:, 0].to_numpy())
    delta = delta[delta > 0]
    assert np.argmax(cloud.get_sizes()) == np.argmax(delta)
    assert cloud.get_sizes().max() == pytest.approx(60.0)


def test_tree_threshold_hides_small_changes_and_baseline_has_none(fitted):
    big = float(np.abs(fitted.uns["tbr"]["deltas"].to_numpy()).max())
    ax = sctbr.pl.tree(fitted, threshold=big, changes=False)
    assert len(_scatters(ax)) == 2  # nodes only
    assert not any(lab.startswith("latent") for lab in _legend_labels(ax))
    ax = sctbr.pl.tree(fitted, key="baseline")
    assert len(_scatters(ax)) == 2


def test_tree_radial_keeps_the_labels_and_uses_equal_aspect(fitted):
    ax = sctbr.pl.tree(fitted, radial=True, label_internal=True)
    t = sctbr.EnvironmentTree.from_dict(fitted.uns["tbr"]["tree"])
    assert ax.get_aspect() == 1.0
    assert len(ax.texts) == t.n_nodes  # leaves plus internal nodes


def test_tree_with_256_leaves_thins_labels_and_shrinks_markers(fitted):
    adata, t = _big_tree_adata(256)
    start = time.perf_counter()
    fig = sctbr.pl.tree(adata, return_fig=True)
    fig.savefig(__import__("io").BytesIO(), format="png", dpi=40)
    assert time.perf_counter() - start < 5
    ax = fig.axes[0]
    assert 0 < len(ax.texts) <= 60
    assert "1 in 5 of 256 leaves" in ax.get_title()
    assert all(txt.get_text() in t.leaves for txt in ax.texts)
    small = max(c.get_sizes().max() for c in _scatters(sctbr.pl.tree(fitted)))
    large = max(c.get_sizes().max() for c in _scatters(ax))
    assert large < small / 4
    # cells at the leaves only: every internal node is drawn open
    assert [len(c.get_offsets()) for c in _scatters(ax)[:2]] == [256, 255]
    assert len(sctbr.pl.tree(adata, max_labels=0, radial=True).texts) == 0


def test_tree_unknown_latent_is_a_clear_error(fitted):
    with pytest.raises(KeyError, match="latent_9"):
        sctbr.pl.tree(fitted, latents=["latent_9"])
    with pytest.raises(IndexError, match="2 latents"):
        sctbr.pl.tree(fitted, latents=[5])


# ---------------------------------------------------------------------- weights


def test_weights_heatmap_rows_follow_the_tree_and_colours_centre_at_zero(fitted):
    t = sctbr.EnvironmentTree.from_dict(fitted.uns["tbr"]["tree"])
    ax = sctbr.pl.weights(fitted)
    (image,) = ax.images
    assert image.get_array().shape == (len(t.leaves), 2)
    assert [x.get_text() for x in ax.get_yticklabels()] == ["n00", "n01", "n10", "n11"]
    assert [x.get_text() for x in ax.get_xticklabels()] == ["latent 0", "latent 1"]
    low, high = image.get_clim()
    assert low == -high > -np.inf
    assert len(ax.child_axes) == 1  # with a colorbar (an inset: it moves with the heatmap when the axes shrink)
    expected = fitted.uns["tbr"]["environment_weights"].loc[["n00", "n01", "n10", "n11"]].to_numpy()
    np.testing.assert_allclose(image.get_array(), expected)


def test_weights_include_internal_nodes_in_depth_first_order(fitted):
    ax = sctbr.pl.weights(fitted, include_internal=True)
    assert [x.get_text() for x in ax.get_yticklabels()] == ["root", "n0", "n00", "n01", "n1", "n10", "n11"]
    assert ax.get_yticklabels()[0].get_fontstyle() == "italic"
    assert ax.get_yticklabels()[2].get_fontstyle() == "normal"


def test_weights_of_a_large_tree_thin_the_row_labels():
    adata, t = _big_tree_adata(256)
    ax = sctbr.pl.weights(adata, max_labels=50)
    assert ax.images[0].get_array().shape == (256, 4)
    assert 0 < len(ax.get_yticklabels()) <= 50


# ---------------------------------------------------------------------- history


def test_history_draws_train_and_validation_loss_by_epoch(fitted):
    ax = sctbr.pl.history(fitted, stages=False)
    assert [line.get_label() for line in ax.lines] == ["train loss", "validation loss"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), fitted.uns["tbr"]["history"]["validation_loss"])
    assert ax.get_xlabel() == "epoch"
    assert _legend_labels(ax) == ["train loss", "validation loss"]
    assert to_hex(ax.lines[0].get_color()) == METHOD_COLORS["tbr"]
    assert to_hex(sctbr.pl.history(fitted, key="baseline").lines[0].get_color()) == METHOD_COLORS["baseline"]


def _history_adata(history: pd.DataFrame, method: str = "tbr") -> ad.AnnData:
    adata = ad.AnnData()
    adata.uns["tbr"] = {"params": {"method": method}, "history": history}
    return adata


def test_history_marks_where_the_penalty_joins_the_loss():
    mse = np.linspace(1.0, 0.1, 10)
    loss = mse + np.r_[np.zeros(6), np.full(4, 0.2)]  # unpenalised fit for 6 epochs, then sparsify
    frame = pd.DataFrame({"train_loss": loss, "mse_train": mse}, index=pd.Index([str(i) for i in range(10)]))
    ax = sctbr.pl.history(_history_adata(frame))
    (marker,) = [line for line in ax.lines if line.get_label() == "sparsify stage starts"]
    np.testing.assert_allclose(marker.get_xdata(), [5.5, 5.5])
    assert "sparsify stage starts" in _legend_labels(ax)
    # penalised from the first epoch, or never: nothing to mark
    assert len(sctbr.pl.history(_history_adata(frame.assign(train_loss=mse + 0.2))).lines) == 1
    assert len(sctbr.pl.history(_history_adata(frame.assign(train_loss=mse))).lines) == 1
    assert len(sctbr.pl.history(_history_adata(frame), stages=False).lines) == 1


def test_history_draws_what_exists_and_names_missing_metrics(fitted):
    frame = fitted.uns["tbr"]["history"][["train_loss", "mse_train"]]
    ax = sctbr.pl.history(_history_adata(frame), stages=False)
    assert [line.get_label() for line in ax.lines] == ["train loss"]
    with pytest.raises(KeyError, match=r"\['mse_validation'\].*recorded: \['train_loss', 'mse_train'\]"):
        sctbr.pl.history(_history_adata(frame), metrics=["train_loss", "mse_validation"])
    metrics = ["train_loss", "validation_loss", "mse_train", "mse_validation"]
    ax = sctbr.pl.history(fitted, metrics=metrics, log=True, stages=False)
    assert [line.get_label() for line in ax.lines] == ["train loss", "validation loss", "train MSE", "validation MSE"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="no epochs"):
        sctbr.pl.history(_history_adata(frame.iloc[:0]))


# ---------------------------------------------------------------------- latents_vs_truth


def test_latents_vs_truth_has_one_panel_per_true_latent_with_its_correlation(fitted):
    axs = sctbr.pl.latents_vs_truth(fitted)
    assert len(axs) == fitted.obsm["Z_true"].shape[1] == 2
    assert all(ax.get_title().startswith("r = ") for ax in axs)
    assert all(len(_scatters(ax)) == 1 for ax in axs)
    assert isinstance(sctbr.pl.latents_vs_truth(fitted, return_fig=True), Figure)


def test_latents_vs_truth_names_the_true_latents(fitted):
    assert [ax.get_xlabel() for ax in sctbr.pl.latents_vs_truth(fitted)] == ["true latent 0", "true latent 1"]
    semi = fitted.copy()  # semi-synthetic data record the genes held out as latents
    semi.uns["simulation"] = {**semi.uns["simulation"], "latent_genes": np.array(["PSMB2", "VCP"])}
    assert [ax.get_xlabel() for ax in sctbr.pl.latents_vs_truth(semi)] == ["PSMB2", "VCP"]
    axs = sctbr.pl.latents_vs_truth(semi, truth_names=["a", "b"])
    assert [ax.get_xlabel() for ax in axs] == ["a", "b"]
    with pytest.raises(ValueError, match="each of the 2 true latents"):
        sctbr.pl.latents_vs_truth(semi, truth_names=["a"])


# ---------------------------------------------------------------------- errors and stored results


FIT_PLOTS = [sctbr.pl.tree, sctbr.pl.weights, sctbr.pl.history, sctbr.pl.latents_vs_truth]


@pytest.mark.parametrize("plot", FIT_PLOTS, ids=lambda f: f.__name__)
def test_missing_run_names_the_key_and_the_tl_call(plot, fitted):
    with pytest.raises(KeyError, match=r"adata.uns\['nope'\].*sctbr.tl.tbr\(adata, key_added='nope'\).*'tbr'"):
        plot(fitted, key="nope")


@pytest.mark.parametrize(
    ("plot", "field"),
    [
        (sctbr.pl.tree, "deltas"),
        (sctbr.pl.tree, "tree"),
        (sctbr.pl.weights, "environment_weights"),
        (sctbr.pl.history, "history"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_missing_field_names_it_and_the_tl_call(plot, field, fitted):
    adata = ad.AnnData(obs=fitted.obs.copy())
    adata.uns["tbr"] = {k: v for k, v in fitted.uns["tbr"].items() if k != field}
    with pytest.raises(KeyError, match=rf"'{field}'.*sctbr.tl.tbr\(adata, key_added='tbr'\)"):
        plot(adata)


def test_plots_read_a_fit_back_from_h5ad(fitted, tmp_path):
    fitted.write_h5ad(tmp_path / "fit.h5ad")
    back = ad.read_h5ad(tmp_path / "fit.h5ad")
    assert len(sctbr.pl.tree(back).texts) == len(sctbr.pl.tree(fitted).texts)
    np.testing.assert_allclose(
        sctbr.pl.weights(back).images[0].get_array(), sctbr.pl.weights(fitted).images[0].get_array()
    )
    np.testing.assert_array_equal(sctbr.pl.history(back).lines[0].get_xdata(), [0, 1, 2])


# ---------------------------------------------------------------------- composing plots in a grid


def _stability_result() -> dict:
    matrix = pd.DataFrame([[1.0, 0.95, 0.5], [0.95, 1.0, 0.55], [0.5, 0.55, 1.0]], index=["0", "1", "2"])
    matrix.columns = ["0", "1", "2"]
    per = pd.DataFrame({"latent": ["latent_0", "latent_1"], "mean_abs_corr": [0.97, 0.5], "min_abs_corr": [0.9, 0.3]})
    return {"matrix": matrix, "per_latent": per, "summary": {"mean_mcc": 0.667, "threshold": 0.9}}


def _n_latent_result() -> dict:
    curve = pd.DataFrame(
        {"n_latent": [1, 2, 3, 4], "validation_mse": [1.0, 0.21, 0.2, 0.2], "validation_se": [0.05, 0.02, 0.02, 0.02]}
    )
    return {"curve": curve.assign(train_mse=curve["validation_mse"] * 0.9), "n_latent": 2, "threshold": 0.22}


def _effects_table(fitted) -> pd.DataFrame:
    envs = pd.Categorical(sorted(fitted.obs["environment"].astype(str).unique()))
    rows = [
        {
            "environment": e,
            "latent": f"latent_{j}",
            "effect": 0.5 * j - 0.2,
            "ci_low": 0.5 * j - 0.4,
            "ci_high": 0.5 * j,
        }
        for e in envs
        for j in range(2)
    ]
    return pd.DataFrame(rows)


#: Every plot function (and variant), drawn with ``ax=`` and ``show=False``.
GRID_PLOTS = {
    **PLOTS,
    "latents_vs_truth": lambda a, r, **kw: sctbr.pl.latents_vs_truth(a, **kw),
    "causal_effects": lambda a, r, **kw: sctbr.pl.causal_effects(_effects_table(a), **kw),
    "n_latent": lambda a, r, **kw: sctbr.pl.n_latent(_n_latent_result(), **kw),
    "stability": lambda a, r, **kw: sctbr.pl.stability(_stability_result(), **kw),
    "stability_latents": lambda a, r, **kw: sctbr.pl.stability(_stability_result(), kind="latents", **kw),
}
GRIDS = [
    ("tree", "weights", "history", "mcc"),
    ("tree_radial", "latents_vs_truth", "prediction_error", "transfer"),
    ("causal_effects", "n_latent", "stability", "stability_latents"),
]


def _cells(fig, axes) -> list:
    """Each grid cell in display coordinates: the subplot's slot, extended to the middle of the gaps around it."""
    gs = axes[0, 0].get_subplotspec().get_gridspec()
    bottoms, tops, lefts, rights = gs.get_grid_positions(fig)
    xs = [0.0, (rights[0] + lefts[1]) / 2, 1.0]
    ys = [1.0, (bottoms[0] + tops[1]) / 2, 0.0]
    out = {}
    for (i, j), ax in np.ndenumerate(axes):
        box = matplotlib.transforms.Bbox([[xs[j], ys[i + 1]], [xs[j + 1], ys[i]]])
        slot = ax.get_subplotspec().get_topmost_subplotspec().get_position(fig)
        out[(i, j)] = (box.transformed(fig.transFigure), slot.transformed(fig.transFigure))
    return out


def _cell_of(ax, fig) -> tuple[int, int]:
    spec = ax.get_subplotspec()
    if spec is not None:
        top = spec.get_topmost_subplotspec()
        return top.rowspan.start, top.colspan.start
    x, y = ax.get_position().transformed(fig.transFigure).get_points().mean(axis=0)
    h, w = fig.bbox.height, fig.bbox.width
    return int(y < h / 2), int(x >= w / 2)


def _inside(inner, outer, tol: float = 2.0) -> bool:
    return (
        inner.x0 >= outer.x0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y0 >= outer.y0 - tol
        and inner.y1 <= outer.y1 + tol
    )


@pytest.mark.parametrize("names", GRIDS, ids=["-".join(g) for g in GRIDS])
def test_plots_compose_in_a_grid_without_leaving_their_cell(names, fitted, results):
    """Every artist a plot draws (texts, legends, points, lines, patches, images) stays in its own grid cell.

    The artists must stay inside the slot the grid gave the plot (the subplot's box); the axis decorations (tick
    labels, axis labels, titles) inside the cell with half of the gaps around it. No figure-level artist, and the
    grid itself is left as it was.
    """
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), gridspec_kw={"wspace": 0.45, "hspace": 0.45})
    cells = _cells(fig, axes)
    for name, ax in zip(names, axes.ravel(), strict=True):
        out = GRID_PLOTS[name](fitted, results, ax=ax, show=False)
        assert out is not None
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    after = _cells(fig, axes)
    assert all(np.allclose(after[k][1].bounds, cells[k][1].bounds) for k in cells), "a plot changed the grid's layout"
    assert not fig.texts, "a plot drew figure-level texts into the grid"
    assert not fig.legends, "a plot drew a figure-level legend into the grid"
    names_at = dict(zip(np.ndindex(2, 2), names, strict=True))
    problems = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        where = _cell_of(ax, fig)
        cell, slot = cells[where]
        legend = ax.get_legend()
        artists = [*ax.texts, *ax.collections, *ax.lines, *ax.patches, *ax.images, *([legend] if legend else [])]
        for artist in artists:
            if not artist.get_visible():
                continue
            extent = artist.get_tightbbox(renderer)
            if extent is not None and extent.width > 0 and not _inside(extent, slot):
                problems.append(f"{names_at[where]}: {type(artist).__name__} {artist} at {extent} leaves {slot}")
        whole = ax.get_tightbbox(renderer)
        if not _inside(whole, cell):
            problems.append(f"{names_at[where]}: the axes with its decorations {whole} leaves the cell {cell}")
    assert not problems, "\n".join(problems)
