"""Training plan for TBR: Adam on the smooth loss, proximal (soft-threshold) steps for the penalty, in phases."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from numbers import Real

import torch
from scvi.train import TrainingPlan
from torch.optim.lr_scheduler import CosineAnnealingLR

from sctbr.model._module import TBRModule

#: Why scvi-tools' TrainingPlan options do nothing here (the fix goes in the error).
_IGNORED = {
    "optimizer": "TBR trains with Adam (its proximal step reads Adam's moments)",
    "optimizer_creator": "TBR trains with Adam (its proximal step reads Adam's moments)",
    "reduce_lr_on_plateau": "the learning rate follows each phase's cosine decay (set `lr`, `lr_min_factor`)",
    "lr_factor": "the learning rate follows each phase's cosine decay (set `lr`, `lr_min_factor`)",
    "lr_patience": "the learning rate follows each phase's cosine decay (set `lr`, `lr_min_factor`)",
    "lr_threshold": "the learning rate follows each phase's cosine decay (set `lr`, `lr_min_factor`)",
    "lr_scheduler_metric": "the learning rate follows each phase's cosine decay (set `lr`, `lr_min_factor`)",
    "lr_min": "the final learning rate is `lr * lr_min_factor`",
    "eps": "Adam's eps is fixed at 1e-8",
}


def check_plan_options(kwargs: dict, **values) -> None:
    """Reject options the plan would ignore, and out-of-range values of its own, before anything is built."""
    if kwargs:
        reasons = sorted(
            {_IGNORED.get(k, "TBR has no KL term, no loss keywords and no compiled module") for k in kwargs}
        )
        raise TypeError(
            f"TBRTrainingPlan does not use {sorted(kwargs)}: {'; '.join(reasons)}. Remove them from `plan_kwargs`; "
            "the plan's options are lr, weight_decay, max_epochs, lr_min_factor, warmup_epochs, reweight_every."
        )
    checks = {
        "lr": (lambda v: v > 0, "a positive number, e.g. 3e-3"),
        "weight_decay": (lambda v: v >= 0, "a non-negative number, e.g. 1e-3 (0 turns it off)"),
        "max_epochs": (lambda v: v >= 1 and float(v).is_integer(), "a positive integer"),
        "lr_min_factor": (lambda v: 0 <= v <= 1, "a fraction of `lr` between 0 and 1, e.g. 0.05"),
        "warmup_epochs": (lambda v: v >= 0 and float(v).is_integer(), "a non-negative integer"),
        "reweight_every": (lambda v: v >= 1 and float(v).is_integer(), "a positive integer"),
    }
    for name, value in values.items():
        ok, fix = checks[name]
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"`{name}` must be {fix}; got {value!r}.")


@dataclass
class Phase:
    """One phase of a fit: epochs ``[start, start + epochs)`` at learning rate ``lr`` and sparsity weight ``lam``.

    ``schedule`` is the length of the phase's cosine decay (its planned epochs; early stopping may end it sooner).
    """

    name: str
    start: int
    epochs: int
    lr: float
    lam: float
    schedule: int

    @property
    def end(self) -> int:
        return self.start + self.epochs


def fused_adam_available(params) -> bool:
    """Whether torch's fused Adam runs on these parameters (float tensors on CPU from torch 2.4, or on CUDA)."""
    devices = {p.device.type for p in params}
    if not devices or not all(p.is_floating_point() for p in params):
        return False
    if devices == {"cuda"}:
        return True
    if devices == {"cpu"}:
        version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
        return version >= (2, 4)
    return False


def adam(groups: list[dict], *, lr: float, eps: float, fused: bool | None = None) -> torch.optim.Adam:
    """Adam over parameter ``groups``: the fused implementation where available (``fused=None``) or asked for."""
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = fused_adam_available(params)
    if fused:
        try:
            return torch.optim.Adam(groups, lr=lr, eps=eps, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch or device without it
            pass
    return torch.optim.Adam(groups, lr=lr, eps=eps)


class TBRTrainingPlan(TrainingPlan):
    """scvi-tools training plan with proximal steps on the arc changes.

    The smooth part of the objective (mean squared error) is minimised by Adam. After every optimiser step
    the arc changes ``Delta`` are soft-thresholded by the proximal operator of the penalty in Adam's own
    diagonal metric (threshold ``lr * lam * weight / sqrt(v_hat)``), which yields exact zeros, so "which
    latent changed on which arc" has a crisp answer. With ``penalty="log"`` the l1 weights are refreshed
    every ``reweight_every`` epochs after ``warmup_epochs`` (iteratively reweighted l1, an l0-like penalty).
    The learning rate follows a cosine decay to ``lr * lr_min_factor`` (torch's
    :class:`~torch.optim.lr_scheduler.CosineAnnealingLR`, restarted at every phase).

    The plan takes only the options below: those of scvi-tools' ``TrainingPlan`` that it does not use (another
    ``optimizer``, ``reduce_lr_on_plateau`` and its ``lr_*`` settings, KL warm-up, ``compile``, loss keywords)
    raise a ``TypeError`` instead of being silently dropped.

    A fit runs in **phases** (:class:`Phase`; :meth:`sctbr.model.TBR.train` sets them: fit with ``lam = 0``, then
    sparsify, or one sparsify phase per lambda of a path). Each phase starts with a fresh Adam state and its own
    cosine decay from the phase's learning rate, and sets the module's ``lam``; the batch order of a phase's
    epochs is that of a fit of its own (:attr:`phase_epoch`). All of it is a function of the epoch and the phases,
    which are saved in the checkpoint, so a fit resumed from a Lightning checkpoint continues exactly.

    Parameters
    ----------
    module
        A :class:`~sctbr.model.TBRModule`.
    lr
        Adam's initial learning rate.
    weight_decay
        Adam's weight decay (L2) on the encoder's weights; the heads are governed by the tree penalty. ``1e-3``
        lowers the held-out error where cells are few (about 15% with 300 cells per environment) but did not
        improve identification (MCC -0.009 +- 0.008 over 15 paired fits, ``benchmarks/small_data.py``), so the
        default is 0 (see :doc:`/training`, "Small data").
    max_epochs
        Length of the cosine schedule of a single phase (when ``phases`` is not given).
    lr_min_factor
        Final learning rate as a fraction of ``lr``.
    warmup_epochs
        Epochs before the first reweighting of the log penalty.
    reweight_every
        Epochs between reweightings.
    phases
        The phases of the fit; ``None``: one phase of ``max_epochs`` epochs at ``lr`` with the module's ``lam``.
    fused
        Use torch's fused Adam (one kernel for all parameters) where the installed torch has it for the device
        (CPU from torch 2.4, CUDA); ``None`` (default): where available, ``False``: torch's default Adam. On CPU the
        default Adam is a Python loop over the parameter tensors that cost a quarter of a default fit
        (``benchmarks/profile_fit.py``); the fused one does the same update (equal up to float rounding).
    **kwargs
        Not accepted (see above); kept in the signature to name scvi-tools' options in the error.

    Examples
    --------
    :meth:`sctbr.model.TBR.train` builds the plan; pass its options as ``plan_kwargs``, e.g.
    ``model.train(plan_kwargs={"lr": 1e-3})``. Built by hand:

    >>> from sctbr import EnvironmentTree
    >>> from sctbr.model import TBRModule, TBRTrainingPlan
    >>> tree = EnvironmentTree.coerce({"A": "root", "B": "root"})
    >>> module = TBRModule(n_input=10, n_latent=3, env_paths=tree.path_matrix(["A", "B"]), hidden=(16,))
    >>> plan = TBRTrainingPlan(module, lr=1e-3, max_epochs=10)
    >>> [p.name for p in plan.phases]
    ['fit']
    """

    def __init__(
        self,
        module: TBRModule,
        *,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        max_epochs: int = 300,
        lr_min_factor: float = 0.05,
        warmup_epochs: int = 50,
        reweight_every: int = 20,
        phases: list[Phase] | None = None,
        fused: bool | None = None,
        **kwargs,
    ):
        check_plan_options(
            kwargs, lr=lr, weight_decay=weight_decay, max_epochs=max_epochs, lr_min_factor=lr_min_factor,
            warmup_epochs=warmup_epochs, reweight_every=reweight_every,
        )  # fmt: skip
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=1e-8)
        self.lr_min_factor = float(lr_min_factor)
        self.warmup_epochs = int(warmup_epochs)
        self.reweight_every = max(1, int(reweight_every))
        if phases is None:
            phases = [Phase("fit", 0, int(max_epochs), float(lr), float(module.lam), int(max_epochs))]
        self.phases = list(phases)
        self.fused = fused
        self._sums: dict[str, torch.Tensor] = {}
        self._scheduler: CosineAnnealingLR | None = None  # the current phase's cosine decay
        self._scheduler_key: tuple | None = None
        self.automatic_optimization = False

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_scheduler"], state["_scheduler_key"] = None, None  # rebuilt at the next epoch
        return state

    # -- phases -----------------------------------------------------------------------------------------------
    def phase_index(self, epoch: int | None = None) -> int:
        """Index of the phase of ``epoch`` (default: the current epoch); past the end, the last phase."""
        epoch = self.current_epoch if epoch is None else epoch
        return next((i for i, p in enumerate(self.phases) if epoch < p.end), len(self.phases) - 1)

    @property
    def phase(self) -> Phase:
        return self.phases[self.phase_index()]

    @property
    def phase_epoch(self) -> int:
        """The current epoch counted from the start of its phase (it sets the phase's batch order)."""
        return self.current_epoch - self.phase.start

    def _cosine(self, optimizer: torch.optim.Optimizer, phase: Phase, phase_epoch: int) -> CosineAnnealingLR:
        """The phase's cosine decay, torch's :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` from the phase's
        ``lr`` to ``lr * lr_min_factor`` over ``phase.schedule`` epochs, advanced to ``phase_epoch``."""
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = phase.lr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()": by design
            scheduler = CosineAnnealingLR(
                optimizer, T_max=max(1, phase.schedule), eta_min=phase.lr * self.lr_min_factor
            )
        for _ in range(phase_epoch):
            self._step_cosine(scheduler)
        return scheduler

    @staticmethod
    def _step_cosine(scheduler: CosineAnnealingLR) -> None:
        """One epoch of the decay; past ``T_max`` the rate stays at its floor (torch's schedule would rise again)."""
        if scheduler.last_epoch < scheduler.T_max:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch``: cosine decay from the phase's ``lr`` to ``lr * lr_min_factor``."""
        phase = self.phases[self.phase_index(epoch)]
        dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=phase.lr)
        return float(self._cosine(dummy, phase, epoch - phase.start).get_last_lr()[0])

    def end_phase(self, epoch: int) -> bool:
        """End the current phase after ``epoch`` (early stopping); later phases move up. False for the last phase."""
        i = self.phase_index(epoch)
        if i == len(self.phases) - 1:
            self.phases[i].epochs = epoch + 1 - self.phases[i].start
            return False
        shift = self.phases[i].end - (epoch + 1)
        self.phases[i].epochs -= shift
        for p in self.phases[i + 1 :]:
            p.start -= shift
        self.trainer.fit_loop.max_epochs = self.phases[-1].end
        return True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sctbr_phases"] = [asdict(p) for p in self.phases]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        phases = checkpoint.get("sctbr_phases")
        if phases:
            self.phases = [Phase(**p) for p in phases]
            if self._trainer is not None:
                self.trainer.fit_loop.max_epochs = self.phases[-1].end

    # Lean steps: the stock plan computes ELBO metrics a regression model does not have, and Lightning's
    # ``self.log`` costs about a millisecond per call, more than a whole step of this small network. Sums are
    # accumulated in tensors and logged once per epoch.
    def _accumulate(self, mode: str, out) -> None:
        n = out.n_obs_minibatch
        sums = self._sums.get(mode)
        if sums is None:
            sums = self._sums[mode] = [out.loss.new_zeros(()), out.loss.new_zeros(()), 0]
        sums[0].add_(out.loss.detach(), alpha=n)
        sums[1].add_(out.extra_metrics["mse"], alpha=n)
        sums[2] += n

    def _log_epoch(self, mode: str, loss_name: str) -> None:
        sums = self._sums.pop(mode, None)
        if sums is None:
            return
        sums = torch.stack([sums[0], sums[1], sums[0].new_tensor(float(sums[2]))])
        if self.use_sync_dist:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss, mse = (sums[:2] / sums[2].clamp_min(1)).tolist()
        self.log(loss_name, loss, prog_bar=True)
        self.log(f"mse_{mode}", mse)

    def training_step(self, batch, batch_idx):
        # Manual optimisation over a "super-batch" (a list of mini-batches): one optimiser step and one proximal
        # step per mini-batch, with Lightning's per-step machinery paid once per super-batch.
        opt = self.optimizers()
        for mini in batch if isinstance(batch, (list, tuple)) else [batch]:
            _, _, out = self.forward(mini, loss_kwargs=self.loss_kwargs)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(out.loss)
            opt.step()
            self._proximal(opt)
            self._accumulate("train", out)

    def validation_step(self, batch, batch_idx):
        # The penalised validation objective: what restarts and lambda selection are scored on.
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._accumulate("validation", out)

    def on_train_epoch_end(self):
        self._log_epoch("train", "train_loss")

    def on_validation_epoch_end(self):
        self._log_epoch("validation", "validation_loss")

    def on_train_start(self):
        # Lightning (>= 2.2) keeps each submodule's train/eval mode across fits, and scvi-tools' runner leaves the
        # module in eval mode after a fit: without this, a second stage would train with frozen latent statistics.
        self.module.train()

    def on_train_epoch_start(self):
        phase = self.phase
        # as if every phase were a fit of its own: fresh Adam moments, its lam, its own cosine decay
        self.module.lam = phase.lam
        self.module.train()  # refinement and scoring between phases run in eval mode
        opt = self.optimizers()
        opt = opt.optimizer if hasattr(opt, "optimizer") else opt
        if self.current_epoch == phase.start:
            opt.state.clear()
        key = (self.phase_index(), phase.start, id(opt))
        if self.current_epoch == phase.start or self._scheduler is None or self._scheduler_key != key:
            self._scheduler = self._cosine(opt, phase, self.phase_epoch)  # a new phase, or a resumed fit
            self._scheduler_key = key
        else:
            self._step_cosine(self._scheduler)
        epoch = self.phase_epoch
        if epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % self.reweight_every == 0 and epoch > 0:
            self.module.reweight()

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        groups = [{"params": params, "weight_decay": 0.0}]
        if self.weight_decay:
            # weight decay on the encoder only; the heads are governed by the tree penalty
            groups = [
                {"params": list(self.module.encoder.parameters()), "weight_decay": self.weight_decay},
                {
                    "params": [
                        p for n, p in self.module.named_parameters() if not n.startswith("encoder") and p.requires_grad
                    ]
                },
            ]
        return adam(groups, lr=self.lr, eps=self.eps, fused=self.fused)

    @torch.no_grad()
    def _proximal(self, optimizer) -> None:
        """Soft-threshold ``Delta`` in Adam's diagonal metric after an optimiser step."""
        module = self.module
        if not module.proximal or module.baseline or module.lam == 0:
            return
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        state = opt.state.get(module.delta)
        lr = opt.param_groups[-1]["lr"]
        if not state or "exp_avg_sq" not in state:
            module.proximal_step(lr)
            return
        beta2 = opt.param_groups[-1]["betas"][1]
        step = float(state["step"])
        denom = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt() + opt.param_groups[-1]["eps"]
        module.proximal_step(lr / denom)
