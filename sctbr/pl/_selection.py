"""Plots of ``sctbr.tl.select_n_latent`` (the validation curve) and ``sctbr.tl.stability`` (agreement of seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._docs import doc_params
from sctbr.pl._common import METHOD_COLORS, finish, latent_colors, latent_label, new_axes


def _result(obj, key: str, fields: Sequence[str], tool: str) -> Mapping:
    """The result of ``sctbr.tl.<tool>``: from ``adata.uns[key]`` or as returned with ``inplace=False``."""
    if isinstance(obj, AnnData):
        if key not in obj.uns:
            raise KeyError(
                f"adata.uns[{key!r}] is missing. Run sctbr.tl.{tool}(adata, key_added={key!r}) first, or pass the "
                "result it returns with inplace=False."
            )
        obj = obj.uns[key]
    if not isinstance(obj, Mapping):
        raise TypeError(f"Expected an AnnData or the dict returned by sctbr.tl.{tool}, got {type(obj)}.")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise KeyError(f"The result lacks {missing}: it was not made by sctbr.tl.{tool}.")
    return obj


@doc_params("pl_ax", "pl_show", "pl_returns")
def n_latent(
    result: AnnData | Mapping,
    *,
    key: str = "tbr_n_latent",
    train: bool = True,
    log: bool = False,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the validation error against the number of latents, with the chosen size marked.

    The curve of :func:`sctbr.tl.select_n_latent`: validation MSE (with one standard error) per candidate size, the
    training MSE (dashed), the plateau threshold (dotted) and the chosen size (vertical line): the smallest size
    whose validation error lies under the threshold.

    Parameters
    ----------
    result
        An AnnData after :func:`sctbr.tl.select_n_latent` (read from ``uns[key]``), or the dict it returns with
        ``inplace=False``.
    key
        ``key_added`` of :func:`sctbr.tl.select_n_latent`.
    train
        Also draw the training error.
    log
        Logarithmic error axis.
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.select_n_latent(adata, candidates=range(1, 5), max_epochs=60)  # doctest: +SKIP
    >>> sctbr.pl.n_latent(adata)  # doctest: +SKIP
    """
    res = _result(result, key, ("curve", "n_latent", "threshold"), "select_n_latent")
    curve = pd.DataFrame(res["curve"])
    x = curve["n_latent"].to_numpy(dtype=int)
    val = curve["validation_mse"].to_numpy(dtype=float)
    se = curve["validation_se"].to_numpy(dtype=float) if "validation_se" in curve else np.zeros_like(val)
    chosen = int(res["n_latent"])
    color = METHOD_COLORS["tbr"]
    fig, ax = new_axes(ax, (4.0, 3.0))
    ax.errorbar(x, val, yerr=np.nan_to_num(se), fmt="o-", color=color, capsize=2, label="validation")
    if train and "train_mse" in curve:
        ax.plot(x, curve["train_mse"].to_numpy(dtype=float), "s--", color="0.5", ms=3.5, label="train")
    ax.axhline(float(res["threshold"]), color="0.3", linestyle=":", linewidth=1.0, label="plateau threshold")
    ax.axvline(chosen, color="#d62728", linestyle="--", linewidth=1.0, label=f"chosen: {chosen}")
    ax.plot([chosen], [val[x == chosen][0]], marker="*", ms=13, color="#d62728", linestyle="none", zorder=4)
    ax.set_xticks(x)
    ax.set_xlabel("number of latents")
    ax.set_ylabel("MSE")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small", frameon=False)
    return finish(fig, ax, writekey="n_latent", show=show, save=save, return_fig=return_fig)


@doc_params("pl_ax", "pl_show", "pl_returns")
def stability(
    result: AnnData | Mapping,
    *,
    key: str = "tbr_stability",
    kind: Literal["matrix", "latents"] = "matrix",
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the agreement between refits with different seeds (from :func:`sctbr.tl.stability`).

    ``kind="matrix"``: the MCC between every two runs as a heatmap (values written in the cells), titled with the
    mean. ``kind="latents"``: one bar per latent of the first run, the mean absolute correlation with its match in
    the other runs, a whisker down to the lowest one, and the threshold (dashed): bars under it are latents the
    seeds do not agree on.

    Parameters
    ----------
    result
        An AnnData after :func:`sctbr.tl.stability` (read from ``uns[key]``), or the dict it returns with
        ``inplace=False``.
    key
        ``key_added`` of :func:`sctbr.tl.stability`.
    kind
        ``"matrix"`` or ``"latents"``.
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.stability(adata, n_seeds=3, n_latent=2, max_epochs=60)  # doctest: +SKIP
    >>> sctbr.pl.stability(adata, kind="latents")  # doctest: +SKIP
    """
    if kind not in ("matrix", "latents"):
        raise ValueError(f"`kind` must be 'matrix' or 'latents', got {kind!r}.")
    res = _result(result, key, ("matrix", "per_latent", "summary"), "stability")
    summary = res["summary"]
    threshold = float(summary["threshold"])
    if kind == "matrix":
        matrix = pd.DataFrame(res["matrix"])
        n = matrix.shape[0]
        fig, ax = new_axes(ax, (1.0 + 0.55 * n + 1.0, 0.8 + 0.55 * n))
        image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis")
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    v = float(matrix.iat[i, j])
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "w")
        labels = [str(v) for v in matrix.columns]
        ax.set_xticks(np.arange(n), labels)
        ax.set_yticks(np.arange(n), labels)
        ax.set_xlabel("seed")
        ax.set_ylabel("seed")
        ax.set_title(f"MCC between runs (mean {float(summary['mean_mcc']):.2f})", fontsize="medium")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="MCC")
        return finish(fig, ax, writekey="stability", show=show, save=save, return_fig=return_fig)

    per_latent = pd.DataFrame(res["per_latent"])
    names = [str(v) for v in per_latent["latent"]]
    mean = per_latent["mean_abs_corr"].to_numpy(dtype=float)
    low = per_latent["min_abs_corr"].to_numpy(dtype=float)
    fig, ax = new_axes(ax, (max(3.0, 0.6 * len(names) + 1.5), 3.0))
    x = np.arange(len(names))
    ax.bar(x, mean, color=latent_colors(len(names)), alpha=0.85)
    ax.errorbar(x, mean, yerr=np.vstack([mean - low, np.zeros_like(mean)]), fmt="none", ecolor="0.2", capsize=3)
    ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1.0, label=f"threshold {threshold:g}")
    ax.set_xticks(x, [latent_label(v) for v in names])
    ax.set_ylim(0.0, 1.18)  # headroom above 1 for the legend
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("|correlation| with match in other runs")
    ax.legend(fontsize="small", frameon=False, loc="upper right")
    return finish(fig, ax, writekey="stability", show=show, save=save, return_fig=return_fig)
