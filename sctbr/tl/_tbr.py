"""The user's verbs: ``sctbr.tl.tbr`` and ``sctbr.tl.baseline``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._constants import BASELINE_KEY, TBR_KEY, TREE_KEY, latents_key, prediction_key
from sctbr._tree import EnvironmentTree
from sctbr._utils import recorded_default
from sctbr._validation import as_targets, binary_target, check_setup, label_levels
from sctbr.model import DEFAULT_BATCH_SIZE, DEFAULT_LAM, DEFAULT_LR, TBR, read_columns

_BASELINE_GROUP = "_all_cells"


def _resolve_tree(adata: AnnData, tree: Any) -> tuple[EnvironmentTree, str | None]:
    """Return the tree and the groupby it recorded (if any)."""
    if tree is None:
        key = recorded_default(adata, "tree_key") or TREE_KEY
        if key not in adata.uns:
            raise ValueError(
                "No environment tree given and none stored in adata.uns. Build one with "
                "sctbr.pp.environment_tree(adata, groupby=...) or pass `tree=` (a key of adata.uns, a child->parent "
                "mapping, a Newick string, a networkx DiGraph or an EnvironmentTree)."
            )
        tree = key
    if isinstance(tree, str) and tree not in adata.uns and not any(ch in tree for ch in "(;,"):
        raise ValueError(
            f"Tree {tree!r} is neither a key of adata.uns (keys: {list(adata.uns.keys())[:10]}) nor a Newick string. "
            "Pass the key sctbr.pp.environment_tree stored the tree under, or a Newick string ending in ';'."
        )
    if isinstance(tree, str) and tree in adata.uns:
        stored = adata.uns[tree]
        groupby = stored.get("groupby") if hasattr(stored, "get") else None
        return EnvironmentTree.coerce(dict(stored)), (str(groupby) if groupby is not None else None)
    return EnvironmentTree.coerce(tree), None


def _target_columns(target) -> list[str]:
    """Columns of the working AnnData holding the target(s): ``y`` for one, ``y0``, ``y1``, ... for several."""
    targets = as_targets(target)
    return ["y"] if len(targets) == 1 else [f"y{i}" for i in range(len(targets))]


def _working_anndata(adata: AnnData, target, groupby: str | None, layer: str | None, var_names) -> AnnData:
    """A light AnnData holding only what the model needs; the user's object is never registered or modified.

    Boolean and two-level targets become 0/1 (1 = the second level); several targets go to columns ``y0``, ``y1``...
    """
    x = adata.layers[layer] if layer is not None else adata.X
    names = adata.var_names
    if var_names is not None:
        cols = adata.var_names.get_indexer(list(var_names))
        # an on-disk matrix (backed AnnData) is read block by block, only the selected columns
        x = read_columns(x, cols)
        names = adata.var_names[cols]
    columns = {
        col: binary_target(adata, name)[0]
        for col, name in zip(_target_columns(target), as_targets(target), strict=True)
    }
    obs = pd.DataFrame(columns, index=adata.obs_names.copy())
    if groupby is None:
        obs["env"] = pd.Categorical([_BASELINE_GROUP] * adata.n_obs)
    else:
        col = adata.obs[groupby]
        obs["env"] = col.astype(str).astype("category") if not isinstance(col.dtype, pd.CategoricalDtype) else col
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = AnnData(X=x, obs=obs, var=pd.DataFrame(index=names.copy()))
    return work


def _fit(
    adata: AnnData,
    *,
    baseline: bool,
    target: str | None,
    groupby: str | None,
    tree: Any,
    n_latent: int,
    lam: float | str,
    loss,
    penalty: str,
    hidden: Sequence[int],
    var_names,
    layer: str | None,
    key_added: str,
    max_epochs: int | None,
    lr: float,
    batch_size: int,
    train_size: float,
    validation_size: float,
    n_restarts: int,
    accelerator: str,
    devices,
    random_state: int,
    copy: bool,
    return_model: bool,
    train_kwargs: dict,
):
    # 1. Resolve every argument and validate, before any long work and without touching `adata`.
    if target is None:
        target = recorded_default(adata, "target")
        if target is None:
            raise ValueError(
                "`target` is missing: pass target='<obs column>' (the phenotype to predict). It defaults to what "
                "sctbr's simulators and semisynthetic() recorded, and this AnnData has no such record."
            )
    tree_obj = None
    if not baseline:
        tree_obj, tree_groupby = _resolve_tree(adata, tree)
        if groupby is None:
            groupby = tree_groupby or recorded_default(adata, "groupby")
        if groupby is None:
            raise ValueError(
                "`groupby` is missing: pass groupby='<obs column>' with each cell's environment (cell type). It "
                "defaults to the column the stored environment tree was built from, and none was recorded."
            )
    elif groupby is None:
        groupby = recorded_default(adata, "groupby") if recorded_default(adata, "groupby") in adata.obs else None
    if not isinstance(n_restarts, (int, np.integer)) or n_restarts < 1:
        raise ValueError(f"`n_restarts` must be a positive integer, got {n_restarts!r}.")
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise ValueError(f"`n_latent` must be a positive integer, got {n_latent!r}.")
    check_setup(adata, target, groupby, layer, var_names, require_groupby=not baseline, allow_labels=True)
    if copy and adata.isbacked:
        raise ValueError(
            "copy=True on a backed AnnData would need a new file (anndata copies backed objects only to a filename). "
            "Use copy=False: the results go to the object's in-memory annotations (obsm, obs, uns; save them with "
            "adata.write_h5ad(new_path)), or load it first with adata.to_memory()."
        )
    if isinstance(lam, str) and lam != "auto":
        raise ValueError(f"`lam` must be a non-negative number or 'auto', got {lam!r}.")
    targets = as_targets(target)
    multi = len(targets) > 1
    if groupby is not None and not baseline:
        envs = pd.unique(adata.obs[groupby].astype(str))
        missing = [e for e in envs if e not in tree_obj]
        if missing:
            raise ValueError(
                f"{len(missing)} environments in adata.obs[{groupby!r}] are not nodes of the tree: {missing[:10]}. "
                "Pass the matching tree, or subset the cells to the tree's environments."
            )

    # 2. Fit (restarts scored on the penalised validation objective), on a private AnnData.
    work = _working_anndata(adata, target, groupby, layer, var_names)
    work_targets = _target_columns(target)
    TBR.setup_anndata(work, target=work_targets if multi else "y", groupby="env")
    best, best_score, scores = None, np.inf, []
    for r in range(n_restarts):
        seed = int(random_state) + 1000 * r
        model = TBR(
            work,
            tree=tree_obj,
            n_latent=int(n_latent),
            hidden=hidden,
            lam=lam if isinstance(lam, str) else float(lam),
            baseline=baseline,
            penalty=penalty,
            random_state=seed,
            loss=loss,
        )
        model.train(
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            train_size=train_size,
            validation_size=validation_size,
            accelerator=accelerator,
            devices=devices,
            random_state=int(random_state),
            **train_kwargs,
        )
        hist = model.history.get("validation_loss")
        if model.lam_path_ is not None:  # lam="auto": the penalised validation objective at the chosen lambda
            path = model.lam_path_
            score = float(path.loc[path["selected"], "validation_objective"].iloc[0])
        elif hist is not None and len(hist):
            score = float(hist.iloc[-1, 0])
        else:
            score = float(model.history["train_loss"].iloc[-1, 0])
        scores.append(score)
        if score < best_score:
            best, best_score = model, score
    model = best

    # 3. Write results only after training succeeded.
    z = model.get_latent_representation()
    pred = model.predict()
    out = adata.copy() if copy else adata
    out.obsm[latents_key(key_added)] = z.astype(np.float32)
    if multi:
        for j, name in enumerate(targets):
            out.obs[f"{key_added}_prediction_{name}"] = pred[:, j].astype(np.float64)
    else:
        out.obs[prediction_key(key_added)] = pred.astype(np.float64)
    history = _history_frame(model.history)
    # per-target results: one frame for a single target (as before), {target: frame} for several
    by_target = {name: model.targets_[j] for j, name in enumerate(targets)}
    if multi:
        weights = {name: model.get_environment_weights(col) for name, col in by_target.items()}
        deltas = {name: model.get_deltas(col) for name, col in by_target.items()}
    else:
        weights, deltas = model.get_environment_weights(), model.get_deltas()
    levels = {}
    for name in targets:
        found = label_levels(adata.obs[name])
        if found is not None:
            levels[name] = np.asarray([str(v) for v in found], dtype=str)
    out.uns[key_added] = {
        "params": {
            "method": "baseline" if baseline else "tbr",
            "target": np.asarray(targets, dtype=str) if multi else targets[0],
            "groupby": groupby if groupby is not None else "",
            "n_latent": int(n_latent),
            "lam": float(model.lam_),
            "lam_auto": bool(isinstance(lam, str)),
            "loss": np.asarray(model.losses_, dtype=str) if multi else model.losses_[0],
            "penalty": penalty,
            "hidden": np.asarray(hidden, dtype=int),
            "layer": layer if layer is not None else "",
            "max_epochs": int(len(history)),
            "lr": float(lr),
            "batch_size": int(batch_size),
            "train_size": float(train_size),
            "validation_size": float(validation_size),
            "n_restarts": int(n_restarts),
            "random_state": int(random_state),
        },
        "var_names": np.asarray(work.var_names, dtype=str),
        "environment_weights": weights,
        "deltas": deltas,
        "tree": model.tree.to_dict(),
        "history": history,
        "restart_scores": np.asarray(scores, dtype=float),
        "split": _split_labels(model, adata.n_obs),
    }
    if levels:
        # the two levels of each boolean / categorical target: the prediction is the probability of the second
        out.uns[key_added]["levels"] = levels
    if model.lam_path_ is not None:
        out.uns[key_added]["lam_path"] = model.lam_path_.copy()
    if return_model:
        return (out, model) if copy else model
    return out if copy else None


def _history_frame(history: dict) -> pd.DataFrame:
    """One float column per logged metric, one row per epoch (h5ad-writable)."""
    cols = {key: pd.to_numeric(df.iloc[:, 0].map(float), errors="coerce") for key, df in history.items()}
    frame = pd.DataFrame(cols)
    frame.index = pd.Index(frame.index.astype(int).astype(str), name="epoch")
    return frame


def _split_labels(model: TBR, n: int) -> np.ndarray:
    labels = np.full(n, "test", dtype=object)
    labels[np.asarray(model.train_indices, dtype=int)] = "train"
    if model.validation_indices is not None:
        labels[np.asarray(model.validation_indices, dtype=int)] = "validation"
    return labels.astype(str)


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
    key_added: str = TBR_KEY,
    max_epochs: int | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
    adata
        Cells x inputs (e.g. transcription-factor expression). Left untouched if anything fails.
    target
        Column of ``adata.obs`` to predict: numeric, or binary (boolean, 0/1 or a two-level categorical, fitted with
        the logistic loss; a categorical with more levels raises an error). A list of columns fits one head tree
        per target on shared latents (losses and penalties add). Defaults to the target recorded by sctbr's
        simulators.
    groupby
        Categorical column of ``adata.obs`` with each cell's environment. Defaults to the column the stored
        tree was built from.
    tree
        A key of ``adata.uns``, a child->parent mapping, a Newick string, a networkx DiGraph or an
        :class:`~sctbr.EnvironmentTree`. ``None`` uses the tree stored by :func:`sctbr.pp.environment_tree`
        (or a simulator).
    n_latent
        Number of latents.
    lam
        Sparsity weight on the arc changes, relative to the standardised target's variance, or ``"auto"``: fit a
        warm-started path of values (``lam_grid``, default 1e-4 to 1e-1) and keep the largest whose validation
        error is within one standard error of the path's best (the lasso's one-standard-error rule; see
        :meth:`sctbr.model.TBR.train`). On simulations it took about 1.6x the time of a fixed-lambda fit and did
        not beat the default 1e-3 on MCC (slightly lower at k = 1); see docs/training.md.
    loss
        ``"auto"`` (logistic for a binary target, squared error otherwise), ``"mse"`` or ``"logistic"``; with
        several targets, one value for all or one per target.
    penalty
        ``"l1"``, or ``"log"`` for an l0-like penalty minimised by iteratively reweighted l1.
    hidden
        Hidden layer widths of the encoder.
    var_names
        Subset of ``adata.var_names`` to use as inputs.
    layer
        Layer with the inputs (default ``adata.X``).
    key_added
        Results go to ``obsm[f"X_{key_added}"]``, ``obs[f"{key_added}_prediction"]`` and ``uns[key_added]``.
    max_epochs
        Epochs; ``None`` picks about 20 000 optimiser steps (at most 300 epochs).
    lr
        Initial learning rate of Adam (cosine decay).
    batch_size
        Cells per batch.
    train_size, validation_size
        Fractions of every environment's cells for training and validation.
    n_restarts
        Fits from different initialisations; the one with the lowest penalised validation objective is kept.
    accelerator, devices
        Lightning's device selection (``"auto"``: GPU when present).
    random_state
        Seed of initialisation, split and batch order; the same seed gives the same latents on CPU.
    copy
        Return a copy instead of writing into ``adata``.
    return_model
        Also return the trained :class:`~sctbr.model.TBR`.
    **train_kwargs
        Passed to :meth:`sctbr.model.TBR.train` (e.g. ``enable_progress_bar=False``, ``plan_kwargs``,
        ``lam_grid``).

    Returns
    -------
    ``None`` (or the copy with ``copy=True``); the model when ``return_model=True`` (``(adata, model)`` with
    ``copy=True``). Writes ``obsm["X_tbr"]`` (cells x n_latent), ``obs["tbr_prediction"]`` (the probability of
    the second level for a binary target) and ``uns["tbr"]`` with ``params`` (``lam`` is the lambda used, the
    chosen one with ``lam="auto"``), ``environment_weights`` (tree nodes x latents), ``deltas`` (arcs x latents),
    ``history`` (losses by epoch), ``tree``, ``split`` (train/validation/test label of each cell), ``lam_path``
    (with ``lam="auto"``: the path's scores, one row per lambda) and ``levels`` (the two levels of each
    boolean/categorical target). With several targets, predictions go to ``obs[f"tbr_prediction_{target}"]`` and
    ``environment_weights`` and ``deltas`` are dicts of frames keyed by target.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, random_state=0)
    >>> sctbr.tl.tbr(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    >>> adata.obsm["X_tbr"].shape  # doctest: +SKIP
    (1400, 5)
    """
    return _fit(
        adata,
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
        key_added=key_added,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=batch_size,
        train_size=train_size,
        validation_size=validation_size,
        n_restarts=n_restarts,
        accelerator=accelerator,
        devices=devices,
        random_state=random_state,
        copy=copy,
        return_model=return_model,
        train_kwargs=train_kwargs,
    )


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
    key_added: str = BASELINE_KEY,
    max_epochs: int | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
    key_added
        Results go to ``obsm[f"X_{key_added}"]``, ``obs[f"{key_added}_prediction"]`` and ``uns[key_added]``.
    accelerator, devices, random_state, copy, return_model
        As in :func:`sctbr.tl.tbr`.
    **train_kwargs
        Passed to :meth:`sctbr.model.TBR.train`.

    Returns
    -------
    As :func:`sctbr.tl.tbr`; writes ``obsm["X_baseline"]``, ``obs["baseline_prediction"]`` and ``uns["baseline"]``.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, random_state=0)
    >>> sctbr.tl.baseline(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    """
    return _fit(
        adata,
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
        key_added=key_added,
        max_epochs=max_epochs,
        lr=lr,
        batch_size=batch_size,
        train_size=train_size,
        validation_size=validation_size,
        n_restarts=n_restarts,
        accelerator=accelerator,
        devices=devices,
        random_state=random_state,
        copy=copy,
        return_model=return_model,
        train_kwargs=train_kwargs,
    )
