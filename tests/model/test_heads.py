"""One implementation of the node heads and of the latent encoding (:mod:`sctbr.model._heads`)."""

from __future__ import annotations

import numpy as np
import pytest

from sctbr.model import TBR

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def trained(make_adata, torch_single_thread, fast_model_kwargs, fast_train_kwargs):
    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], **fast_model_kwargs)
    model.train(**fast_train_kwargs)
    return model


@pytest.mark.parametrize("targets", [["y"], ["y", "y2"]])
def test_node_heads_are_written_once(make_adata, fast_model_kwargs, monkeypatch, targets):
    """Every reader of the heads ``w0 + P @ Delta`` (weights table, transfer, basis refinement) uses ``node_heads``,
    and the training forward pass (sparse product or gathered arcs) gives the same heads for the environments."""
    import torch

    import sctbr.model._heads as heads_module
    from sctbr.model._heads import node_heads
    from sctbr.model._module import _padded_paths

    adata = make_adata()
    adata.obs["y2"] = 2.0 * adata.obs["y"] + 1.0
    TBR.setup_anndata(adata, target=targets if len(targets) > 1 else targets[0], groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], **fast_model_kwargs)
    m, tree = model.module, model.tree
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.w0.copy_(torch.randn(m.w0.shape, generator=gen))
        m.delta.copy_(torch.randn(m.delta.shape, generator=gen))
    heads = node_heads(m, tree)
    n_t, d = len(targets), m.n_latent
    assert heads.shape == (tree.n_nodes, n_t, d)
    rows = tree.node_index(model.environments_)
    np.testing.assert_allclose(m.env_weights().detach().numpy().reshape(-1, n_t, d), heads[rows], atol=1e-5)
    z, env = torch.randn(len(rows), d, generator=gen), torch.arange(len(rows))
    bias = m.bias.detach().numpy().astype(np.float64)
    expected = np.einsum("nd,ntd->nt", z.numpy().astype(np.float64), heads[rows]) + bias
    with torch.no_grad():
        product = m.generative(z, env)["y_std_pred"].numpy().reshape(-1, n_t)
        m.path_index, m.path_value = _padded_paths(tree.path_matrix(model.environments_))
        m.gather_heads = True
        gathered = m.generative(z, env)["y_std_pred"].numpy().reshape(-1, n_t)
    np.testing.assert_allclose(product, expected, atol=1e-5)
    np.testing.assert_allclose(gathered, expected, atol=1e-5)
    scale = m.y_std.detach().numpy().astype(np.float64)
    for t, name in enumerate(model.targets_):
        np.testing.assert_array_equal(model.get_environment_weights(target=name).to_numpy(), heads[:, t] * scale[t])
    np.testing.assert_array_equal(model._tree_heads(), heads)

    seen = {}

    def capture(node_w, *args, **kwargs):
        seen["heads"] = node_w
        raise RuntimeError("captured")

    monkeypatch.setattr(heads_module, "refine_basis", capture)
    with pytest.raises(RuntimeError, match="captured"):
        model._refine(model._arrays(adata), np.arange(adata.n_obs), 0)
    np.testing.assert_array_equal(seen["heads"], heads[:, 0] if n_t == 1 else heads.transpose(1, 0, 2))


def test_one_encoding_loop(trained):
    """Latents through the registry, of an AnnData read without registering it (transfer, also for some rows and
    other gene orders), and of the refinement's and lambda path's loop agree with the encoder on all cells."""
    import anndata as ad
    import torch

    from sctbr.model._heads import encode

    model = trained
    adata = model.adata
    registry = model.get_latent_representation()
    with torch.no_grad():
        model.module.eval()
        direct = model.module.inference(torch.as_tensor(np.asarray(adata.X, dtype=np.float32)))["z"].numpy()
    np.testing.assert_allclose(registry, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(encode(model.module, model._arrays(adata, with_target=False)), registry)
    reordered = ad.AnnData(X=np.asarray(adata.X)[:, ::-1].copy(), var=adata.var.iloc[::-1].copy())
    np.testing.assert_allclose(model._encode(reordered, batch_size=7), registry, rtol=1e-5, atol=1e-6)
    rows = np.array([1, 3, 5, 40])
    np.testing.assert_allclose(model._encode(reordered, rows=rows), registry[rows], rtol=1e-5, atol=1e-6)
    # the per-cell losses of the lambda path come from the same loop and the same heads as predict
    y = adata.obs["y"].to_numpy(dtype=np.float64)
    std = float(model.module.y_std.reshape(-1)[0])
    losses = model._cell_losses(model._arrays(adata), np.arange(adata.n_obs))
    np.testing.assert_allclose(losses, ((model.predict() - y) / std) ** 2, rtol=1e-4, atol=1e-6)


def test_least_squares_heads_are_per_environment_regressions_on_the_named_nodes(trained):
    """Each observed node's head is the least-squares fit of the standardised target on ``[1, z]`` of that node's own
    cells (matched by name, not by the order of the categories); nodes without cells stay unobserved."""
    from sctbr.model._heads import least_squares_heads

    model = trained
    adata = model.adata
    cells = np.arange(adata.n_obs)
    heads, observed = least_squares_heads(model.module, model.tree, model.environments_, model._arrays(adata), cells)
    z = model.get_latent_representation().astype(np.float64)
    y = adata.obs["y"].to_numpy(dtype=np.float64)
    y = (y - float(model.module.y_mean)) / float(model.module.y_std)
    names = adata.obs["environment"].astype(str).to_numpy()
    nodes = list(model.tree.nodes)
    assert heads.shape == (1, len(nodes), z.shape[1])
    assert sorted(np.asarray(nodes)[observed]) == sorted(set(names))
    for name in set(names):
        rows = names == name
        coef = np.linalg.lstsq(np.column_stack([np.ones(rows.sum()), z[rows]]), y[rows], rcond=None)[0]
        np.testing.assert_allclose(heads[0, nodes.index(name)], coef[1:], rtol=1e-6, atol=1e-8)
    assert (heads[0, ~observed] == 0).all()


@pytest.mark.parametrize("penalty", ["l1", "log"])
def test_final_refinement_moves_only_the_basis(make_adata, fast_model_kwargs, penalty):
    """``refine_final`` maps the latents by the refinement's ``M``. With the log penalty the heads are only mapped
    (predictions unchanged); with l1 they are re-solved exactly (a lasso with the latents fixed), which cannot raise
    the training objective above that of the mapped heads, and gives exact zeros where the mapped heads have none."""
    from sctbr import _heads_lasso as hl
    from sctbr.model._heads import encode, refine_final

    adata = make_adata()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], penalty=penalty, lam=0.05, **fast_model_kwargs)
    model.train(max_epochs=3, accelerator="cpu", enable_progress_bar=False, final_refine=False)
    data, cells = model._arrays(adata), np.arange(adata.n_obs)
    module = model.module
    z_before, pred_before = encode(module, data), model.predict()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    y = (adata.obs["y"].to_numpy(dtype=np.float64) - float(module.y_mean)) / float(module.y_std)
    env = model.tree.node_index(adata.obs["environment"].astype(str))
    env = np.searchsorted(model.tree.node_index(model.environments_), env)  # rows of the path matrix below
    path = model.tree.path_matrix(list(model.environments_), dtype=np.float64)

    def objective():
        """The training objective (halved, as the lasso writes it) of the module's heads on all cells."""
        prob = hl.Problem(hl.moments(encode(module, data), y, env, path))
        theta = np.concatenate([t.detach().numpy().ravel() for t in (module.bias, module.w0, module.delta)])
        theta = theta.astype(np.float64)
        fit = 0.5 * theta @ prob.g @ theta - prob.c @ theta
        return fit + module.lam / 2 * np.abs(theta[prob.d1 :]).sum()

    out = refine_final(module, model.tree, model.environments_, data, cells, cells, 0)
    m = out["basis"]
    assert not np.allclose(m, np.eye(m.shape[0]))
    np.testing.assert_allclose(encode(module, data), z_before @ m, rtol=1e-4, atol=1e-4)
    assert out["resolved"] == (penalty == "l1")
    if penalty == "log":
        np.testing.assert_allclose(model.predict(), pred_before, rtol=1e-4, atol=1e-4)
        return
    resolved, resolved_zeros = objective(), int((module.delta == 0).sum())
    module.load_state_dict(state)  # now the mapped heads alone: the same basis, no re-solve
    inv_t = np.linalg.inv(m).T
    w0 = module.w0.detach().numpy().astype(np.float64).reshape(1, -1) @ inv_t
    module.apply_basis(m, w0, module.delta.detach().numpy().astype(np.float64) @ inv_t)
    np.testing.assert_allclose(model.predict(), pred_before, rtol=1e-4, atol=1e-4)
    assert resolved <= objective() + 1e-9
    assert resolved_zeros > int((module.delta == 0).sum())
