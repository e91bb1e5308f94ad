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
        Adam's weight decay (encoder and root weights).
    max_epochs
        Length of the cosine schedule (set by the model from ``train(max_epochs=...)``).
    lr_min_factor
        Final learning rate as a fraction of ``lr``.
    warmup_epochs
        Epochs before the first reweighting of the log penalty.
    reweight_every
        Epochs between reweightings.
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
        **kwargs,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=1e-8, **kwargs)
        self.max_epochs_schedule = int(max_epochs)
        self.lr_min_factor = float(lr_min_factor)
        self.warmup_epochs = int(warmup_epochs)
        self.reweight_every = max(1, int(reweight_every))

    # Lean steps: the stock plan computes ELBO metrics that a regression model does not have.
    def training_step(self, batch, batch_idx):
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        n = out.n_obs_minibatch
        self.log(
            "train_loss",
            out.loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )
        self.log(
            "mse_train",
            out.extra_metrics["mse"],
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )
        return out.loss

    def validation_step(self, batch, batch_idx):
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        n = out.n_obs_minibatch
        # The penalised validation objective: what restarts and lambda selection are scored on.
        self.log(
            "validation_loss",
            out.loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )
        self.log(
            "mse_validation",
            out.extra_metrics["mse"],
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )

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

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
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
