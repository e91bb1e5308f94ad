"""The fit core: validate, build the private AnnData, train (with restarts) and return a :class:`FitResult`.

Nothing here writes into the user's AnnData; :mod:`sctbr.tl._write` is the one writer, used by ``tl.tbr`` and
``tl.baseline``. ``select_n_latent``, ``stability`` and ``sctbr.experiments`` call :func:`fit` directly.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._constants import TREE_KEY
from sctbr._docs import doc_params
from sctbr._tree import EnvironmentTree
from sctbr._utils import recorded_default
from sctbr._validation import (
    as_targets,
    binary_target,
    check_int,
    check_model_args,
    check_setup,
    check_train_args,
    label_levels,
)
from sctbr.metrics import heads_spectrum
from sctbr.model import DEFAULT_LAM, TBR, read_columns
from sctbr.tl._support import Changes, estimate_changes
from sctbr.tl._write import write_result

#: TBR.train arguments that tl passes through ``train_kwargs`` and checks up front.
_TRAIN_CHECKED = (
    "fit_fraction",
    "sparsify_lr_factor",
    "lam_grid",
    "path_epochs",
    "refine",
    "final_refine",
    "final_objective",
    "early_stopping",
)
_BASELINE_GROUP = "_all_cells"


@dataclass
class FitResult:
    """What one fit returns, before anything is written: the model and every output ``tl.tbr`` writes.

    Attributes
    ----------
    model
        The trained :class:`~sctbr.model.TBR` (the best restart).
    targets
        The target column(s) of the fit.
    latents
        Cells x latents (float32), written to ``obsm["X_tbr"]`` (``obsm[key_added]`` with a ``key_added``).
    prediction
        Predicted target of every cell (cells, or cells x targets with several), written to ``obs["tbr_prediction"]``.
    y
        The target as the model saw it (0/1 for a binary target), same shape as ``prediction``.
    split
        ``"train"``, ``"validation"`` or ``"test"`` for every cell, written to ``obs["tbr_split"]`` (categorical).
    history
        Losses by epoch (one float column per logged metric).
    restart_scores
        The penalised validation objective of every restart.
    lam_path
        With ``lam="auto"``: one row per lambda of the path; ``None`` otherwise.
    environment_weights, deltas
        Heads of the tree nodes and changes along the arcs (dicts of frames keyed by target with several targets).
    levels
        The two levels of each boolean/categorical target.
    params
        The resolved parameters, as written to ``uns["tbr"]["params"]``.
    var_names
        The inputs, in the encoder's order.
    changes
        Which latent changed on which arc, with confidence (:func:`sctbr.tl._support.estimate_changes`), written
        to ``uns["tbr"]["changes"]``; ``None`` for the baseline, several or binary targets, or ``changes=False``.
    heads_spectrum
        How many latent directions the target uses (:func:`sctbr.metrics.heads_spectrum` of the latents on all
        cells): ``values`` (the singular values, relative to the largest), ``noise`` (their noise level) and
        ``used`` (how many lie above it), written to ``uns["tbr"]["heads_spectrum"]``; ``None`` for the baseline
        and binary targets.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=50, random_state=0)
    >>> result = sctbr.tl.fit(adata, max_epochs=5, train_kwargs={"enable_progress_bar": False})  # doctest: +SKIP
    >>> result.latents.shape  # doctest: +SKIP
    (300, 5)
    >>> result.write(adata)  # doctest: +SKIP
    """

    model: TBR
    targets: list[str]
    latents: np.ndarray
    prediction: np.ndarray
    y: np.ndarray
    split: np.ndarray
    history: pd.DataFrame
    restart_scores: np.ndarray
    lam_path: pd.DataFrame | None
    environment_weights: pd.DataFrame | dict
    deltas: pd.DataFrame | dict
    levels: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    var_names: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))
    changes: Changes | None = None
    heads_spectrum: dict | None = None

    def split_mse(self, which: str) -> float:
        """Mean squared error of the prediction on the cells of one split (NaN without such cells)."""
        mask = self.split == which
        if not mask.any():
            return float("nan")
        return float(np.mean((self.prediction[mask] - self.y[mask]) ** 2))

    def write(self, adata: AnnData, key_added: str | None = None, *, default: str | None = None) -> None:
        """Write the results into ``adata`` as ``sctbr.tl.tbr`` does (``obsm``, ``obs`` and ``uns``).

        ``key_added`` follows scanpy (see :func:`sctbr.tl.tbr`): ``None`` writes ``obsm[f"X_{default}"]`` and
        ``uns[default]`` (``default``: the method, ``"tbr"`` or ``"baseline"``), a name writes ``obsm[key_added]``
        and ``uns[key_added]``; the ``obs`` columns take the ``uns`` key as their stem.
        """
        write_result(adata, self, key_added, default)


def _target_columns(target) -> list[str]:
    """Columns of the working AnnData holding the target(s): ``y`` for one, ``y0``, ``y1``, ... for several."""
    targets = as_targets(target)
    return ["y"] if len(targets) == 1 else [f"y{i}" for i in range(len(targets))]


def working_anndata(adata: AnnData, target, groupby: str | None, layer: str | None, var_names) -> AnnData:
    """A light AnnData holding only what the model needs; the user's object is never registered or modified.

    Boolean and two-level targets become 0/1 (1 = the second level); several targets go to columns ``y0``, ``y1``...
    The environment column is ``env`` (one group of all cells without ``groupby``).
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


def resolve_tree(adata: AnnData, tree: Any) -> tuple[EnvironmentTree, str | None]:
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


def tree_and_groupby(adata: AnnData, tree: Any, groupby: str | None) -> tuple[EnvironmentTree, str]:
    """The tree and the environment column: ``groupby``, else the column the tree or sctbr recorded."""
    tree_obj, tree_groupby = resolve_tree(adata, tree)
    if groupby is None:
        groupby = tree_groupby or recorded_default(adata, "groupby")
    if groupby is None:
        raise ValueError(
            "`groupby` is missing: pass groupby='<obs column>' with each cell's environment (cell type). It "
            "defaults to the column the stored environment tree was built from, and none was recorded."
        )
    return tree_obj, groupby


def environments_in_tree(adata: AnnData, groupby: str, tree: EnvironmentTree) -> np.ndarray:
    """The distinct environments of ``adata.obs[groupby]``, each checked to be a node of ``tree``."""
    envs = pd.unique(adata.obs[groupby].astype(str))
    missing = [e for e in envs if e not in tree]
    if missing:
        raise ValueError(
            f"{len(missing)} environments in adata.obs[{groupby!r}] are not nodes of the tree: {missing[:10]}. "
            "Pass the matching tree, or subset the cells to the tree's environments."
        )
    return envs


def _resolve(adata, *, baseline, target, groupby, tree, n_latent, lam, n_restarts, layer, var_names):
    """Resolve the defaults and validate every argument, before any long work and without touching ``adata``."""
    if target is None:
        target = recorded_default(adata, "target")
        if target is None:
            raise ValueError(
                "`target` is missing: pass target='<obs column>' (the phenotype to predict). It defaults to what "
                "sctbr's simulators and semisynthetic() recorded, and this AnnData has no such record."
            )
    tree_obj = None
    if not baseline:
        tree_obj, groupby = tree_and_groupby(adata, tree, groupby)
    elif groupby is None:
        groupby = recorded_default(adata, "groupby") if recorded_default(adata, "groupby") in adata.obs else None
    if not isinstance(n_restarts, (int, np.integer)) or n_restarts < 1:
        raise ValueError(f"`n_restarts` must be a positive integer, got {n_restarts!r}.")
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise ValueError(f"`n_latent` must be a positive integer, got {n_latent!r}.")
    check_setup(adata, target, groupby, layer, var_names, require_groupby=not baseline, allow_labels=True)
    if isinstance(lam, str) and lam != "auto":
        raise ValueError(f"`lam` must be a non-negative number or 'auto', got {lam!r}.")
    if groupby is not None and not baseline:
        environments_in_tree(adata, groupby, tree_obj)
    return target, groupby, tree_obj


def _restart_score(model: TBR) -> float:
    """The penalised validation objective (at the chosen lambda with ``lam="auto"``), else the last loss."""
    hist = model.history.get("validation_loss")
    if model.lam_path_ is not None:
        path = model.lam_path_
        return float(path.loc[path["selected"], "validation_objective"].iloc[0])
    if hist is not None and len(hist):
        return float(hist.iloc[-1, 0])
    return float(model.history["train_loss"].iloc[-1, 0])


@doc_params("tbr_data", "tbr_tree", "tbr_model", "tbr_inputs", "tbr_training", "tbr_restarts", "tbr_device", "tbr_seed")
def fit(
    adata: AnnData,
    *,
    baseline: bool = False,
    target: str | Sequence[str] | None = None,
    groupby: str | None = None,
    tree: Any = None,
    n_latent: int = 5,
    lam: float | str = DEFAULT_LAM,
    loss: str | Sequence[str] = "auto",
    penalty: str = "l1",
    hidden: Sequence[int] = (256, 64),
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    max_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    train_size: float = 0.8,
    validation_size: float = 0.2,
    n_restarts: int = 1,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    random_state: int = 0,
    train_kwargs: Mapping[str, Any] | None = None,
    changes: bool = True,
) -> FitResult:
    """Fit TBR (or the baseline) and return the results without writing anything into ``adata``.

    The core of :func:`sctbr.tl.tbr` and :func:`sctbr.tl.baseline`, which call it and then write the
    :class:`FitResult` into the AnnData (:meth:`FitResult.write`). Use it to fit many times (model selection,
    stability) without touching the user's object.

    Parameters
    ----------
    {tbr_data}
    baseline
        Fit the baseline (one head shared by every environment; ``tree``, ``lam`` and ``penalty`` are ignored)
        instead of TBR.
    {tbr_tree}
    {tbr_model}
    {tbr_inputs}
    {tbr_training}
    {tbr_restarts}
    {tbr_device}
    {tbr_seed}
    train_kwargs
        Passed to :meth:`sctbr.model.TBR.train` (e.g. ``{"enable_progress_bar": False}``).
    changes
        Estimate which latent changed on which arc after training (:attr:`FitResult.changes`; a few seconds).

    Returns
    -------
    The :class:`FitResult` of the best restart.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=2, n_obs_per_env=50, random_state=0)
    >>> result = sctbr.tl.fit(adata, max_epochs=5, train_kwargs={"enable_progress_bar": False})  # doctest: +SKIP
    >>> result.split_mse("validation")  # doctest: +SKIP
    """
    train_kwargs = dict(train_kwargs or {})
    check_model_args(
        n_latent=n_latent, hidden=hidden, lam=0.0 if baseline else lam, baseline=baseline,
        penalty="l1" if baseline else penalty, proximal=True, random_state=random_state, loss=loss,
    )  # fmt: skip
    check_int("n_restarts", n_restarts, fix="The number of fits from different seeds, e.g. 1 or 3.")
    check_train_args(
        max_epochs=max_epochs, lr=lr, batch_size=batch_size, train_size=train_size,
        validation_size=validation_size, random_state=random_state,
        **{k: train_kwargs[k] for k in _TRAIN_CHECKED if k in train_kwargs},
    )  # fmt: skip
    if baseline:
        tree, lam, penalty = None, 0.0, "l1"
    target, groupby, tree_obj = _resolve(
        adata,
        baseline=baseline,
        target=target,
        groupby=groupby,
        tree=tree,
        n_latent=n_latent,
        lam=lam,
        n_restarts=n_restarts,
        layer=layer,
        var_names=var_names,
    )
    targets = as_targets(target)
    multi = len(targets) > 1

    # restarts scored on the penalised validation objective, on a private AnnData
    work = working_anndata(adata, target, groupby, layer, var_names)
    TBR.setup_anndata(work, target=_target_columns(target) if multi else "y", groupby="env")
    best, best_score, scores = None, np.inf, []
    for r in range(n_restarts):
        model = TBR(
            work,
            tree=tree_obj,
            n_latent=int(n_latent),
            hidden=hidden,
            lam=lam if isinstance(lam, str) else float(lam),
            baseline=baseline,
            penalty=penalty,
            random_state=int(random_state) + 1000 * r,
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
        score = _restart_score(model)
        scores.append(score)
        if score < best_score:
            best, best_score = model, score
    model = best

    history = _history_frame(model.history)
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
    cols = _target_columns(target)
    y = work.obs[cols].to_numpy(dtype=np.float64) if multi else work.obs["y"].to_numpy(dtype=np.float64)
    params = {
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
        "lr": float(model.lr_),
        "batch_size": int(model.batch_size_),
        "num_threads": int(model.num_threads_),
        "train_size": float(train_size),
        "validation_size": float(validation_size),
        "n_restarts": int(n_restarts),
        "random_state": int(random_state),
    }
    latents = model.get_latent_representation().astype(np.float32)
    split = _split_labels(model, adata.n_obs)
    found = None
    if changes and not baseline and not multi and model.losses_[0] != "logistic":
        found = estimate_changes(
            latents, y, work.obs["env"].astype(str).to_numpy(), model.tree, split, random_state=int(random_state)
        )
    model.changes_ = found
    spectrum = None
    if not baseline and "logistic" not in model.losses_:
        env = work.obs["env"].astype(str).to_numpy()
        values, noise = heads_spectrum(latents, y, env, return_noise=True, noise_cells=split != "train")
        spectrum = {"values": values, "noise": float(noise), "used": int(np.sum(values > noise))}
    return FitResult(
        model=model,
        targets=targets,
        latents=latents,
        prediction=np.asarray(model.predict(), dtype=np.float64),
        y=y,
        split=split,
        history=history,
        restart_scores=np.asarray(scores, dtype=float),
        lam_path=model.lam_path_.copy() if model.lam_path_ is not None else None,
        environment_weights=weights,
        deltas=deltas,
        levels=levels,
        params=params,
        var_names=np.asarray(work.var_names, dtype=str),
        changes=found,
        heads_spectrum=spectrum,
    )


def split_fit_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split ``tl.tbr``-style keyword arguments into :func:`fit`'s own and the rest (for ``TBR.train``)."""
    own = set(inspect.signature(fit).parameters) - {"adata", "baseline", "train_kwargs"}
    return {k: v for k, v in kwargs.items() if k in own}, {k: v for k, v in kwargs.items() if k not in own}


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
