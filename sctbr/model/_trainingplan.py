"""Training plan for TBR: Adam on the smooth loss, proximal (soft-threshold) steps for the penalty."""

from __future__ import annotations

import math

import torch
from scvi.train import TrainingPlan

from sctbr.model._module import TBRModule


class TBRTrainingPlan(TrainingPlan):
    """scvi-tools training plan with proximal steps on the arc changes.

    The smooth part of the objective (mean squared error) is minimised by Adam. After every optimiser step
    the arc changes ``Delta`` are soft-thresholded by the proximal operator of the penalty in Adam's own
    diagonal metric (threshold ``lr * lam * weight / sqrt(v_hat)``), which yields exact zeros, so "which
    latent changed on which arc" has a crisp answer. With ``penalty="log"`` the l1 weights are refreshed
    every ``reweight_every`` epochs after ``warmup_epochs`` (iteratively reweighted l1, an l0-like penalty).
    The learning rate follows a cosine decay to ``lr * lr_min_factor``.

    Parameters
    ----------
    module
        A :class:`~sctbr.model.TBRModule`.
    lr
        Adam's initial learning rate.
    weight_decay
        Adam's weight decay (L2) on the encoder's weights; the heads are governed by the tree penalty. The default
        ``1e-3`` regularises the encoder where cells are few (it overfits otherwise: training error far below
        validation error); measured on ``benchmarks/small_data.py`` (see :doc:`/training`).
    max_epochs
        Length of the cosine schedule (set by the model from ``train(max_epochs=...)``).
    lr_min_factor
        Final learning rate as a fraction of ``lr``.
    warmup_epochs
        Epochs before the first reweighting of the log penalty.
    reweight_every
        Epochs between reweightings.

    Examples
    --------
    :meth:`sctbr.model.TBR.train` builds the plan; pass its options as ``plan_kwargs``, e.g.
    ``model.train(plan_kwargs={"lr": 1e-3})``. Built by hand:

    >>> from sctbr import EnvironmentTree
    >>> from sctbr.model import TBRModule, TBRTrainingPlan
    >>> tree = EnvironmentTree.coerce({"A": "root", "B": "root"})
    >>> module = TBRModule(n_input=10, n_latent=3, env_paths=tree.path_matrix(["A", "B"]), hidden=(16,))
    >>> plan = TBRTrainingPlan(module, lr=1e-3, max_epochs=10)
    >>> sorted(plan.configure_optimizers())
    ['lr_scheduler', 'optimizer']
    """

    def __init__(
        self,
        module: TBRModule,
        *,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        max_epochs: int = 300,
        lr_min_factor: float = 0.05,
        warmup_epochs: int = 50,
        reweight_every: int = 20,
        **kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=1e-8, **kwargs)
        self.max_epochs_schedule = int(max_epochs)
        self.lr_min_factor = float(lr_min_factor)
        self.warmup_epochs = int(warmup_epochs)
        self.reweight_every = max(1, int(reweight_every))
        self._sums: dict[str, torch.Tensor] = {}
        self.automatic_optimization = False

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
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def on_validation_epoch_end(self):
        self._log_epoch("validation", "validation_loss")

    def on_train_start(self):
        # Lightning (>= 2.2) keeps each submodule's train/eval mode across fits, and scvi-tools' runner leaves the
        # module in eval mode after a fit: without this, a second stage would train with frozen latent statistics.
        self.module.train()

    def on_train_epoch_start(self):
        epoch = self.current_epoch
        if epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % self.reweight_every == 0 and epoch > 0:
            self.module.reweight()

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, eps=self.eps, weight_decay=0.0)
        if self.weight_decay:
            # weight decay on the encoder only; the heads are governed by the tree penalty
            optimizer = torch.optim.Adam(
                [
                    {"params": list(self.module.encoder.parameters()), "weight_decay": self.weight_decay},
                    {
                        "params": [
                            p
                            for n, p in self.module.named_parameters()
                            if not n.startswith("encoder") and p.requires_grad
                        ]
                    },
                ],
                lr=self.lr,
                eps=self.eps,
            )
        total = max(1, self.max_epochs_schedule)
        floor = self.lr_min_factor

        def cosine(epoch: int) -> float:
            t = min(epoch, total) / total
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

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
