"""The TBR model class in the scvi-tools ``BaseModelClass`` pattern."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalJointObsField, NumericalObsField
from scvi.model.base import BaseModelClass

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr._tree import EnvironmentTree
from sctbr._utils import torch_threads
from sctbr._validation import as_targets as _as_targets
from sctbr._validation import check_model_args as _check_model_args
from sctbr._validation import check_setup as _check_setup
from sctbr._validation import check_train_args as _check_train_args
from sctbr.model import _checkpoint as ckpt
from sctbr.model._basis_log import check_log_environments
from sctbr.model._data import TBRDataModule, prepare_arrays
from sctbr.model._heads import refine_final, refine_module
from sctbr.model._lam_path import check_lam_grid, select
from sctbr.model._module import TBRModule, resolve_losses
from sctbr.model._outputs import OutputsMixin
from sctbr.model._phases import PhaseWork, plan_phases, wire_trainer
from sctbr.model._policy import max_epochs_for
from sctbr.model._policy import resolve as _resolve_policy
from sctbr.model._quiet import QuietTrainRunner
from sctbr.model._threads import fit_threads
from sctbr.model._trainingplan import TBRTrainingPlan
from sctbr.model._transfer import TransferMixin

#: Default sparsity weight (relative to the standardised target's variance), chosen on simulations.
DEFAULT_LAM = 1e-3


class TBR(OutputsMixin, TransferMixin, BaseModelClass):
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
        change what a given ``lam`` means), or ``"auto"``: :meth:`train` fits a warm-started path of values and
        keeps the largest whose validation error is within one standard error of the path's best (see
        :meth:`train`).
    baseline
        Fit the paper's baseline instead: one head shared by all environments.
    penalty
        ``"l1"`` or ``"log"`` (l0-like, by iteratively reweighted l1).
    proximal
        Use proximal (soft-threshold) steps for the penalty, which give exact zeros in ``Delta``.
    random_state
        Seed of the weight initialisation (training takes its own seed).
    loss
        ``"mse"`` (squared error on the standardised target), ``"logistic"`` (a binary 0/1 target: the heads
        predict log-odds, :meth:`predict` returns probabilities), or ``"auto"``: logistic for a target whose values
        are all 0 or 1, squared error otherwise. With several targets, one value for all or one per target.

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
    _train_runner_cls = QuietTrainRunner

    def __init__(
        self,
        adata: AnnData,
        tree=None,
        n_latent: int = 5,
        hidden: Sequence[int] = (256, 64),
        lam: float | Literal["auto"] = DEFAULT_LAM,
        baseline: bool = False,
        penalty: Literal["l1", "log"] = "l1",
        proximal: bool = True,
        random_state: int = 0,
        loss: str | Sequence[str] = "auto",
    ):
        _check_model_args(
            n_latent=n_latent, hidden=hidden, lam=lam, baseline=baseline, penalty=penalty, proximal=proximal,
            random_state=random_state, loss=loss,
        )  # fmt: skip
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
        if n_latent > self._n_inputs():
            raise ValueError(
                f"`n_latent` ({n_latent}) exceeds the number of inputs ({self._n_inputs()}): the latents are computed "
                "from the inputs. Use n_latent <= the number of inputs, or more inputs (var_names)."
            )
        var_names = self.registry_["setup_args"].get("var_names")
        #: Names of the inputs, in the order the encoder reads them (checked when the model meets another AnnData).
        self.input_names_ = [str(v) for v in (var_names if var_names is not None else self.adata.var_names)]
        self._lam_auto = isinstance(lam, str)
        if self._lam_auto:
            if lam != "auto":
                raise ValueError(f"`lam` must be a non-negative number or 'auto', got {lam!r}.")
        elif not np.isfinite(lam) or lam < 0:
            raise ValueError(f"`lam` must be non-negative, got {lam}.")
        if penalty not in ("l1", "log"):
            raise ValueError(f"`penalty` must be 'l1' or 'log', got {penalty!r}.")
        self.tree = tree_obj
        self.environments_ = [str(c) for c in categories]
        self.targets_ = _as_targets(self.registry_["setup_args"]["target"])
        y = np.asarray(self.adata_manager.get_from_registry(Y_KEY), dtype=np.float64).reshape(adata.n_obs, -1)
        self.losses_ = resolve_losses(loss, y, self.targets_)
        #: The lambda in use: the chosen one after training with ``lam="auto"``.
        self.lam_ = float(DEFAULT_LAM if self._lam_auto else lam)
        #: With ``lam="auto"``, one row per lambda of the path (see :meth:`train`); ``None`` otherwise.
        self.lam_path_: pd.DataFrame | None = None
        tree = {"nodes": list(tree_obj.nodes), "parents": [tree_obj.parent(n) or "" for n in tree_obj.nodes]}
        torch.manual_seed(int(random_state))
        self.module = self._module_cls(
            self._n_inputs(),
            int(n_latent),
            tree_obj.path_matrix(self.environments_),
            hidden=tuple(int(h) for h in hidden),
            lam=self.lam_,
            baseline=bool(baseline),
            penalty=penalty,
            proximal=bool(proximal),
            n_targets=len(self.targets_),
            losses=self.losses_,
        )
        self._model_summary_string = (
            f"{'Baseline' if baseline else 'TBR'} model: n_latent={n_latent}, hidden={tuple(hidden)}, lam={lam}, "
            f"penalty={penalty}, {len(self.environments_)} environments on a tree of {tree_obj.n_nodes} nodes, "
            f"target(s) {self.targets_} with loss {self.losses_}"
        )
        self.init_params_ = self._get_init_params(locals())

    # -- registration -----------------------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        target: str | Sequence[str],
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
            Numeric column of ``adata.obs`` to predict (0/1 for a binary phenotype), or a list of such columns:
            one head tree per target on the shared latents.
        groupby
            Categorical column of ``adata.obs`` with each cell's environment (a node of the tree).
        layer
            Layer with the inputs; ``None`` uses ``adata.X``.
        var_names
            Subset of ``adata.var_names`` to use as inputs; ``None`` uses all.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        _check_setup(adata, target, groupby, layer, var_names)
        targets = _as_targets(target)
        fields = [
            LayerField(X_KEY, layer, is_count_data=False),
            NumericalObsField(Y_KEY, targets[0]) if len(targets) == 1 else NumericalJointObsField(Y_KEY, targets),
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

    def _arrays(self, adata: AnnData, with_target: bool = True, backed: str = "stream") -> dict:
        """Registered arrays; a backed AnnData's inputs are streamed from disk or (``backed="load"``) loaded."""
        manager = self.get_anndata_manager(adata, required=True)
        x = manager.get_from_registry(X_KEY)
        cols = self._input_columns(adata)
        if cols is not None and (cols < 0).any():
            raise ValueError("Some registered `var_names` are missing from this AnnData.")
        y = np.asarray(manager.get_from_registry(Y_KEY)) if with_target else None
        if y is not None:
            y = y.reshape(-1) if len(self.targets_) == 1 else y.reshape(y.shape[0], -1)
        env = np.asarray(manager.get_from_registry(ENV_KEY)).reshape(-1)
        return prepare_arrays(x, y, env, columns=cols, stream=backed == "stream")

    # -- training ---------------------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float | None = None,
        batch_size: int | None = None,
        train_size: float = 0.8,
        validation_size: float = 0.2,
        refine: bool = True,
        final_refine: bool = True,
        final_objective: Literal["l1", "log"] = "l1",
        fit_fraction: float = 0.7,
        sparsify_lr_factor: float = 0.3,
        lam_grid: Sequence[float] | None = None,
        path_epochs: float = 0.1,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool | None = None,
        random_state: int = 0,
        plan_kwargs: dict | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = False,
        backed: Literal["load", "stream"] = "load",
        num_threads: int | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train through Lightning (GPU when present, CPU otherwise): one fit in three phases, then a final refinement.

        1. **Fit**: ``fit_fraction`` of the epochs minimise the prediction error alone (Adam, cosine decay).
        2. **Basis refinement**: the prediction term is unchanged by any invertible linear map of the latents
           (and by the heads of unobserved nodes); the penalty is not. :func:`~sctbr.model.refine_basis`
           minimises the penalty over these maps from many starts, and the result is written into the encoder's
           last layer and the heads. This is an exact descent step on the TBR objective along directions that
           gradient steps cross only slowly.
        3. **Sparsify**: the remaining epochs minimise error + ``lam * penalty`` with proximal (soft-threshold)
           steps, at ``sparsify_lr_factor * lr``, giving exact zeros in ``Delta``.
        4. **Final refinement** (``final_refine``, below): the basis refinement on unpenalised heads of the final
           latents, then the heads solved exactly in the new basis.

        With ``refine=False`` and ``fit_fraction=0`` this is the paper's plain recipe (penalised training from
        the start). The baseline has no tree: it runs phase 1 only, for all epochs. Each phase starts with fresh Adam
        moments and its own cosine decay; one progress bar, labelled with the phase, covers the whole fit.

        **Choosing lambda** (model built with ``lam="auto"``): phase 3 runs along ``lam_grid`` from the smallest
        value up, each value warm-started from the previous solution (the first for the usual phase-3 epochs, each
        further one for ``path_epochs * max_epochs`` epochs). After each, the data term (mean squared error on the
        standardised target; logistic loss for a binary target; summed over targets) is computed on every
        validation cell. The rule is the lasso's *one-standard-error rule*: keep the **largest** lambda whose mean
        validation error is within one standard error (over validation cells) of the smallest mean on the path,
        i.e. the sparsest fit that predicts as well as the best one up to noise. The penalised validation
        objective is not used: it always favours the smallest lambda. The chosen solution is restored; the value is
        in ``model.lam_`` and the path's scores in ``model.lam_path_`` (columns ``lam``, ``validation_mse``,
        ``validation_mse_se``, ``penalty``, ``validation_objective``, ``zero_fraction`` (exact zeros in
        ``Delta``), ``epochs``, ``selected``).

        Parameters
        ----------
        max_epochs
            Epochs in all; ``None`` picks about 20 000 optimiser steps, at most 300 epochs.
        lr
            Initial learning rate of phase 1 (cosine decay to 5% of it within each phase). ``None``: 3e-3, scaled
            by ``sqrt(batch_size / 128)`` when ``batch_size`` is also ``None``.
        batch_size
            Cells per batch. ``None``: 128; from 8 192 training cells on 512, from 16 384 on 1 024
            (:doc:`/training`, "Speed").
        train_size, validation_size
            Fractions of every environment's cells for training and validation (stratified); the rest is a
            test set, in ``model.test_indices``.
        refine
            Run the basis refinement (phase 2).
        final_refine
            With ``refine``: after the last phase, refine the basis once more, on unpenalised heads (per
            environment, least squares of the target on the latents of the training and validation cells), and map
            the module's heads into the new basis (:func:`~sctbr.model._heads.refine_final`). The sparsify phase
            shrinks the heads towards sparsity in the basis it started from, so a refinement on the module's own heads
            keeps that basis; on unpenalised heads it can still move it. With one target, the heads are then solved
            exactly for the training objective with the latents fixed (a lasso), which restores the exact zeros of
            ``Delta``. Not for binary (logistic) targets. Measured in :doc:`/cells_needed`. Its summary
            (penalties before and after, the map ``basis``, whether the heads were ``resolved``) is in
            ``model.final_refinement_`` (``None`` when it did not run).
        final_objective
            What the final refinement minimises (one target). ``"l1"``: the l1 penalty of the heads' changes, as
            phases 2 and 3. ``"log"``: from the l1 basis, a search of the l0-like penalty
            ``sum eps log(1 + |change| / eps)`` (``eps`` 3% of the mean absolute head; 96 starts, some built from
            pairs of environments with equal heads, then polished exactly), whose best basis replaces the l1 one
            only when its penalty is at least 5% smaller (:func:`~sctbr.model._basis_log.log_refine`;
            ``final_refinement_["log_ratio"]`` and ``["log_switched"]`` say what happened). On leaves-only trees the
            l1 optimum can sit off the true basis; measured over 120 small-data fits: MCC +0.011 on average (30
            better, 9 worse; it lifts 5-latent leaves-only trees and costs the 16-leaf tree with 3 latents its
            targets), 1.56x the CPU time of a default fit (:doc:`/cells_needed`). At most 64 environments.
        fit_fraction
            Fraction of the epochs spent in phase 1.
        sparsify_lr_factor
            Learning rate of phase 3 relative to ``lr``.
        lam_grid
            With ``lam="auto"``: the lambdas to try (default 7 values log-spaced from 1e-4 to 1e-1).
        path_epochs
            With ``lam="auto"``: epochs of every lambda after the first, as a fraction of ``max_epochs``.
        accelerator, devices
            As in Lightning / scvi-tools.
        early_stopping
            End a phase when the validation objective has not improved for 20 epochs (``early_stopping_patience``
            etc. can be passed as keyword arguments). ``None``: on from 8 192 training cells on, when there are
            validation cells and the fit runs in one process (not under DDP).
        random_state
            Seed of the split, the batch order and the refinement's starts.
        plan_kwargs
            Keyword arguments of :class:`~sctbr.model.TBRTrainingPlan`.
        checkpoint_dir
            Save Lightning's checkpoint of the fit (``last.ckpt``) at the end of every epoch in this directory (see
            :doc:`/scale`).
        resume
            Continue the fit whose checkpoint is in ``checkpoint_dir`` from its last finished epoch; a fresh fit if
            there is none. The model, data and arguments must be those of the interrupted fit. On CPU the result
            equals an uninterrupted fit.
        backed
            For a backed AnnData (``anndata.read_h5ad(path, backed="r")``): ``"load"`` reads the registered input
            columns into memory block by block (the file's other columns are never loaded); ``"stream"`` leaves
            them on disk and reads blocks of cells for every epoch (memory: one block of about 64 MB; batches are
            shuffled within blocks, and the block order is shuffled).
        num_threads
            Torch CPU threads during the fit (restored afterwards; the count used is ``model.num_threads_``).
            ``None``: the environment variable ``SCTBR_NUM_THREADS`` if set, else 1 with batches of at most 128
            cells (every default fit below 8 192 training cells: same seed, same numbers), else a rule that only
            lowers torch's current setting: at most the cores this process may use, at most those that other
            processes leave idle (by the 1-minute load average), at least 1 (see :doc:`/training`, "Threads"). An
            explicit value is used as given.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (a Lightning ``Trainer``), e.g. ``strategy="ddp"`` with
            ``devices=2`` for data-parallel training on several devices (each process trains on its shard of every
            epoch; ``batch_size`` is per process), or ``callbacks``.

        Raises
        ------
        FloatingPointError
            When training diverges (NaN or infinite losses or weights): raised at the end of the epoch where it
            happens, with hints (learning rate, input scale).
        KeyboardInterrupt
            When interrupted (Ctrl+C); with ``checkpoint_dir``, ``resume=True`` continues the fit.
        """
        fit_settings = {k: v for k, v in locals().items() if k not in ckpt.NOT_CHECKPOINTED}
        _check_train_args(
            max_epochs=max_epochs, lr=lr, batch_size=batch_size, train_size=train_size,
            validation_size=validation_size, random_state=random_state, fit_fraction=fit_fraction,
            sparsify_lr_factor=sparsify_lr_factor, lam_grid=lam_grid, path_epochs=path_epochs, refine=refine,
            final_refine=final_refine, final_objective=final_objective, early_stopping=early_stopping,
        )  # fmt: skip
        if final_objective == "log" and not self.module.baseline:
            check_log_environments(len(self.environments_))
        if not 0 <= fit_fraction <= 1:
            raise ValueError(f"`fit_fraction` must lie in [0, 1], got {fit_fraction}.")
        auto = self._lam_auto and not self.module.baseline
        grid = check_lam_grid(lam_grid, validation_size, path_epochs) if auto else None
        if backed not in ("load", "stream"):
            raise ValueError(f"`backed` must be 'load' or 'stream', got {backed!r}.")
        data = self._arrays(self.adata, backed=backed)
        can_stop = validation_size > 0 and not ckpt.is_ddp(trainer_kwargs)
        batch_size, lr, early_stopping = _resolve_policy(
            int(train_size * len(data[Y_KEY])), batch_size, lr, early_stopping, can_stop=can_stop
        )
        self.batch_size_, self.lr_ = batch_size, lr
        fit_settings.update(batch_size=batch_size, lr=lr, early_stopping=early_stopping)  # what resume must match
        datamodule = TBRDataModule(
            data,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            random_state=random_state,
            env_names=self.environments_,
        )
        y_train = data[Y_KEY][datamodule.train_idx]
        if y_train.ndim == 1:
            self.module.set_target_scale(float(y_train.mean()), float(y_train.std()))
        else:
            self.module.set_target_scale(y_train.mean(0).numpy(), y_train.std(0).numpy())
        if max_epochs is None:
            max_epochs = max_epochs_for(self.adata.n_obs)
        ckpt_path = None
        if checkpoint_dir is not None:
            config = ckpt.fit_config(self, fit_settings, plan_kwargs, max_epochs)
            ckpt_path = ckpt.checkpoint_path(checkpoint_dir, resume, config)
        elif resume:
            raise ValueError("`resume=True` needs the `checkpoint_dir` of the interrupted fit.")
        plan_kwargs = dict(plan_kwargs or {})
        # plan_kwargs' lr and max_epochs apply to every phase
        phase_lr = plan_kwargs.pop("lr", None)
        tree_model = not self.module.baseline
        n_fit = max_epochs if not tree_model else int(round(fit_fraction * max_epochs))
        phases = plan_phases(
            max_epochs,
            n_fit=n_fit,
            lr=phase_lr or lr,
            sparsify_lr=phase_lr or lr * (sparsify_lr_factor if n_fit > 0 else 1.0),
            lam=self.module.lam,
            grid=grid,
            path_epochs=max(1, int(round(path_epochs * max_epochs))),
            schedule=plan_kwargs.pop("max_epochs", None),
        )
        work = PhaseWork(self, data, datamodule, refine=refine and tree_model, path=auto, random_state=random_state)
        plan = self._training_plan_cls(self.module, lr=phases[0].lr, phases=phases, **plan_kwargs)
        wire_trainer(trainer_kwargs, [work, ckpt.DivergenceCheck()], early_stopping, validation=validation_size > 0)
        lam = self.module.lam
        threads = self.num_threads_ = fit_threads(num_threads, batch_size)
        torch.manual_seed(int(random_state))
        try:
            with torch_threads(threads):
                self._run_fit(plan, datamodule, accelerator, devices, checkpoint_dir, ckpt_path, trainer_kwargs)
                work.finish(plan)
        finally:
            self.module.lam = lam
        if work.refinement is not None:
            self.refinement_ = work.refinement
        if auto:
            chosen, self.lam_path_ = select(work.rows)
            self.module.load_state_dict(work.states[chosen])
            self.module.lam = float(grid[chosen])
        self.module.eval()
        self.lam_ = float(self.module.lam) if not self.module.baseline else 0.0
        if not self._finite():
            self.is_trained_ = False
            raise FloatingPointError(
                "Training diverged (NaN or infinite weights). Lower the learning rate (e.g. lr=1e-3), check that "
                "the inputs are scaled (log-normalised expression, not raw counts), or reduce `lam`."
            )
        self.final_refinement_ = None
        if refine and final_refine and tree_model and not bool(self.module.logistic_mask.any()):
            cells = np.concatenate([datamodule.train_idx, datamodule.val_idx]).astype(int)
            with torch_threads(threads):
                self.final_refinement_ = refine_final(
                    self.module,
                    self.tree,
                    self.environments_,
                    data,
                    cells,
                    datamodule.train_idx,
                    random_state,
                    objective=final_objective,
                )

    def _run_fit(self, plan, datamodule, accelerator, devices, checkpoint_dir, ckpt_path, trainer_kwargs) -> None:
        """One Lightning fit over all phases (resumed from ``ckpt_path`` if given): :func:`~sctbr.model._checkpoint.run_fit`."""
        ckpt.run_fit(self, plan, datamodule, accelerator, devices, checkpoint_dir, ckpt_path, trainer_kwargs)

    def _refine(self, data: dict, train_idx: np.ndarray, random_state: int) -> dict:
        """Stage 2: move the latents to the basis (and unobserved heads to the values) with the sparsest changes."""
        return refine_module(self.module, self.tree, self.environments_, data, train_idx, random_state)

    def _finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.module.parameters())
