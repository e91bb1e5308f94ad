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

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.model._basis import refine_basis
from sctbr.model._basis_log import log_refine
from sctbr.model._data import batch_from

#: Cells per forward pass when reading a trained model.
BATCH_SIZE = 8192
#: Largest number of head parameters ``(1 + latents) * (1 + arcs)`` whose exact re-solve :func:`refine_final` runs
#: (its Gram matrix is dense: 3 000 parameters take 72 MB).
MAX_RESOLVE = 3000


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
    parent_index = np.asarray(tree.parent_index)
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


def least_squares_heads(
    module, tree, environments, data: dict, idx: np.ndarray, z: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unpenalised heads of the cells ``idx``: per environment, least squares of the standardised target on ``[1, z]``.

    Returns ``(heads, observed)``: heads ``(targets, nodes, latents)`` (0 at nodes without enough cells) and the mask of
    nodes with more cells than ``latents + 1``. Unlike the module's own heads after the sparsify phase, these are
    not shrunk towards the current basis, so the refinement can compare bases on equal terms. ``z``: the latents of
    ``idx`` when the caller has them already.
    """
    idx = np.asarray(idx)
    z = encode(module, data, idx).astype(np.float64) if z is None else np.asarray(z, dtype=np.float64)
    y = data[Y_KEY][idx].numpy().astype(np.float64).reshape(len(idx), -1)
    y = (y - module.y_mean.cpu().numpy()) / module.y_std.cpu().numpy()
    env = data[ENV_KEY][idx].numpy().reshape(-1)
    node_of = tree.node_index([environments[i] for i in range(len(environments))])
    d = z.shape[1]
    heads = np.zeros((y.shape[1], tree.n_nodes, d))
    observed = np.zeros(tree.n_nodes, dtype=bool)
    for e in np.unique(env):
        rows = env == e
        if rows.sum() <= d + 1:
            continue
        coef = np.linalg.lstsq(np.column_stack([np.ones(rows.sum()), z[rows]]), y[rows], rcond=None)[0]
        heads[:, node_of[e]] = coef[1:].T
        observed[node_of[e]] = True
    return heads, observed


@torch.no_grad()
def refine_final(
    module,
    tree,
    environments,
    data: dict,
    idx: np.ndarray,
    train_idx: np.ndarray,
    random_state: int,
    objective: str = "l1",
) -> dict:
    """The basis refinement after training, on unpenalised heads, then the heads solved exactly in the new basis.

    The sparsify phase shrinks the module's heads towards sparsity *in the current basis*, so refining on them keeps
    that basis (measured: no change). Here the basis is chosen on :func:`least_squares_heads` of the cells ``idx``
    instead, and the module's own heads are mapped exactly (``W -> W M^-T``: every prediction unchanged). With one
    target and the l1 penalty, the heads are then re-solved for the training objective with the latents fixed
    (mean squared error on ``train_idx`` + ``lam * ||Delta||_1``, a lasso in ``(bias, w0, Delta)`` solved by
    :mod:`~sctbr._heads_lasso`), which restores the exact zeros of ``Delta`` in the new basis; trees with more
    than ``MAX_RESOLVE`` head parameters keep the mapped heads.

    ``objective="log"`` (one target): the l1 basis is then compared with a search of a log penalty
    (:func:`~sctbr.model._basis_log.log_refine`), which replaces it when clearly sparser; the summary's
    ``log_ratio`` is the ratio of their log values and ``log_switched`` whether it did.
    """
    z = encode(module, data, idx).astype(np.float64)
    heads, observed = least_squares_heads(module, tree, environments, data, idx, z=z)
    corr = np.atleast_2d(np.corrcoef(z.T))
    parent_index = np.asarray(tree.parent_index)
    m, _, value, start_value = refine_basis(
        heads if module.n_targets > 1 else heads[0],
        parent_index,
        observed,
        corr,
        penalty=module.penalty,
        log_eps=module.log_eps,
        random_state=random_state,
    )
    search = {}
    if objective == "log" and module.n_targets == 1:
        m_log, ratio = log_refine(heads[0], parent_index, observed, corr, m, random_state=random_state)
        search = {"log_ratio": ratio, "log_switched": m_log is not m}
        m = m_log
    inv_t = np.linalg.inv(m).T
    n_targets, d = int(module.n_targets), int(module.n_latent)
    w0 = module.w0.detach().cpu().numpy().astype(np.float64).reshape(n_targets, d)
    delta = module.delta.detach().cpu().numpy().astype(np.float64).reshape(-1, n_targets, d)
    module.apply_basis(m, w0 @ inv_t, delta @ inv_t)
    resolved = n_targets == 1 and module.penalty == "l1" and (1 + d) * (1 + delta.shape[0]) <= MAX_RESOLVE
    if resolved:
        _resolve_heads(module, tree, environments, data, np.asarray(train_idx))
    return {
        "penalty_before": float(start_value),
        "penalty_after": float(value),
        "basis": m,
        "resolved": resolved,
        **search,
    }


def _resolve_heads(module, tree, environments, data: dict, idx: np.ndarray) -> None:
    """Set ``(bias, w0, Delta)`` to the exact minimiser of the training objective with the latents fixed."""
    from sctbr import _heads_lasso as hl

    z = encode(module, data, idx).astype(np.float64)
    y = (data[Y_KEY][idx].numpy().astype(np.float64).reshape(-1) - float(module.y_mean)) / float(module.y_std)
    env = data[ENV_KEY][idx].numpy().reshape(-1)
    path = tree.path_matrix(list(environments), dtype=np.float64)
    prob = hl.Problem(hl.moments(z, y, env, path))
    start = np.concatenate(
        [
            module.bias.detach().cpu().numpy(),
            module.w0.detach().cpu().numpy(),
            module.delta.detach().cpu().numpy().ravel(),
        ]
    ).astype(np.float64)
    # the module minimises mean((pred - y)^2) + lam * |Delta|_1; the lasso solves (1/2n) sum (pred - y)^2 + lam' |.|_1
    root, delta = prob.split(prob.solve(module.lam / 2.0, start=start))
    device, dtype = module.w0.device, module.w0.dtype
    module.bias.copy_(torch.as_tensor(root[:1], dtype=dtype, device=device))
    module.w0.copy_(torch.as_tensor(root[1:], dtype=dtype, device=device))
    module.delta.copy_(torch.as_tensor(delta, dtype=dtype, device=device).reshape(module.delta.shape))
