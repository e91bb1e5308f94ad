"""Binary phenotypes (logistic loss) and several targets on shared latents."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import sctbr
from sctbr import EnvironmentTree
from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.datasets import tree_weights
from sctbr.metrics import mcc
from sctbr.model import TBR, TBRModule, refine_basis

pytestmark = pytest.mark.usefixtures("torch_single_thread")

QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
FAST = {"n_latent": 2, "hidden": (16,), "max_epochs": 3, "refine": False, **QUIET}


def add_targets(adata, seed: int, logit_scale: float = 1.0):
    """Add ``y2`` (the same latents, its own sparse changes along the tree, k = 1) and a binary
    ``yb ~ Bernoulli(sigmoid(logit_scale * w_e . z))`` with the heads of ``y``."""
    tree = EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    rng = np.random.default_rng(seed + 100)
    rows = tree.node_index(list(adata.obs["environment"].astype(str)))
    z = adata.obsm["Z_true"].astype(np.float64)
    _, deltas2, weights2 = tree_weights(tree, z.shape[1], 1, rng=rng)
    adata.obs["y2"] = np.einsum("ij,ij->i", z, weights2[rows]) + 0.1 * rng.normal(size=adata.n_obs)
    logit = logit_scale * np.einsum("ij,ij->i", z, adata.uns["simulation"]["weights"][rows])
    adata.obs["yb"] = rng.random(adata.n_obs) < 1.0 / (1.0 + np.exp(-logit))
    return adata


@pytest.fixture
def adata(make_adata):
    return add_targets(make_adata(), seed=0)


def register(adata, target, **model):
    TBR.setup_anndata(adata, target=target, groupby="environment")
    return TBR(adata, tree=adata.uns["environment_tree"], **{"n_latent": 2, "hidden": (16,), **model})


# ---------------------------------------------------------------------- the loss


def test_loss_is_detected_from_the_values(adata):
    adata.obs["b01"] = adata.obs["yb"].astype(float)
    assert register(adata.copy(), "b01").losses_ == ["logistic"]
    assert register(adata.copy(), "y").losses_ == ["mse"]
    assert register(adata.copy(), "b01", loss="mse").losses_ == ["mse"]
    assert register(adata.copy(), ["y", "b01"]).losses_ == ["mse", "logistic"]
    assert register(adata.copy(), ["y", "b01"], loss=["mse", "mse"]).losses_ == ["mse", "mse"]


@pytest.mark.parametrize(
    ("loss", "match"), [("logistic", "0/1"), ("poisson", "'auto', 'mse' or 'logistic'"), (["mse", "mse"], "2 values")]
)
def test_bad_loss(adata, loss, match):
    with pytest.raises(ValueError, match=match):
        register(adata, "y", loss=loss)


def _module(losses, n_targets, seed=0):
    torch.manual_seed(seed)
    paths = EnvironmentTree.balanced(2).path_matrix(["n0", "n1", "n00", "n01"])
    return TBRModule(4, 2, paths, hidden=(8,), n_targets=n_targets, losses=losses)


def _batch(n_targets, binary, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(32, n_targets, generator=g) if n_targets > 1 else torch.randn(32, generator=g)
    if binary:
        y = (y > 0).float()
    return {X_KEY: torch.randn(32, 4, generator=g), Y_KEY: y, ENV_KEY: torch.randint(0, 4, (32,), generator=g)}


def test_logistic_loss_is_the_binary_cross_entropy():
    module = _module(("logistic",), 1)
    batch = _batch(1, binary=True)
    _, gen, out = module(batch)
    logit = gen["y_std_pred"]
    y = batch[Y_KEY]
    expected = -(y * torch.log(torch.sigmoid(logit)) + (1 - y) * torch.log(1 - torch.sigmoid(logit)))
    torch.testing.assert_close(out.extra_metrics["mse"], expected.mean())
    module.eval()
    torch.testing.assert_close(module.predict_target(batch[X_KEY], batch[ENV_KEY]), torch.sigmoid(logit))


def test_binary_targets_are_not_standardised():
    module = _module(("mse", "logistic"), 2)
    module.set_target_scale([3.0, 0.4], [2.0, 0.5])
    torch.testing.assert_close(module.y_mean, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(module.y_std, torch.tensor([2.0, 1.0]))


def test_several_targets_add_their_losses():
    """Two targets with shared encoder = the sum of two single-target modules holding the same heads."""
    both = _module(("mse", "logistic"), 2)
    both.set_target_scale([0.5, 0.0], [2.0, 1.0])
    with torch.no_grad():
        both.delta.normal_()
        both.bias.normal_()
    batch = _batch(2, binary=False)
    batch[Y_KEY][:, 1] = (batch[Y_KEY][:, 1] > 0).float()
    _, gen, out = both(batch)
    assert gen["y_std_pred"].shape == (32, 2)
    total = 0.0
    for t, loss in enumerate(("mse", "logistic")):
        one = _module((loss,), 1)
        one.load_state_dict(
            {
                **both.state_dict(),
                "w0": both.w0.detach()[2 * t : 2 * t + 2],
                "delta": both.delta.detach()[:, 2 * t : 2 * t + 2],
                "bias": both.bias.detach()[t : t + 1],
                "penalty_weights": both.penalty_weights[:, :2],
                "y_mean": both.y_mean[t : t + 1],
                "y_std": both.y_std[t : t + 1],
            }
        )
        _, gen1, out1 = one({**batch, Y_KEY: batch[Y_KEY][:, t]})
        torch.testing.assert_close(gen1["y_std_pred"], gen["y_std_pred"][:, t])
        total = total + out1.extra_metrics["mse"]
    torch.testing.assert_close(out.extra_metrics["mse"], total)
    torch.testing.assert_close(both.penalty_value(), both.lam * both.delta.abs().sum())


# ---------------------------------------------------------------------- binary targets end to end


def test_binary_predictions_are_probabilities_of_the_heads(adata):
    adata.obs["b01"] = adata.obs["yb"].astype(float)  # setup_anndata takes 0/1 numbers; tl.tbr converts bools
    model = register(adata, "b01")
    assert model.losses_ == ["logistic"]
    model.train(max_epochs=3, **QUIET)
    p = model.predict()
    assert ((p > 0) & (p < 1)).all()
    z = model.get_latent_representation().astype(np.float64)
    w = model.get_environment_weights().loc[adata.obs["environment"].astype(str)].to_numpy()
    logit = np.log(p / (1 - p))
    offset = logit - np.einsum("ij,ij->i", z, w)  # log-odds = z . w_env + bias
    np.testing.assert_allclose(offset, offset[0], atol=1e-3)


def test_setup_refuses_labels_with_the_fix(adata):
    with pytest.raises(TypeError, match="numeric.*0/1"):
        TBR.setup_anndata(adata, target="yb", groupby="environment")


@pytest.mark.parametrize("kind", ["bool", "category", "string"])
def test_tl_binary_target(adata, kind, tmp_path):
    if kind == "category":
        adata.obs["yb"] = pd.Categorical(np.where(adata.obs["yb"], "sick", "healthy"), categories=["healthy", "sick"])
    elif kind == "string":
        adata.obs["yb"] = np.where(adata.obs["yb"], "sick", "healthy").astype(object)
    before = adata.obs.copy()
    sctbr.tl.tbr(adata, target="yb", **FAST)
    res = adata.uns["tbr"]
    p = adata.obs["tbr_prediction"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert res["params"]["loss"] == "logistic"
    expected = ["False", "True"] if kind == "bool" else ["healthy", "sick"]
    assert list(res["levels"]["yb"]) == expected
    pd.testing.assert_frame_equal(adata.obs[before.columns], before)  # the target column is untouched
    adata.write_h5ad(tmp_path / "binary.h5ad")
    back = ad.read_h5ad(tmp_path / "binary.h5ad")
    assert list(back.uns["tbr"]["levels"]["yb"]) == expected
    np.testing.assert_array_equal(back.obs["tbr_prediction"], p)


def test_tl_more_than_two_levels_is_refused_before_training(adata, monkeypatch):
    monkeypatch.setattr(TBR, "_run_fit", lambda *a, **k: pytest.fail("training started"))
    levels = ["early", "mid", "late"]
    adata.obs["stage"] = pd.Categorical(np.array(levels)[np.arange(adata.n_obs) % 3], categories=levels)
    before = (set(adata.uns.keys()), list(adata.obs.columns), set(adata.obsm.keys()))
    with pytest.raises(ValueError, match=r"3 levels \('early', 'mid', 'late'\).*adata.obs\['stage'\] == 'late'"):
        sctbr.tl.tbr(adata, target="stage", **FAST)
    assert (set(adata.uns.keys()), list(adata.obs.columns), set(adata.obsm.keys())) == before


# ---------------------------------------------------------------------- several targets


def test_several_targets_shapes_and_accessors(adata, tmp_path):
    model = register(adata, ["y", "y2"])
    module = model.module
    assert module.w0.shape == (4,)
    assert module.delta.shape == (6, 4)
    assert module.bias.shape == (2,)
    model.train(max_epochs=3, **QUIET)
    assert model.predict().shape == (adata.n_obs, 2)
    tree = EnvironmentTree.balanced(2)
    weights, deltas = model.get_environment_weights(), model.get_deltas()
    assert weights.index.names == ["target", "node"]
    assert deltas.index.names == ["target", "arc"]
    assert weights.shape == (2 * tree.n_nodes, 2)
    assert deltas.shape == (2 * tree.n_arcs, 2)
    for target in ("y", "y2"):
        w, d = model.get_environment_weights(target), model.get_deltas(target)
        pd.testing.assert_frame_equal(w, weights.loc[target], check_names=False)
        pd.testing.assert_frame_equal(d, deltas.loc[target], check_names=False)
        expected = w.loc["root"].to_numpy()[None, :] + tree.path_matrix(dtype=float) @ d.to_numpy()
        np.testing.assert_allclose(w.to_numpy(), expected, rtol=1e-10, atol=1e-12)
    # the two heads are different trees (own root weights and changes)
    assert not np.allclose(weights.loc["y"].to_numpy(), weights.loc["y2"].to_numpy())
    with pytest.raises(KeyError, match="y3"):
        model.get_deltas("y3")
    model.save(tmp_path / "model", overwrite=True)
    loaded = TBR.load(tmp_path / "model", adata=adata)
    np.testing.assert_allclose(loaded.predict(), model.predict(), rtol=1e-6)


@pytest.mark.parametrize("target", [[], ["y", "y"]])
def test_bad_target_lists(adata, target):
    with pytest.raises(ValueError, match="target"):
        TBR.setup_anndata(adata, target=target, groupby="environment")


def test_tl_several_targets(adata, tmp_path):
    adata.obs["flag"] = adata.obs["yb"]
    sctbr.tl.tbr(adata, target=["y", "y2", "flag"], **FAST)
    res = adata.uns["tbr"]
    assert list(res["params"]["target"]) == ["y", "y2", "flag"]
    assert list(res["params"]["loss"]) == ["mse", "mse", "logistic"]
    assert "tbr_prediction" not in adata.obs
    p = adata.obs[["tbr_prediction_y", "tbr_prediction_y2", "tbr_prediction_flag"]].to_numpy()
    assert np.isfinite(p).all()
    assert ((p[:, 2] > 0) & (p[:, 2] < 1)).all()
    assert set(res["environment_weights"]) == set(res["deltas"]) == {"y", "y2", "flag"}
    z = adata.obsm["X_tbr"].astype(np.float64)
    env = adata.obs["environment"].astype(str)
    for j, target in enumerate(["y", "y2"]):  # each continuous prediction = latents . its own head + offset
        offset = p[:, j] - np.einsum("ij,ij->i", z, res["environment_weights"][target].loc[env].to_numpy())
        np.testing.assert_allclose(offset, offset.mean(), atol=1e-4)
    adata.write_h5ad(tmp_path / "targets.h5ad")
    back = ad.read_h5ad(tmp_path / "targets.h5ad").uns["tbr"]
    for key in ("environment_weights", "deltas"):
        for target in ("y", "y2", "flag"):
            pd.testing.assert_frame_equal(back[key][target], res[key][target], check_index_type=False)
    assert list(back["params"]["target"]) == ["y", "y2", "flag"]


def test_refine_basis_with_several_heads():
    """Two head trees, sparse in the true basis, seen through a mixing of the latents: one map unmixes both."""
    rng = np.random.default_rng(0)
    tree, d = EnvironmentTree.balanced(3), 3
    parent_index = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs])
    true = np.stack([tree_weights(tree, d, 1, rng=rng)[2] for _ in range(2)])  # (targets, nodes, d)
    mix = rng.normal(size=(d, d))
    mix /= np.linalg.norm(mix, axis=0)  # unit-variance mixed latents Z @ mix (independent unit-variance Z)
    seen = true @ np.linalg.inv(mix).T  # heads in the mixed basis: W mix^-T
    observed = np.ones(tree.n_nodes, dtype=bool)
    m, v, after, before = refine_basis(seen, parent_index, observed, mix.T @ mix, random_state=0)
    assert v.shape == seen.shape
    true_penalty = np.abs(true[:, 1:] - true[:, parent_index[1:]]).sum()
    assert after <= 1.02 * true_penalty < before
    unmixed = np.abs(mix @ m)  # true latents -> new latents: a signed permutation when identified
    assert (unmixed.max(axis=0) > 0.99).all()
    # one target passed as a 3-D array gives the 2-D answer
    short = {"n_starts": 4, "n_steps": 50, "random_state": 0}
    m1, v1, _, _ = refine_basis(seen[:1], parent_index, observed, mix.T @ mix, **short)
    m2, v2, _, _ = refine_basis(seen[0], parent_index, observed, mix.T @ mix, **short)
    np.testing.assert_allclose(m1, m2)
    np.testing.assert_allclose(v1[0], v2)


# ---------------------------------------------------------------------- identifiability


@pytest.fixture(scope="module")
def identified(torch_single_thread):
    """Depth-3 tree, 3 latents, k = 1, 150 cells per environment, 60 epochs: one target, two targets, a binary
    target, and the baseline on the binary target (about 15 s each on one CPU thread)."""
    adata = add_targets(sctbr.datasets.simulate(depth=3, n_latent=3, k=1, n_obs_per_env=150, random_state=0), 0)
    common = {"n_latent": 3, "max_epochs": 60, "train_size": 0.5, "validation_size": 0.25, **QUIET}
    sctbr.tl.tbr(adata, target="y", key_added="one", **common)
    sctbr.tl.tbr(adata, target=["y", "y2"], key_added="two", **common)
    sctbr.tl.tbr(adata, target="yb", key_added="binary", **common)
    sctbr.tl.baseline(adata, target="yb", key_added="binary_baseline", **common)
    test = (adata.obs["one_split"] == "test").to_numpy()
    return {
        key: mcc(adata.obsm["Z_true"][test], adata.obsm[key][test])  # key_added names the obsm entry too
        for key in ("one", "two", "binary", "binary_baseline")
    }


def test_two_targets_identify_at_least_as_well_as_one(identified):
    # measured (seed 0): one target 0.744, two targets 0.899
    assert identified["two"] >= identified["one"] - 0.02, identified
    assert identified["two"] >= 0.85, identified


def test_binary_target_identifies_the_latents(identified):
    # measured (seed 0): TBR with the logistic loss 0.742, the baseline 0.293
    assert identified["binary"] >= identified["binary_baseline"] + 0.25, identified
    assert identified["binary"] >= 0.65, identified
