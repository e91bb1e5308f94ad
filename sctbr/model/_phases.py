"""The phases of one :meth:`sctbr.model.TBR.train` fit and the callbacks that drive them.

A fit is one Lightning run whose epochs are split into phases (:class:`~sctbr.model._trainingplan.Phase`): fit with
``lam = 0``, then sparsify with proximal steps (with ``lam="auto"``, one sparsify phase per lambda of the path).
The training plan switches the optimiser, learning rate and ``lam`` at the start of each phase; :class:`PhaseWork`
does the work between phases that needs the model (the basis refinement, the scores of each lambda) and keeps its
results in the checkpoint, so Lightning's own checkpoint and ``ckpt_path`` resume a fit exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar

from sctbr.model import _lam_path
from sctbr.model._checkpoint import is_ddp, sync_from_rank_zero
from sctbr.model._policy import PATIENCE
from sctbr.model._trainingplan import Phase


def plan_phases(
    max_epochs: int,
    *,
    n_fit: int,
    lr: float,
    sparsify_lr: float,
    lam: float,
    grid: np.ndarray | None = None,
    path_epochs: int = 1,
    schedule: int | None = None,
) -> list[Phase]:
    """``n_fit`` epochs of fit (``lam = 0``), then sparsify; with a ``grid`` of lambdas, one sparsify phase per value.

    ``schedule`` overrides the length of every phase's cosine decay (``plan_kwargs={"max_epochs": ...}``).
    """
    n_sparse = max_epochs - n_fit
    phases: list[Phase] = []

    def add(name: str, epochs: int, phase_lr: float, phase_lam: float) -> None:
        start = phases[-1].end if phases else 0
        phases.append(Phase(name, start, int(epochs), float(phase_lr), float(phase_lam), int(schedule or epochs)))

    if n_fit > 0:
        add("fit", n_fit, lr, 0.0)
    if grid is not None:
        for i, value in enumerate(grid):
            add("sparsify", max(n_sparse, path_epochs) if i == 0 else path_epochs, sparsify_lr, value)
    elif n_sparse > 0:
        add("sparsify", n_sparse, sparsify_lr, lam)
    return phases


def wire_trainer(trainer_kwargs: dict, callbacks: list[Callback], early_stopping: bool, validation: bool) -> None:
    """Edit the fit's ``trainer_kwargs`` in place: validation every epoch (none without ``validation`` cells), and
    after the user's callbacks ``callbacks``, early stopping by phase and the phase-labelled progress bar."""
    if not validation:
        trainer_kwargs["limit_val_batches"] = 0
    else:
        # scvi-tools' Trainer validates only with early stopping unless told otherwise
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
    own = [*callbacks, *phase_callbacks(trainer_kwargs, early_stopping)]
    trainer_kwargs["callbacks"] = [*(trainer_kwargs.get("callbacks") or []), *own]


def phase_callbacks(trainer_kwargs: dict, early_stopping: bool) -> list[Callback]:
    """Early stopping by phase and the phase-labelled progress bar, as ``trainer_kwargs`` ask (which it edits)."""
    options = {
        k[len("early_stopping_") :]: trainer_kwargs.pop(k)
        for k in list(trainer_kwargs)
        if k.startswith("early_stopping_")
    }
    callbacks: list[Callback] = []
    if early_stopping and is_ddp(trainer_kwargs):
        # as scvi-tools does: the processes would have to agree on when a phase ends
        warnings.warn("early_stopping is turned off under DDP.", UserWarning, stacklevel=3)
    elif early_stopping:
        callbacks.append(PhaseEarlyStopping(**options))
    if trainer_kwargs.get("enable_progress_bar", True):
        trainer_kwargs["simple_progress_bar"] = False  # scvi-tools' bar, a second one, would show the epochs only
        callbacks.append(PhaseProgressBar())
    return callbacks


def label(phase: Phase, phases: list[Phase]) -> str:
    """How the progress bar names a phase (with its lambda on a path)."""
    if phase.name == "sparsify" and sum(p.name == "sparsify" for p in phases) > 1:
        return f"sparsify λ={phase.lam:.2g}"
    return phase.name


class PhaseWork(Callback):
    """Between phases: the basis refinement (after the fit phase) and the scores of every lambda of a path.

    Runs at the start of the epoch that begins a phase (and, for the end of the last phase, in :meth:`finish`).
    Its results (the refinement's summary, the path's rows and saved solutions) and the loss history are part of
    every checkpoint, so a resumed fit has them too.

    Parameters
    ----------
    model
        The :class:`~sctbr.model.TBR` being trained.
    data
        Its arrays; the refinement reads the training cells and the path scores the validation cells.
    datamodule
        The data module with the split.
    refine
        Run the basis refinement at the end of the fit phase (before the first phase when there is none).
    path
        Score every sparsify phase (``lam="auto"``).
    random_state
        Seed of the refinement's starts.
    """

    def __init__(self, model, data: dict, datamodule, *, refine: bool, path: bool, random_state: int):
        self.model, self.data, self.datamodule = model, data, datamodule
        self.refine, self.path, self.random_state = bool(refine), bool(path), int(random_state)
        self.refinement: dict | None = None
        self.rows: list[dict] = []
        self.states: list[dict[str, torch.Tensor]] = []
        self._trainer = None

    @property
    def state_key(self) -> str:
        return "PhaseWork"

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.boundary(pl_module, trainer.current_epoch)

    def finish(self, plan) -> None:
        """The work due at the end of the last phase (after the fit, also after a resumed finished one)."""
        self.boundary(plan, plan.phases[-1].end)

    def boundary(self, plan, epoch: int) -> None:
        phases = plan.phases
        if self.path:
            sparsify = [p for p in phases if p.name == "sparsify"]
            for i, phase in enumerate(sparsify):
                if phase.end == epoch and len(self.rows) == i:
                    sync_from_rank_zero(self.model.module)
                    self.rows.append(_lam_path.score(self.model, self.data, self.datamodule.val_idx, phase.epochs))
                    self.states.append({k: v.detach().clone() for k, v in self.model.module.state_dict().items()})
        fit = [p for p in phases if p.name == "fit"]
        if self.refine and epoch == (fit[0].end if fit else 0) and not self.model.module.baseline:
            sync_from_rank_zero(self.model.module)
            self.refinement = self.model._refine(self.data, self.datamodule.train_idx, self.random_state)

    # -- checkpoint -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        refinement = None
        if self.refinement is not None:
            refinement = {**self.refinement, "basis": torch.as_tensor(np.asarray(self.refinement["basis"]))}
        state = {"refinement": refinement, "rows": self.rows, "states": self.states}
        trainer = self._trainer
        if trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            state["history"] = _history_with_this_epoch(trainer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        refinement = state_dict.get("refinement")
        if refinement is not None:
            refinement = {**refinement, "basis": refinement["basis"].numpy()}
        self.refinement = refinement
        self.rows = list(state_dict.get("rows") or [])
        self.states = list(state_dict.get("states") or [])
        trainer = self._trainer
        plain = state_dict.get("history")
        if plain and trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            data = getattr(getattr(trainer.logger, "experiment", None), "data", None)
            if isinstance(data, dict):
                data.update(_history_from_plain(plain))


def _history_with_this_epoch(trainer) -> dict[str, dict[str, list]]:
    """The logger's history as plain lists, with this epoch's training metrics (logged after the checkpoint)."""
    history = {}
    for key, frame in (getattr(trainer.logger, "history", None) or {}).items():
        history[str(key)] = {
            "index": [int(i) for i in frame.index],
            "index_name": str(frame.index.name or "epoch"),
            "values": [float(v) for v in pd.to_numeric(frame.iloc[:, 0], errors="coerce")],
        }
    epoch = int(trainer.current_epoch)
    for key, value in trainer.callback_metrics.items():
        if "train" not in key:
            continue
        item = history.setdefault(key, {"index": [], "index_name": "epoch", "values": []})
        if epoch not in item["index"]:
            item["index"].append(epoch)
            item["values"].append(float(value))
    return history


def _history_from_plain(plain: dict) -> dict[str, pd.DataFrame]:
    out = {}
    for key, item in plain.items():
        frame = pd.DataFrame({key: np.asarray(item["values"], dtype=float)}, index=pd.Index(item["index"]))
        frame.index.name = item["index_name"]
        out[key] = frame.astype(object)
    return out


class PhaseEarlyStopping(Callback):
    """End a phase (not the whole fit) when the validation objective has not improved for ``patience`` epochs.

    The next phase starts at the next epoch, and the fit is shortened by the epochs skipped; in the last phase the
    fit stops. Options as scvi-tools' ``early_stopping_*`` arguments.
    """

    def __init__(
        self,
        monitor: str = "validation_loss",
        min_delta: float = 0.0,
        patience: int = PATIENCE,
        mode: str = "min",
        warmup_epochs: int = 0,
        phases: tuple[str, ...] | None = None,
    ):
        self.monitor, self.min_delta, self.patience = monitor, float(min_delta), int(patience)
        self.phases = None if phases is None else tuple(phases)
        self.sign = 1.0 if mode == "min" else -1.0
        self.warmup_epochs = int(warmup_epochs)
        self.best, self.wait, self.phase = float("inf"), 0, -1

    @property
    def state_key(self) -> str:
        return "PhaseEarlyStopping"

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        index = pl_module.phase_index()
        if index != self.phase:  # a new phase: a new objective
            self.best, self.wait, self.phase = float("inf"), 0, index
        if value is None or pl_module.phase_epoch < self.warmup_epochs:
            return
        if self.phases is not None and pl_module.phase.name not in self.phases:
            return
        value = self.sign * float(value)
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience and not pl_module.end_phase(trainer.current_epoch):
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "phase": self.phase}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.wait, self.phase = state_dict["best"], state_dict["wait"], state_dict["phase"]


class PhaseProgressBar(ProgressBar):
    """One progress bar over all epochs of a fit, labelled with the phase (``fit``, ``sparsify``, ...)."""

    def __init__(self):
        super().__init__()
        self._enabled = True
        self.bar = None

    def __getstate__(self):
        return {**self.__dict__, "bar": None}

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        if self._enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, unit="epoch", dynamic_ncols=True)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.total = trainer.max_epochs
            self.bar.set_description(label(pl_module.phase, pl_module.phases))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.update()
            metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
            self.bar.set_postfix(metrics, refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
