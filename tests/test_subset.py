"""Every ``tl`` and ``pl`` function works on a subset of a fitted AnnData (a copy and a view).

Per-cell results live in ``obs``/``obsm`` (latents, predictions, the train/validation/test split, the stability runs'
latents), so they are subset with the cells; ``uns`` holds only what is not per cell.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sctbr  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")

FIT = {"n_latent": 2, "hidden": (16,), "max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False}
#: The paper's split, so that there are test cells.
SPLIT = {"train_size": 0.5, "validation_size": 0.25}
#: pl functions that draw a results table, not an AnnData (nothing to subset).
TABLE_PLOTS = {"mcc", "prediction_error", "transfer"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted(make_adata, torch_single_thread) -> ad.AnnData:
    """TBR and the baseline (default keys and a key_added), stability and select_n_latent on the small simulation."""
    adata = make_adata()
    sctbr.tl.tbr(adata, **FIT, **SPLIT, refine=False)
    sctbr.tl.tbr(adata, **FIT, **SPLIT, refine=False, key_added="named")
    sctbr.tl.baseline(adata, **FIT, **SPLIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # two-epoch fits are neither stable nor on a plateau
        sctbr.tl.stability(adata, n_seeds=2, **FIT, refine=False, check_tree=False)  # per-cell results only
        sctbr.tl.select_n_latent(adata, candidates=[1, 2], **{k: v for k, v in FIT.items() if k != "n_latent"})
    return adata


def _subset(adata: ad.AnnData, kind: str) -> ad.AnnData:
    mask = np.arange(adata.n_obs) % 3 != 0  # two thirds of the cells of every environment
    return adata[mask].copy() if kind == "copy" else adata[mask]


def test_per_cell_results_are_in_obs_and_obsm(fitted):
    assert fitted.obs["tbr_split"].cat.categories.tolist() == ["train", "validation", "test"]
    assert {"tbr_split", "named_split", "baseline_split"} <= set(fitted.obs)
    assert {"X_tbr", "named", "X_baseline", "X_tbr_stability"} <= set(fitted.obsm)
    assert fitted.obsm["X_tbr_stability"].shape == (fitted.n_obs, 2 * 2)
    for key in ("tbr", "named", "baseline", "tbr_stability"):
        assert "split" not in fitted.uns[key]
        assert "latents" not in fitted.uns[key]


@pytest.mark.parametrize("kind", ["copy", "view"])
def test_every_tl_function_works_on_a_subset(fitted, kind, h5ad_roundtrip):
    sub = _subset(fitted, kind)
    assert sub.is_view == (kind == "view")
    test = (sub.obs["tbr_split"] == "test").to_numpy()
    for key in ("tbr", "named", "baseline"):
        table = sctbr.tl.causal_effects(sub, key=key, split="test")  # raised when the split lived in uns
        assert table.drop_duplicates("environment")["n_cells"].sum() == test.sum()
        assert len(sctbr.tl.causal_effects(sub, key=key, split=["train", "validation"], cov_type="HC3")) > 0
    # refits on the subset: tbr/baseline into a copy, the refitting tools returning their result
    out = sctbr.tl.tbr(sub, **FIT, refine=False, copy=True)
    assert out.obsm["X_tbr"].shape == (sub.n_obs, 2)
    assert out.obs["tbr_split"].notna().all()
    out = sctbr.tl.baseline(sub, **FIT, copy=True, key_added="sub_baseline")
    assert out.obsm["sub_baseline"].shape == (sub.n_obs, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = sctbr.tl.stability(sub, n_seeds=2, **FIT, refine=False, inplace=False)
        assert res["latents"].shape == (sub.n_obs, 2 * 2)
        res = sctbr.tl.select_n_latent(
            sub, candidates=[1, 2], inplace=False, **{k: v for k, v in FIT.items() if k != "n_latent"}
        )
        assert res["n_latent"] in (1, 2)
    if kind == "copy":
        back = h5ad_roundtrip(out)
        assert back.obs["sub_baseline_split"].cat.categories.tolist() == ["train", "validation", "test"]
        back = h5ad_roundtrip(sub)
        assert back.obsm["X_tbr_stability"].shape == (sub.n_obs, 4)
        assert len(sctbr.tl.causal_effects(back, split="test")) > 0


@pytest.mark.parametrize("kind", ["copy", "view"])
def test_every_pl_function_works_on_a_subset(fitted, kind):
    sub = _subset(fitted, kind)
    drawn = set()
    for key in ("tbr", "named", "baseline"):
        sctbr.pl.tree(sub, key=key, show=False)
        sctbr.pl.weights(sub, key=key, show=False)
        sctbr.pl.history(sub, key=key, show=False)
        sctbr.pl.latents_vs_truth(sub, key=key, show=False)
        sctbr.pl.causal_effects(sub, key=key, split="test", show=False)
        plt.close("all")
    drawn |= {"tree", "weights", "history", "latents_vs_truth", "causal_effects"}
    sctbr.pl.stability(sub, show=False)
    sctbr.pl.n_latent(sub, show=False)
    drawn |= {"stability", "n_latent"}
    # a new pl function that reads an AnnData belongs in this test
    assert set(sctbr.pl.__all__) == drawn | TABLE_PLOTS


def _keys(adata: ad.AnnData) -> tuple:
    return set(adata.obsm.keys()), list(adata.obs.columns), set(adata.uns.keys()), adata.X.copy()


def _assert_same(adata: ad.AnnData, before: tuple) -> None:
    after = _keys(adata)
    assert after[:3] == before[:3]
    np.testing.assert_array_equal(after[3], before[3])


@pytest.mark.parametrize("kind", ["copy", "view"])
def test_tbr_on_a_subset_writes_into_the_subset_only(fitted, kind):
    parent = _keys(fitted)
    sub = _subset(fitted, kind)
    with warnings.catch_warnings():
        # anndata turns a written view into an actual AnnData (ImplicitModificationWarning), as scanpy's tools do
        warnings.simplefilter("ignore")
        sctbr.tl.tbr(sub, **FIT, refine=False, key_added="on_subset")
    assert not sub.is_view
    assert sub.obsm["on_subset"].shape == (sub.n_obs, 2)
    assert sub.obs["on_subset_split"].notna().all()
    _assert_same(fitted, parent)  # the parent AnnData never sees the subset's fit


@pytest.mark.parametrize("kind", ["copy", "view"])
@pytest.mark.parametrize("failure", ["bad_argument", "training"])
def test_failed_tbr_on_a_subset_leaves_it_and_its_parent_untouched(fitted, kind, failure, monkeypatch):
    from sctbr.model import TBR

    def refuse(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(TBR, "_run_fit", refuse)
    parent = _keys(fitted)
    sub = _subset(fitted, kind)
    before = _keys(sub)
    kwargs = {**FIT, "n_latent": 0} if failure == "bad_argument" else FIT
    with pytest.raises(ValueError if failure == "bad_argument" else RuntimeError):
        sctbr.tl.tbr(sub, **kwargs, refine=False, key_added="failed")
    assert sub.is_view == (kind == "view")  # a view stays a view: nothing was written into it
    _assert_same(sub, before)
    _assert_same(fitted, parent)
