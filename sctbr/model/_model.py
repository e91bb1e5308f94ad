"""The TBR model class in the scvi-tools ``BaseModelClass`` pattern."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalObsField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from sctbr._tree import EnvironmentTree
from sctbr.model._basis import refine_basis
from sctbr.model._data import TBRDataModule, batch_from, prepare_arrays
from sctbr.model._module import ENV_KEY, X_KEY, Y_KEY, TBRModule
from sctbr.model._trainingplan import TBRTrainingPlan

#: Default learning rate, epochs and batch size of :meth:`TBR.train` (chosen on simulations; see the docs).
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 128


def _max_epochs_heuristic(n_obs: int) -> int:
    """About 300 epochs for 10^4 cells, fewer for large data (at least 20 000 steps, at most 300 epochs)."""
    steps_per_epoch = max(1, n_obs * 0.8 / DEFAULT_BATCH_SIZE)
    return int(np.clip(np.ceil(20_000 / steps_per_epoch), 20, 300))


def check_inputs(x, what: str = "inputs") -> None:
    """Raise a clear error for NaN or infinite inputs."""
    values = x.data if sp.issparse(x) else np.asarray(x)
    if values.size and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(
            f"The {what} contain {bad} NaN or infinite values. Impute or drop them (e.g. "
            "np.nan_to_num, or filter cells) before fitting."
        )


class TBR(BaseModelClass):
    """Tree-Based Regularization: identifiable latents from environments linked by a tree.

    A shared MLP encoder maps inputs to ``n_latent`` standardised latents; each environment predicts the
    target with a linear head ``w_e = w_0 + sum of Delta_a over the arcs a on the path from the root to e``,
    and ``lam * ||Delta||_1`` keeps the changes sparse, which identifies the latents up to permutation and
    scaling.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`TBR.setup_anndata`.
    tree
        The environment tree (anything :meth:`sctbr.EnvironmentTree.coerce` accepts). Every category of the
        registered ``groupby`` column must be a node (leaf or internal).
    n_latent
        Number of latents.
    hidden
        Hidden layer widths of the encoder.
    lam
        Sparsity weight on ``Delta`` relative to the standardised target's variance (the data's scale does not
        change what a given ``lam`` means).
    baseline
        Fit the paper's baseline instead: one head shared by all environments.
    penalty
        ``"l1"`` or ``"log"`` (l0-like, by iteratively reweighted l1).
    proximal
        Use proximal (soft-threshold) steps for the penalty, which give exact zeros in ``Delta``.
    random_state
        Seed of the weight initialisation (training takes its own seed).

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, random_state=0)
    >>> sctbr.model.TBR.setup_anndata(adata, target="y", groupby="environment")
    >>> model = sctbr.model.TBR(adata, tree=adata.uns["environment_tree"], n_latent=5)
    >>> model.train(max_epochs=5)  # doctest: +SKIP
    """

    _module_cls = TBRModule
    _training_plan_cls = TBRTrainingPlan
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: AnnData,
        tree=None,
        n_latent: int = 5,
        hidden: Sequence[int] = (256, 64),
        lam: float = 1e-3,
        baseline: bool = False,
        penalty: Literal["l1", "log"] = "l1",
        proximal: bool = True,
        random_state: int = 0,
    ):
        super().__init__(adata)
        categories = list(self.adata_manager.get_state_registry(ENV_KEY).categorical_mapping)
        if baseline and tree is None:
            tree_obj = EnvironmentTree({"root": None, **{str(c): "root" for c in categories if str(c) != "root"}})
        else:
            if tree is None:
                raise ValueError("`tree` is required for TBR (pass baseline=True for the tree-free baseline).")
            tree_obj = EnvironmentTree.coerce(tree)
        missing = [c for c in categories if str(c) not in tree_obj]
        if missing:
            raise ValueError(
                f"{len(missing)} environments of the groupby column are not nodes of the tree: "
                f"{missing[:10]}. Use a tree whose nodes include every category (e.g. sctbr.pp.environment_tree)."
            )
        if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
            raise ValueError(f"`n_latent` must be a positive integer, got {n_latent!r}.")
        if lam < 0:
            raise ValueError(f"`lam` must be non-negative, got {lam}.")
        if penalty not in ("l1", "log"):
            raise ValueError(f"`penalty` must be 'l1' or 'log', got {penalty!r}.")
        self.tree = tree_obj
        self.environments_ = [str(c) for c in categories]
        tree = {"nodes": list(tree_obj.nodes), "parents": [tree_obj.parent(n) or "" for n in tree_obj.nodes]}
        torch.manual_seed(int(random_state))
        self.module = self._module_cls(
            self._n_inputs(),
            int(n_latent),
            tree_obj.path_matrix(self.environments_),
            hidden=tuple(int(h) for h in hidden),
            lam=float(lam),
            baseline=bool(baseline),
            penalty=penalty,
            proximal=bool(proximal),
        )
        self._model_summary_string = (
            f"{'Baseline' if baseline else 'TBR'} model: n_latent={n_latent}, hidden={tuple(hidden)}, lam={lam}, "
            f"penalty={penalty}, {len(self.environments_)} environments on a tree of {tree_obj.n_nodes} nodes"
        )
        self.init_params_ = self._get_init_params(locals())

    # -- registration -----------------------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        target: str,
        groupby: str,
        layer: str | None = None,
        var_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Register the inputs, target and environment column of an AnnData.

        Parameters
        ----------
        adata
            Cells x inputs (e.g. transcription factors); dense or sparse.
        target
            Numeric column of ``adata.obs`` to predict.
        groupby
            Categorical column of ``adata.obs`` with each cell's environment (a node of the tree).
        layer
            Layer with the inputs; ``None`` uses ``adata.X``.
        var_names
            Subset of ``adata.var_names`` to use as inputs; ``None`` uses all.
        """
        _check_setup(adata, target, groupby, layer, var_names)
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(X_KEY, layer, is_count_data=False),
            NumericalObsField(Y_KEY, target),
            CategoricalObsField(ENV_KEY, groupby),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _n_inputs(self) -> int:
        var_names = self.registry_["setup_args"].get("var_names")
        return len(var_names) if var_names is not None else int(self.summary_stats.n_vars)

    def _input_columns(self, adata: AnnData) -> np.ndarray | None:
        var_names = self.registry_["setup_args"].get("var_names")
        if var_names is None:
            return None
        return adata.var_names.get_indexer(list(var_names))

    def _arrays(self, adata: AnnData, with_target: bool = True) -> dict:
        manager = self.get_anndata_manager(adata, required=True)
        x = manager.get_from_registry(X_KEY)
        cols = self._input_columns(adata)
        if cols is not None:
            if (cols < 0).any():
                raise ValueError("Some registered `var_names` are missing from this AnnData.")
            x = x[:, cols]
        if hasattr(x, "to_memory"):
            x = x.to_memory()
        check_inputs(x)
        y = np.asarray(manager.get_from_registry(Y_KEY)).reshape(-1) if with_target else None
        env = np.asarray(manager.get_from_registry(ENV_KEY)).reshape(-1)
        return prepare_arrays(x, y, env)

    # -- training ---------------------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float = DEFAULT_LR,
        batch_size: int = DEFAULT_BATCH_SIZE,
        train_size: float = 0.8,
        validation_size: float = 0.2,
        refine: bool = True,
        fit_fraction: float = 0.7,
        sparsify_lr_factor: float = 0.3,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        random_state: int = 0,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train through Lightning (GPU when present, CPU otherwise) in three stages.

        1. **Fit**: ``fit_fraction`` of the epochs minimise the prediction error alone (Adam, cosine decay).
        2. **Basis refinement**: the prediction term is unchanged by any invertible linear map of the latents
           (and by the heads of unobserved nodes); the penalty is not. :func:`~sctbr.model.refine_basis`
           minimises the penalty over these maps from many starts, and the result is written into the encoder's
           last layer and the heads. This is an exact descent step on the TBR objective along directions that
           gradient steps cross only slowly.
        3. **Sparsify**: the remaining epochs minimise error + ``lam * penalty`` with proximal (soft-threshold)
           steps, at ``sparsify_lr_factor * lr``, giving exact zeros in ``Delta``.

        With ``refine=False`` and ``fit_fraction=0`` this is the paper's plain recipe (penalised training from
        the start). The baseline has no tree: it runs stage 1 only, for all epochs.

        Parameters
        ----------
        max_epochs
            Epochs in all; ``None`` picks about 20 000 optimiser steps, at most 300 epochs.
        lr
            Initial learning rate of stage 1 (cosine decay to 5% of it within each stage).
        batch_size
            Cells per batch.
        train_size, validation_size
            Fractions of every environment's cells for training and validation (stratified); the rest is a
            test set, in ``model.test_indices``.
        refine
            Run stage 2.
        fit_fraction
            Fraction of the epochs spent in stage 1.
        sparsify_lr_factor
            Learning rate of stage 3 relative to ``lr``.
        accelerator, devices
            As in Lightning / scvi-tools.
        early_stopping
            Stop a stage when the validation objective stops improving (``early_stopping_patience`` etc. can be
            passed as keyword arguments).
        random_state
            Seed of the split, the batch order and the refinement's starts.
        plan_kwargs
            Keyword arguments of :class:`~sctbr.model.TBRTrainingPlan`.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (a Lightning ``Trainer``).
        """
        if not 0 <= fit_fraction <= 1:
            raise ValueError(f"`fit_fraction` must lie in [0, 1], got {fit_fraction}.")
        data = self._arrays(self.adata)
        datamodule = TBRDataModule(
            data,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            random_state=random_state,
            env_names=self.environments_,
        )
        y_train = data[Y_KEY][datamodule.train_idx]
        self.module.set_target_scale(float(y_train.mean()), float(y_train.std()))
        if max_epochs is None:
            max_epochs = _max_epochs_heuristic(self.adata.n_obs)
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        if validation_size == 0:
            trainer_kwargs["limit_val_batches"] = 0
        else:
            # scvi-tools' Trainer validates only with early stopping unless told otherwise
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        common = {"accelerator": accelerator, "devices": devices, "early_stopping": early_stopping, **trainer_kwargs}

        tree_model = not self.module.baseline
        n_fit = max_epochs if not tree_model else int(round(fit_fraction * max_epochs))
        n_sparse = max_epochs - n_fit
        lam = self.module.lam
        torch.manual_seed(int(random_state))
        if n_fit > 0:
            self.module.lam = 0.0
            try:
                self._run_stage(datamodule, n_fit, lr, plan_kwargs, common, stage="fit")
            finally:
                self.module.lam = lam
        if tree_model and refine:
            self.refinement_ = self._refine(data, datamodule.train_idx, random_state)
        if n_sparse > 0:
            stage_lr = lr * (sparsify_lr_factor if n_fit > 0 else 1.0)
            self._run_stage(datamodule, n_sparse, stage_lr, plan_kwargs, common, stage="sparsify")
        if not self._finite():
            self.is_trained_ = False
            raise FloatingPointError(
                "Training diverged (NaN or infinite weights). Lower the learning rate (e.g. lr=1e-3), check that "
                "the inputs are scaled (log-normalised expression, not raw counts), or reduce `lam`."
            )

    def _run_stage(self, datamodule, epochs: int, lr: float, plan_kwargs, common: dict, stage: str) -> None:
        kwargs = dict(plan_kwargs or {})
        kwargs.setdefault("lr", lr)
        kwargs.setdefault("max_epochs", epochs)
        plan = self._training_plan_cls(self.module, **kwargs)
        runner = self._train_runner_cls(self, training_plan=plan, data_splitter=datamodule, max_epochs=epochs, **common)
        runner()

    @torch.no_grad()
    def _refine(self, data: dict, train_idx: np.ndarray, random_state: int) -> dict:
        """Stage 2: move the latents to the basis (and unobserved heads to the values) with the sparsest changes."""
        module = self.module
        module.eval()
        device = next(module.parameters()).device
        idx = torch.as_tensor(train_idx)
        z = []
        for start in range(0, len(idx), 8192):
            b = batch_from(data, idx[start : start + 8192])
            z.append(module.inference(b[X_KEY].to(device))["z"].cpu().numpy())
        z = np.concatenate(z).astype(np.float64)
        corr = np.atleast_2d(np.corrcoef(z.T))
        tree = self.tree
        parent_index = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs], dtype=int)
        observed = np.isin(np.asarray(tree.nodes), self.environments_)
        w0 = module.w0.detach().cpu().numpy().astype(np.float64)
        delta = module.delta.detach().cpu().numpy().astype(np.float64)
        node_w = w0[None, :] + np.asarray(tree.path_matrix() @ delta)
        m, v, value, start_value = refine_basis(
            node_w,
            parent_index,
            observed,
            corr,
            penalty=module.penalty,
            log_eps=module.log_eps,
            random_state=random_state,
        )
        module.apply_basis(m, v[0], v[1:] - v[parent_index[1:]])
        return {"penalty_before": float(start_value), "penalty_after": float(value), "basis": m}

    def _finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.module.parameters())

    # -- outputs ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self, adata: AnnData | None, what: str, batch_size: int = 8192) -> np.ndarray:
        adata = self._validate_anndata(adata)
        data = self._arrays(adata, with_target=False)
        self.module.eval()
        device = next(self.module.parameters()).device
        out = []
        n = data[ENV_KEY].shape[0]
        for start in range(0, n, batch_size):
            b = batch_from(data, torch.arange(start, min(n, start + batch_size)))
            x, env = b[X_KEY].to(device), b[ENV_KEY].to(device)
            if what == "latent":
                out.append(self.module.inference(x)["z"].cpu().numpy())
            else:
                out.append(self.module.predict_target(x, env).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0,))

    def get_latent_representation(self, adata: AnnData | None = None, batch_size: int = 8192) -> np.ndarray:
        """Standardised latents (cells x n_latent) of ``adata`` (default: the training AnnData)."""
        self._check_if_trained(warn=False)
        return self._run(adata, "latent", batch_size)

    def predict(self, adata: AnnData | None = None, batch_size: int = 8192) -> np.ndarray:
        """Predicted target of every cell, from its environment's head, on the target's original scale."""
        self._check_if_trained(warn=False)
        return self._run(adata, "predict", batch_size)

    def get_environment_weights(self) -> pd.DataFrame:
        """Head of every tree node (internal nodes included), in target units per standard deviation of a latent."""
        m = self.module
        with torch.no_grad():
            w0 = m.w0.cpu().numpy().astype(np.float64)
            delta = m.delta.cpu().numpy().astype(np.float64)
            scale = float(m.y_std.cpu())
        if m.baseline:
            delta = np.zeros_like(delta)
            weights = np.repeat(w0[None, :], self.tree.n_nodes, axis=0)
        else:
            # the tree may be larger than the arcs known to the module only for the baseline; here they agree
            weights = w0[None, :] + np.asarray(self.tree.path_matrix() @ delta)
        return pd.DataFrame(weights * scale, index=list(self.tree.nodes), columns=self._latent_names())

    def get_deltas(self) -> pd.DataFrame:
        """Change of the head along every arc (arcs x latents), exact zeros where nothing changed."""
        with torch.no_grad():
            delta = self.module.delta.cpu().numpy().astype(np.float64) * float(self.module.y_std.cpu())
        if self.module.baseline:
            delta = np.zeros((self.tree.n_arcs, self.module.n_latent))
        return pd.DataFrame(delta, index=list(self.tree.arc_labels), columns=self._latent_names())

    def _latent_names(self) -> list[str]:
        return [f"latent_{i}" for i in range(self.module.n_latent)]


def _check_setup(
    adata: AnnData, target: str, groupby: str | None, layer: str | None, var_names, *, require_groupby: bool = True
) -> None:
    """Clear errors for bad registrations, raised before anything is written into ``adata``."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} inputs).")
    if target is None:
        raise ValueError("`target` is required: the name of a numeric column of adata.obs.")
    if target not in adata.obs:
        raise KeyError(f"Target {target!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    y = adata.obs[target]
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        raise TypeError(f"Target {target!r} must be numeric, got dtype {y.dtype}. Convert it with .astype(float).")
    yv = y.to_numpy(dtype=float)
    if not np.isfinite(yv).all():
        raise ValueError(
            f"Target {target!r} has {int((~np.isfinite(yv)).sum())} NaN or infinite values; drop those cells first."
        )
    if np.nanstd(yv) == 0:
        raise ValueError(f"Target {target!r} is constant; there is nothing to predict.")
    if groupby is None:
        if require_groupby:
            raise ValueError("`groupby` is required: the categorical column of adata.obs with each cell's environment.")
    elif groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    elif adata.obs[groupby].isna().any():
        raise ValueError(f"groupby {groupby!r} has missing values; every cell needs an environment.")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; available layers: {list(adata.layers.keys())}.")
    if var_names is not None:
        var_names = list(var_names)
        missing = [v for v in var_names if v not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} `var_names` are not in adata.var_names: {missing[:10]}.")
        if len(var_names) == 0:
            raise ValueError("`var_names` is empty.")
