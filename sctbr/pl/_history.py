"""Training curves of a fit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._constants import TBR_KEY
from sctbr._docs import doc_params
from sctbr.pl._common import METHOD_COLORS, finish, get_field, get_run, new_axes

#: Line style of each metric ``sctbr.tl.tbr`` records (the colour is the method's).
_STYLES = {
    "train_loss": ("-", "train loss"),
    "validation_loss": ("--", "validation loss"),
    "mse_train": (":", "train MSE"),
    "mse_validation": ("-.", "validation MSE"),
}


@doc_params("pl_ax", "pl_show", "pl_returns")
def history(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    metrics: Sequence[str] | None = None,
    log: bool = False,
    stages: bool = True,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the training and validation loss of a fit by epoch.

    The losses are the penalised objective (mean squared error of the standardised target plus the sparsity
    penalty). A validation loss that rises while the training loss falls means overfitting; curves that still fall
    steeply at the last epoch mean more epochs would help.

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` (or :func:`sctbr.tl.baseline`).
    key
        The fit's ``uns`` key: its ``key_added``, or ``"tbr"`` / ``"baseline"`` for ``key_added=None`` (see
        "Where results go" in the API reference).
    metrics
        Columns of ``adata.uns[key]["history"]`` to draw; default ``train_loss`` and ``validation_loss`` (those
        recorded; a fit without a validation split has only the first). Add ``"mse_train"`` and
        ``"mse_validation"`` for the unpenalised errors.
    log
        Logarithmic y-axis.
    stages
        Mark where TBR's penalised "sparsify" stage begins (after the unpenalised fit and the basis refinement;
        see :meth:`sctbr.model.TBR.train`): the first epoch whose training loss exceeds the training MSE. The loss
        jumps there because the penalty joins the objective.
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=50)
    >>> sctbr.tl.tbr(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    >>> sctbr.pl.history(adata, metrics=["train_loss", "validation_loss", "mse_validation"])  # doctest: +SKIP
    """
    run = get_run(adata, key)
    frame = pd.DataFrame(get_field(adata, key, "history"))
    if metrics is None:
        metrics = [m for m in ("train_loss", "validation_loss") if m in frame.columns] or list(frame.columns)
    else:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        missing = [m for m in metrics if m not in frame.columns]
        if missing:
            raise KeyError(
                f"adata.uns[{key!r}]['history'] has no column(s) {missing}; recorded: {list(frame.columns)}."
            )
    if frame.empty or not metrics:
        raise ValueError(f"adata.uns[{key!r}]['history'] is empty: the fit recorded no epochs.")
    epochs = pd.to_numeric(pd.Index(frame.index), errors="coerce").to_numpy(dtype=float)
    if np.isnan(epochs).any():
        epochs = np.arange(len(frame), dtype=float)
    color = METHOD_COLORS.get(str(run["params"].get("method", "")), "#333333")
    fig, ax = new_axes(ax, (4.5, 3.2))
    marker = "o" if len(frame) <= 20 else None
    for i, m in enumerate(metrics):
        style, label = _STYLES.get(m, ((0, (3, 1, 1, 1)), m))
        values = pd.to_numeric(frame[m], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values)
        ax.plot(
            epochs[ok],
            values[ok],
            ls=style,
            color=color,
            alpha=1.0 if i == 0 else 0.85,
            marker=marker,
            markersize=3,
            label=label,
        )
    start = _sparsify_start(frame, epochs) if stages else None
    if start is not None:
        ax.axvline(start - 0.5, color="0.5", ls=":", lw=1, label="sparsify stage starts")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{key}: training history", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, writekey="history", show=show, save=save, return_fig=return_fig)


def _sparsify_start(frame: pd.DataFrame, epochs: np.ndarray) -> float | None:
    """First epoch with a penalty in the training loss, when earlier epochs had none (else None)."""
    if not {"train_loss", "mse_train"} <= set(frame.columns):
        return None
    loss = pd.to_numeric(frame["train_loss"], errors="coerce").to_numpy(dtype=float)
    mse = pd.to_numeric(frame["mse_train"], errors="coerce").to_numpy(dtype=float)
    penalised = np.flatnonzero(loss - mse > 1e-6 * np.nanmax(np.abs(loss)))
    if penalised.size == 0 or penalised[0] == 0:
        return None
    return float(epochs[penalised[0]])
