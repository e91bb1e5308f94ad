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
