"""The heads of the tree's nodes and the loop over cells: each written once for every reader of a trained model.

* :func:`node_heads`: the standardised head ``w0 + P @ Delta`` of every node of a tree (``P`` its path matrix),
  read by :meth:`~sctbr.model.TBR.get_environment_weights`, the basis refinement and transfer
  (:class:`~sctbr.model._transfer.TransferMixin`). The training forward pass
  (:meth:`~sctbr.model.TBRModule.generative`) computes the same heads for the environments in torch;
  ``tests/model/test_heads.py`` checks that they agree.
* :func:`map_batches` / :func:`encode`: the module applied to the cells of the arrays of
  :func:`~sctbr.model._data.prepare_arrays` batch by batch. The arrays come from the scvi-tools registry
  (:meth:`~sctbr.model.TBR.get_latent_representation`, :meth:`~sctbr.model.TBR.predict`, the refinement, the
  lambda path's scores) or, for cells of environments the registry does not know, from the AnnData's inputs read
  without registering it (transfer).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sctbr._constants import ENV_KEY, X_KEY
from sctbr.model._basis import refine_basis
from sctbr.model._data import batch_from

#: Cells per forward pass when reading a trained model.
BATCH_SIZE = 8192


def node_heads(module, tree) -> np.ndarray:
    """Standardised heads ``w0 + P @ Delta`` of every node of ``tree``, shape ``(nodes, targets, latents)``.

    ``tree`` has the module's arcs (the model's tree); the baseline's heads are ``w0`` everywhere.
    """
    n_targets, d = int(module.n_targets), int(module.n_latent)
    with torch.no_grad():
        w0 = module.w0.detach().cpu().numpy().astype(np.float64).reshape(-1)
        delta = module.delta.detach().cpu().numpy().astype(np.float64)
    heads = np.repeat(w0[None, :], tree.n_nodes, axis=0)
    if not module.baseline:
        heads = heads + np.asarray(tree.path_matrix() @ delta.reshape(delta.shape[0], -1))
    return heads.reshape(tree.n_nodes, n_targets, d)


def map_batches(
    module,
    data: dict,
    fn: Callable[[dict], torch.Tensor],
    idx: np.ndarray | None = None,
    batch_size: int = BATCH_SIZE,
    empty: tuple[int, ...] = (0,),
) -> np.ndarray:
    """``fn`` of every batch of the cells ``idx`` (default: all) of ``data``, in eval mode, concatenated."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    module.eval()
    device = next(module.parameters()).device
    idx = torch.arange(data[ENV_KEY].shape[0]) if idx is None else torch.as_tensor(np.asarray(idx, dtype=np.int64))
    out = []
    with torch.inference_mode():
        for start in range(0, len(idx), batch_size):
            batch = {k: v.to(device) for k, v in batch_from(data, idx[start : start + batch_size]).items()}
            out.append(fn(batch).detach().cpu().numpy())
    return np.concatenate(out) if out else np.empty(empty)


def encode(module, data: dict, idx: np.ndarray | None = None, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Latents (cells x latents, float32) of the cells ``idx`` (default: all) of ``data``."""
    return map_batches(
        module, data, lambda b: module.inference(b[X_KEY])["z"], idx, batch_size, empty=(0, module.n_latent)
    )


@torch.no_grad()
def refine_module(module, tree, environments, data: dict, train_idx: np.ndarray, random_state: int) -> dict:
    """The basis refinement of a trained module, in place: latents to the basis with the sparsest arc changes.

    The latents of the training cells give their correlation, :func:`node_heads` the heads, and
    :func:`~sctbr.model.refine_basis` the map, folded into the module by ``apply_basis`` (unobserved heads too).
    Environments without training cells (e.g. unused categories) have free heads, like internal nodes.
    """
    z = encode(module, data, train_idx).astype(np.float64)
    corr = np.atleast_2d(np.corrcoef(z.T))
    parent_index = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs], dtype=int)
    present = np.unique(data[ENV_KEY].numpy()[np.asarray(train_idx)])
    observed = np.isin(np.asarray(tree.nodes), [environments[i] for i in present])
    # (targets x nodes x latents); a single target keeps the 2-D form
    node_w = np.ascontiguousarray(node_heads(module, tree).transpose(1, 0, 2))
    if module.n_targets == 1:
        node_w = node_w[0]
    m, v, value, start_value = refine_basis(
        node_w, parent_index, observed, corr, penalty=module.penalty, log_eps=module.log_eps, random_state=random_state
    )
    if module.n_targets == 1:
        module.apply_basis(m, v[0], v[1:] - v[parent_index[1:]])
    else:
        module.apply_basis(m, v[:, 0], (v[:, 1:] - v[:, parent_index[1:]]).transpose(1, 0, 2))
    return {"penalty_before": float(start_value), "penalty_after": float(value), "basis": m}
