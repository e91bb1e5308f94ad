"""The user's verbs: ``sctbr.tl.tbr`` and ``sctbr.tl.baseline`` (validate, :func:`~sctbr.tl.fit`, write)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

from anndata import AnnData

from sctbr._constants import BASELINE_KEY, TBR_KEY, result_keys
from sctbr._docs import doc_params
from sctbr.model import DEFAULT_LAM
from sctbr.tl._core import fit


def warn_unused_directions(spectrum: dict | None, uns_key: str) -> None:
    """Warn when the cell types' heads leave latent directions unused (:func:`sctbr.metrics.heads_spectrum`)."""
    if spectrum is None or spectrum["used"] >= len(spectrum["values"]):
        return
    used, d = int(spectrum["used"]), len(spectrum["values"])
    shown = ", ".join(f"{v:.3g}" for v in spectrum["values"])
    warnings.warn(
        f"The target uses only {used} of the {d} latent directions: the heads of the cell types, on whitened "
        f"latents, have singular values {shown} (relative to the largest), and {d - used} of them {'lies' if d - used == 1 else 'lie'} below the "
        f"noise level of the heads' estimates ({spectrum['noise']:.3g}; uns[{uns_key!r}]['heads_spectrum']). Those "
        f"directions cannot be identified (a latent the target does not use, or one the encoder did not learn), and "
        f"they can mix into the others. Refit with n_latent={max(used, 1)}, or compare numbers of latents with "
        "sctbr.tl.select_n_latent.",
        UserWarning,
        stacklevel=4,  # the user's call of tl.tbr
    )


def _run(adata: AnnData, *, key_added: str | None, default: str, copy: bool, return_model: bool, **fit_args):
    """Validate, fit, then write: the user's AnnData is written only after training succeeded."""
    result_keys(key_added, default)  # a bad key_added fails before the fit
    if copy and adata.isbacked:
        raise ValueError(
            "copy=True on a backed AnnData would need a new file (anndata copies backed objects only to a filename). "
            "Use copy=False: the results go to the object's in-memory annotations (obsm, obs, uns; save them with "
            "adata.write_h5ad(new_path)), or load it first with adata.to_memory()."
        )
    result = fit(adata, **fit_args)
    out = adata.copy() if copy else adata
    result.write(out, key_added, default=default)
    warn_unused_directions(result.heads_spectrum, result_keys(key_added, default).uns)
    if return_model:
        return (out, result.model) if copy else result.model
    return out if copy else None


@doc_params(
    "tbr_data",
    "tbr_tree",
    "tbr_model",
    "tbr_inputs",
    "tbr_key_added",
    "tbr_training",
    "tbr_restarts",
    "tbr_device",
    "tbr_seed",
)
def tbr(
    adata: AnnData,
    *,
    target: str | Sequence[str] | None = None,
    groupby: str | None = None,
    tree: Any = None,
    n_latent: int = 5,
    lam: float | Literal["auto"] = DEFAULT_LAM,
    loss: Literal["auto", "mse", "logistic"] | Sequence[str] = "auto",
    penalty: Literal["l1", "log"] = "l1",
    hidden: Sequence[int] = (256, 64),
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    key_added: str | None = None,
    max_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    train_size: float = 0.8,
    validation_size: float = 0.2,
    n_restarts: int = 1,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    random_state: int = 0,
    copy: bool = False,
    return_model: bool = False,
    **train_kwargs,
):
    """Fit Tree-Based Regularization and write identifiable latents into ``adata``.

    Learns latents ``Z`` from the inputs with a shared encoder, and one linear head per environment that
    changes sparsely along the tree's arcs (``lam * ||Delta||_1``, handled by proximal steps that give exact
    zeros). The latents are identified up to permutation and scaling when the changes are sparse.

    Parameters
    ----------
    {tbr_data}
    {tbr_tree}
    {tbr_model}
    {tbr_inputs}
    {tbr_key_added}
    {tbr_training}
    {tbr_restarts}
    {tbr_device}
    {tbr_seed}
    copy
        Return a copy instead of writing into ``adata``.
    return_model
        Also return the trained :class:`~sctbr.model.TBR`.
    **train_kwargs
        Passed to :meth:`sctbr.model.TBR.train` (e.g. ``enable_progress_bar=False``, ``plan_kwargs``,
        ``lam_grid``, or ``final_objective="log"``: a search of an l0-like penalty after the final refinement,
        for trees of up to 64 environments; :doc:`/cells_needed`).

    Returns
    -------
    ``None`` (or the copy with ``copy=True``); the model when ``return_model=True`` (``(adata, model)`` with
    ``copy=True``). Writes (names for ``key_added=None``; see ``key_added``) ``obsm["X_tbr"]`` (cells x n_latent),
    ``obs["tbr_prediction"]`` (the probability of the second level for a binary target), ``obs["tbr_split"]``
    (categorical: the train/validation/test label of each cell) and ``uns["tbr"]`` with ``params`` (``lam`` is the
    lambda used, the chosen one with ``lam="auto"``), ``obsm_key`` (where the latents are), ``environment_weights``
    (tree nodes x latents), ``deltas`` (arcs x latents), ``history`` (losses by epoch), ``tree``, ``lam_path`` (with
    ``lam="auto"``: the path's scores, one row per lambda), ``levels`` (the two levels of each
    boolean/categorical target) and ``heads_spectrum`` (:func:`sctbr.metrics.heads_spectrum`: ``values``, the
    singular values of the cell types' heads on whitened latents, ``noise``, their noise level, and ``used``, how
    many lie above it; a warning says when a latent direction is unused, which the tree cannot identify). With several targets, predictions go to ``obs[f"tbr_prediction_{target}"]`` and
    ``environment_weights`` and ``deltas`` are dicts of frames keyed by target.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, random_state=0)
    >>> sctbr.tl.tbr(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    >>> adata.obsm["X_tbr"].shape  # doctest: +SKIP
    (1400, 5)
    """
    return _run(
        adata,
        key_added=key_added,
        default=TBR_KEY,
        copy=copy,
        return_model=return_model,
        baseline=False,
        target=target,
        groupby=groupby,
        tree=tree,
        n_latent=n_latent,
        lam=lam,
        loss=loss,
        penalty=penalty,
        hidden=hidden,
        var_names=var_names,
        layer=layer,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=batch_size,
        train_size=train_size,
        validation_size=validation_size,
        n_restarts=n_restarts,
        accelerator=accelerator,
        devices=devices,
        random_state=random_state,
        train_kwargs=train_kwargs,
    )


@doc_params("tbr_key_added")
def baseline(
    adata: AnnData,
    *,
    target: str | Sequence[str] | None = None,
    groupby: str | None = None,
    n_latent: int = 5,
    loss: Literal["auto", "mse", "logistic"] | Sequence[str] = "auto",
    hidden: Sequence[int] = (256, 64),
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    key_added: str | None = None,
    max_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    train_size: float = 0.8,
    validation_size: float = 0.2,
    n_restarts: int = 1,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    random_state: int = 0,
    copy: bool = False,
    return_model: bool = False,
    **train_kwargs,
):
    """Fit the paper's baseline: the same encoder with one linear head shared by every environment.

    Without the tree's sparse changes nothing singles out a basis of the latents, so they are identified only up to
    an invertible linear map: the comparison that shows what the tree buys.

    Parameters
    ----------
    adata
        Cells x inputs. Left untouched if anything fails.
    target
        Column(s) of ``adata.obs`` to predict, as in :func:`sctbr.tl.tbr` (defaults to the target sctbr recorded).
    groupby
        Optional column of ``adata.obs``; only stratifies the train/validation split by environment.
    loss
        As in :func:`sctbr.tl.tbr`.
    n_latent, hidden, var_names, layer, max_epochs, lr, batch_size, train_size, validation_size, n_restarts
        As in :func:`sctbr.tl.tbr`.
    {tbr_key_added}
    accelerator, devices, random_state, copy, return_model
        As in :func:`sctbr.tl.tbr`.
    **train_kwargs
        Passed to :meth:`sctbr.model.TBR.train`.

    Returns
    -------
    As :func:`sctbr.tl.tbr`; with ``key_added=None`` writes ``obsm["X_baseline"]``, ``obs["baseline_prediction"]``,
    ``obs["baseline_split"]`` and ``uns["baseline"]``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, random_state=0)
    >>> sctbr.tl.baseline(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    """
    return _run(
        adata,
        key_added=key_added,
        default=BASELINE_KEY,
        copy=copy,
        return_model=return_model,
        baseline=True,
        target=target,
        groupby=groupby,
        tree=None,
        n_latent=n_latent,
        lam=0.0,
        loss=loss,
        penalty="l1",
        hidden=hidden,
        var_names=var_names,
        layer=layer,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=batch_size,
        train_size=train_size,
        validation_size=validation_size,
        n_restarts=n_restarts,
        accelerator=accelerator,
        devices=devices,
        random_state=random_state,
        train_kwargs=train_kwargs,
    )
