"""The TBR torch module: shared MLP encoder, tree-structured linear heads, sparse arc changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

X_KEY = "X"
Y_KEY = "y"
ENV_KEY = "environment"

Penalty = Literal["l1", "log"]


def _sparse_tensor(matrix: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(matrix, dtype=np.float32)
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        indices, torch.as_tensor(coo.data), size=coo.shape, check_invariants=False
    ).coalesce()


class TBRModule(BaseModuleClass):
    """Encoder ``X -> Z`` and one linear head per environment, ``w_e = w_0 + P[e] @ Delta``.

    Parameters
    ----------
    n_input
        Number of input features.
    n_latent
        Number of latents.
    env_paths
        Sparse (environments x arcs) path-indicator matrix: row ``c`` marks the arcs on the path from the
        root to the environment with category code ``c``.
    hidden
        Widths of the encoder's hidden layers (LeakyReLU between them).
    lam
        Weight of the sparsity penalty on ``Delta``, in units of the standardised target's variance.
    baseline
        One head shared by every environment (no tree, no penalty): the paper's baseline.
    penalty
        ``"l1"``: :math:`\\lambda \\sum |\\Delta|`; ``"log"``: :math:`\\lambda \\sum \\epsilon \\log(1 + |\\Delta| /
        \\epsilon)`, an l0-like penalty minimised by iteratively reweighted l1 (see :meth:`reweight`).
    log_eps
        The :math:`\\epsilon` of the log penalty.
    proximal
        Handle the penalty by proximal (soft-threshold) steps after each optimiser step, which gives exact
        zeros, instead of by its subgradient.
    n_arcs
        Number of arcs (rows of ``Delta``); defaults to the columns of ``env_paths``.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int,
        env_paths: sp.spmatrix,
        *,
        hidden: Sequence[int] = (256, 64),
        lam: float = 1e-2,
        baseline: bool = False,
        penalty: Penalty = "l1",
        log_eps: float = 0.1,
        proximal: bool = True,
        negative_slope: float = 0.01,
        norm_momentum: float = 0.05,
    ):
        super().__init__()
        self.n_input = int(n_input)
        self.n_latent = int(n_latent)
        self.baseline = bool(baseline)
        self.penalty = penalty
        self.log_eps = float(log_eps)
        self.proximal = bool(proximal)
        self.lam = float(lam)

        layers: list[nn.Module] = []
        width = self.n_input
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.LeakyReLU(negative_slope)]
            width = int(h)
        layers.append(nn.Linear(width, self.n_latent))
        self.encoder = nn.Sequential(*layers)
        # Unit-variance latents fix the scale that the penalty would otherwise shrink away (Z*c, W/c). They are
        # standardised with running (EMA) statistics that carry no gradient: BatchNorm's per-batch statistics add
        # noise to every latent (about 1/sqrt(batch size)), which measurably worsened the fit. The BatchNorm layer
        # only holds the running statistics (so they are saved with the model).
        self.norm_momentum = float(norm_momentum)
        self.standardize = nn.BatchNorm1d(self.n_latent, affine=False, momentum=self.norm_momentum)

        self.w0 = nn.Parameter(torch.randn(self.n_latent) * 0.1)
        self.bias = nn.Parameter(torch.zeros(1))
        n_arcs = int(env_paths.shape[1])
        self.delta = nn.Parameter(torch.zeros(n_arcs, self.n_latent), requires_grad=not self.baseline)
        # derivable from the tree, so not saved (sparse buffers do not round-trip through load_state_dict)
        self.register_buffer("env_paths", _sparse_tensor(env_paths), persistent=False)
        self.register_buffer("penalty_weights", torch.ones(n_arcs, self.n_latent))
        self.register_buffer("y_mean", torch.zeros(1))
        self.register_buffer("y_std", torch.ones(1))

    # -- pieces -------------------------------------------------------------------------------------------
    def set_target_scale(self, mean: float, std: float) -> None:
        """Set the training target's mean and standard deviation; the loss is computed on ``(y - mean) / std``."""
        self.y_mean.fill_(float(mean))
        self.y_std.fill_(float(std) if std > 0 else 1.0)

    def env_weights(self) -> torch.Tensor:
        """Heads of all environments (categories x latents)."""
        if self.baseline:
            return self.w0.unsqueeze(0).expand(self.env_paths.shape[0], -1)
        return self.w0.unsqueeze(0) + torch.sparse.mm(self.env_paths, self.delta)

    def penalty_value(self) -> torch.Tensor:
        """The penalty term :math:`\\lambda R(\\Delta)` (0 for the baseline)."""
        if self.baseline or self.lam == 0:
            return self.delta.new_zeros(())
        a = self.delta.abs()
        if self.penalty == "log":
            return self.lam * (self.log_eps * torch.log1p(a / self.log_eps)).sum()
        return self.lam * a.sum()

    @torch.no_grad()
    def reweight(self) -> None:
        """Majorise the log penalty at the current ``Delta`` (one step of iteratively reweighted l1)."""
        if self.penalty == "log":
            self.penalty_weights.copy_(self.log_eps / (self.log_eps + self.delta.abs()))

    @torch.no_grad()
    def proximal_step(self, step_size: torch.Tensor | float) -> None:
        """Soft-threshold ``Delta`` by ``step_size * lam * weights`` (``step_size`` may be per entry)."""
        if self.baseline or self.lam == 0:
            return
        threshold = step_size * self.lam * self.penalty_weights
        self.delta.copy_(torch.sign(self.delta) * torch.clamp(self.delta.abs() - threshold, min=0.0))

    @torch.no_grad()
    def apply_basis(self, m: np.ndarray, w0: np.ndarray, delta: np.ndarray) -> None:
        """Map the latents to ``Z M`` (folded into the encoder's last layer) and set the heads in that basis."""
        last = self.encoder[-1]
        bn = self.standardize
        mt = torch.as_tensor(np.asarray(m).T, dtype=last.weight.dtype, device=last.weight.device)
        inv_sd = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        last.weight.copy_(mt @ (last.weight * inv_sd[:, None]))
        last.bias.copy_(mt @ ((last.bias - bn.running_mean) * inv_sd))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        self.w0.copy_(torch.as_tensor(w0, dtype=self.w0.dtype))
        self.delta.copy_(torch.as_tensor(delta, dtype=self.delta.dtype))

    # -- scvi-tools module API ----------------------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[X_KEY]}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {"z": inference_outputs["z"], "env": tensors[ENV_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents of a batch of inputs."""
        if x.is_sparse or x.layout != torch.strided:
            x = x.to_dense()
        h = self.encoder(x)
        bn = self.standardize
        if self.training and h.shape[0] > 1:
            with torch.no_grad():
                m = self.norm_momentum if bn.num_batches_tracked > 0 else 1.0
                bn.running_mean.lerp_(h.mean(0), m)
                bn.running_var.lerp_(h.var(0), m)
                bn.num_batches_tracked += 1
        return {"z": (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)}

    @auto_move_data
    def generative(self, z: torch.Tensor, env: torch.Tensor) -> dict[str, torch.Tensor]:
        """Standardised prediction of the target for each cell from its environment's head."""
        weights = self.env_weights()[env.reshape(-1).long()]
        return {"y_std_pred": (z * weights).sum(-1) + self.bias}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Mean squared error on the standardised target plus the sparsity penalty."""
        y = (tensors[Y_KEY].reshape(-1) - self.y_mean) / self.y_std
        sq = (generative_outputs["y_std_pred"] - y) ** 2
        mse = sq.mean()
        pen = self.penalty_value()
        # With proximal steps the penalty is handled outside the gradient; it is still reported.
        loss = mse + (pen.detach() if self.proximal else pen)
        return LossOutput(
            loss=loss,
            reconstruction_loss=sq,
            n_obs_minibatch=sq.shape[0],
            extra_metrics={"mse": mse.detach(), "penalty": pen.detach()},
        )

    @torch.inference_mode()
    def predict_target(self, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Prediction of the target on its original scale."""
        z = self.inference(x)["z"]
        return self.generative(z, env)["y_std_pred"] * self.y_std + self.y_mean
