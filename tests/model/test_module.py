"""The module :class:`sctbr.model.TBRModule`: its heads on large trees."""

from __future__ import annotations

import pytest

import sctbr

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_gathered_heads_equal_the_sparse_product_on_large_trees():
    """Trees with many environments gather each batch's heads from its path's arcs: same heads, same gradients."""
    import torch

    from sctbr.model import TBRModule
    from sctbr.model._module import GATHER_MIN_ENVIRONMENTS

    tree = sctbr.datasets.random_tree(GATHER_MIN_ENVIRONMENTS + 50, random_state=0)
    paths = tree.path_matrix(list(tree.leaves))
    torch.manual_seed(0)
    module = TBRModule(6, 3, paths, lam=1e-3)
    assert module.gather_heads
    with torch.no_grad():
        module.delta.normal_()
    env = torch.randint(paths.shape[0], (200,))
    z = torch.randn(200, 3)
    gathered = module.generative(z, env)["y_std_pred"]
    module.delta.grad = None
    gathered.sum().backward()
    grad_gathered = module.delta.grad.clone()
    module.gather_heads = False
    full = module.generative(z, env)["y_std_pred"]
    module.delta.grad = None
    full.sum().backward()
    torch.testing.assert_close(gathered, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_gathered, module.delta.grad, rtol=1e-5, atol=1e-5)
    assert grad_gathered.abs().sum() > 0
