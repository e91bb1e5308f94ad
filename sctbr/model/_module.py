"""The TBR torch module: shared MLP encoder, tree-structured linear heads, sparse arc changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY

Penalty = Literal["l1", "log"]
Loss = Literal["mse", "logistic"]


def _sparse_tensor(matrix: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(matrix, dtype=np.float32)
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        indices, torch.as_tensor(coo.data), size=coo.shape, check_invariants=False
    ).coalesce()


#: Trees with more observed environments than this gather each batch's heads from its paths' arcs.
GATHER_MIN_ENVIRONMENTS = 256
#: Largest padded path index (environments x depth entries) built for the gathered heads.
GATHER_MAX_ENTRIES = 20_000_000


def _padded_paths(env_paths: sp.spmatrix) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Arcs on each environment's path as a padded ``(environments, depth)`` index and its values (0 pads).

    ``None`` when the padded index would exceed :data:`GATHER_MAX_ENTRIES` (very deep trees).
    """
    csr = sp.csr_matrix(env_paths)
    lengths = np.diff(csr.indptr)
    depth = max(int(lengths.max()) if lengths.size else 0, 1)
    if csr.shape[0] * depth > GATHER_MAX_ENTRIES:
        return None, None
    index = np.zeros((csr.shape[0], depth), dtype=np.int64)
    value = np.zeros((csr.shape[0], depth), dtype=np.float32)
    rows = np.repeat(np.arange(csr.shape[0]), lengths)
    cols = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], lengths)
    index[rows, cols] = csr.indices
    value[rows, cols] = csr.data
    return torch.as_tensor(index), torch.as_tensor(value)


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
    n_targets
        Number of targets predicted from the same latents; each has its own root weights and arc changes (stored
        side by side: ``w0`` has ``n_targets * n_latent`` entries and ``Delta`` as many columns, target-major),
        and the losses and penalties of the targets add.
    losses
        Loss of each target: ``"mse"`` (squared error on the standardised target) or ``"logistic"`` (a 0/1
        target; the head predicts its log-odds). Default: ``"mse"`` for all.

    Examples
    --------
    >>> import torch
    >>> from sctbr import EnvironmentTree
    >>> from sctbr.model import TBRModule
    >>> tree = EnvironmentTree.coerce({"A": "root", "B": "root", "A1": "A"})
    >>> module = TBRModule(n_input=10, n_latent=3, env_paths=tree.path_matrix(["A", "B", "A1"]), hidden=(16,))
    >>> module.inference(torch.randn(4, 10))["z"].shape
    torch.Size([4, 3])
    >>> module.env_weights().shape  # one head per environment: w_0 + P[e] @ Delta
    torch.Size([3, 3])
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
        n_targets: int = 1,
        losses: Sequence[Loss] | None = None,
    ):
        super().__init__()
        self.n_targets = int(n_targets)
        self.losses = tuple(losses) if losses is not None else ("mse",) * self.n_targets
        if len(self.losses) != self.n_targets or not set(self.losses) <= {"mse", "logistic"}:
            raise ValueError(f"`losses` must give 'mse' or 'logistic' for each of {n_targets} targets: {losses!r}.")
        self._logistic = "logistic" in self.losses
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

        n_heads = self.n_targets * self.n_latent
        self.w0 = nn.Parameter(torch.randn(n_heads) * 0.1)
        self.bias = nn.Parameter(torch.zeros(self.n_targets))
        n_arcs = int(env_paths.shape[1])
        self.delta = nn.Parameter(torch.zeros(n_arcs, n_heads), requires_grad=not self.baseline)
        # derivable from the tree, so not saved (sparse buffers do not round-trip through load_state_dict)
        self.register_buffer("env_paths", _sparse_tensor(env_paths), persistent=False)
        # Large trees: a batch's heads are gathered from the arcs on its environments' paths (padded index), so a
        # step costs O(batch x depth) instead of O(all environments) (measured 20 ms -> 0.7 ms per step at 10^4
        # environments, benchmarks/tree_scaling.py). Small trees keep the one sparse product (cheaper there).
        path_index, path_value = _padded_paths(env_paths)
        self.gather_heads = path_index is not None and env_paths.shape[0] > GATHER_MIN_ENVIRONMENTS
        if self.gather_heads:
            self.register_buffer("path_index", path_index, persistent=False)
            self.register_buffer("path_value", path_value, persistent=False)
        self.register_buffer("penalty_weights", torch.ones(n_arcs, n_heads))
        self.register_buffer("y_mean", torch.zeros(self.n_targets))
        self.register_buffer("y_std", torch.ones(self.n_targets))
        self.register_buffer(
            "logistic_mask", torch.tensor([loss == "logistic" for loss in self.losses]), persistent=False
        )

    # -- pieces -------------------------------------------------------------------------------------------
    def set_target_scale(self, mean, std) -> None:
        """Set the training target's mean and standard deviation; the loss is computed on ``(y - mean) / std``.

        With several targets, ``mean`` and ``std`` hold one value per target. Binary (logistic) targets are not
        standardised: their mean and standard deviation are set to 0 and 1 whatever is passed.
        """
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64).reshape(-1), dtype=self.y_mean.dtype)
        std = torch.as_tensor(np.asarray(std, dtype=np.float64).reshape(-1), dtype=self.y_std.dtype)
        std = torch.where(std > 0, std, torch.ones_like(std))
        logistic = self.logistic_mask.cpu()
        self.y_mean.copy_(torch.where(logistic, torch.zeros_like(mean), mean).expand_as(self.y_mean))
        self.y_std.copy_(torch.where(logistic, torch.ones_like(std), std).expand_as(self.y_std))

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
        # with several targets: w0 (targets x latents) and delta (arcs x targets x latents), or already flat
        self.w0.copy_(torch.as_tensor(np.asarray(w0), dtype=self.w0.dtype).reshape(self.w0.shape))
        self.delta.copy_(torch.as_tensor(np.asarray(delta), dtype=self.delta.dtype).reshape(self.delta.shape))

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
        """Standardised prediction (log-odds for a binary target) for each cell from its environment's head.

        Shape ``(cells,)`` with one target, ``(cells, n_targets)`` with several.
        """
        env = env.reshape(-1).long()
        if self.gather_heads and not self.baseline:
            weights = self.w0 + (self.delta[self.path_index[env]] * self.path_value[env].unsqueeze(-1)).sum(1)
        else:
            weights = self.env_weights()[env]
        if self.n_targets == 1:
            return {"y_std_pred": (z * weights).sum(-1) + self.bias}
        weights = weights.reshape(-1, self.n_targets, self.n_latent)
        return {"y_std_pred": torch.einsum("bd,btd->bt", z, weights) + self.bias}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Data term plus the sparsity penalty.

        The data term is the mean squared error on the standardised target, or the mean logistic loss (binary
        cross-entropy on the log-odds) for a binary target; with several targets, the sum of the targets' terms.
        ``reconstruction_loss`` holds each cell's data term (summed over targets).
        """
        if self.n_targets == 1:
            y = (tensors[Y_KEY].reshape(-1) - self.y_mean) / self.y_std
        else:
            y = (tensors[Y_KEY].reshape(-1, self.n_targets) - self.y_mean) / self.y_std
        pred = generative_outputs["y_std_pred"]
        sq = (pred - y) ** 2
        if self._logistic:
            bce = F.binary_cross_entropy_with_logits(pred, y, reduction="none")
            sq = torch.where(self.logistic_mask, bce, sq)
        if self.n_targets > 1:
            sq = sq.sum(-1)
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
        """Prediction of the target on its original scale (the probability of 1 for a binary target)."""
        z = self.inference(x)["z"]
        pred = self.generative(z, env)["y_std_pred"]
        out = pred * self.y_std + self.y_mean
        if self._logistic:
            out = torch.where(self.logistic_mask, torch.sigmoid(pred), out)
        return out


def resolve_losses(loss, y: np.ndarray, targets: list[str]) -> list[str]:
    """Loss per target: ``"auto"`` is logistic for 0/1 targets, squared error otherwise."""
    losses = [loss] * len(targets) if isinstance(loss, str) else list(loss)
    if len(losses) != len(targets):
        raise ValueError(f"`loss` gives {len(losses)} values for {len(targets)} targets {targets}.")
    out = []
    for name, kind, col in zip(targets, losses, y.T, strict=True):
        if kind not in ("auto", "mse", "logistic"):
            raise ValueError(f"`loss` must be 'auto', 'mse' or 'logistic', got {kind!r}.")
        binary = bool(np.isin(col, (0.0, 1.0)).all())
        if kind == "logistic" and not binary:
            others = np.unique(col[~np.isin(col, (0.0, 1.0))])[:5]
            raise ValueError(
                f"loss='logistic' needs a 0/1 target, and {name!r} has other values (e.g. {list(others)}). Use "
                "loss='mse', or make the target binary (e.g. (adata.obs[target] > threshold).astype(float))."
            )
        out.append("logistic" if kind == "logistic" or (kind == "auto" and binary) else "mse")
    return out
