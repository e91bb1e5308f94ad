"""Experiment summaries: MCC, prediction error and transfer error per sparsity level, TBR vs baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from sctbr._docs import doc_params
from sctbr.pl._common import METHOD_COLORS, check_columns, finish, method_colors, new_axes

_AXIS_LABELS = {
    "k": "sparsity k",
    "mcc": "MCC",
    "test_mse": "test MSE",
    "transfer_mse": "MSE on unseen environments",
    "n_latent": "number of latents",
}


def _levels(values: pd.Series, order: Sequence | None) -> list:
    """Distinct values in ``order`` (if given) or sorted (numbers numerically)."""
    present = list(pd.unique(values.dropna()))
    if order is not None:
        return [v for v in order if v in set(present)]
    try:
        return sorted(present)
    except TypeError:
        return present


def _hue_levels(values: pd.Series, hue_order: Sequence | None) -> list:
    """Methods in ``hue_order``, else TBR and baseline first, then the others as they appear."""
    present = list(pd.unique(values.dropna()))
    if hue_order is not None:
        return [v for v in hue_order if v in set(present)]
    known = list(dict.fromkeys(METHOD_COLORS))
    return sorted(present, key=lambda m: (known.index(m) if m in known else len(known), present.index(m)))


def _tick_label(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{v:g}"
    return str(v)


def _grouped_box_points(
    results: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str,
    order: Sequence | None,
    hue_order: Sequence | None,
    log: bool,
    title: str | None,
    random_state: int,
    writekey: str,
    ax,
    show: bool | None,
    save: bool | str | None,
    return_fig: bool,
):
    """Box (quartiles) + jittered points of ``y`` per ``x`` level, one box per ``hue`` level side by side."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"`results` must be a pandas DataFrame (sctbr's tidy results table), got {type(results)}.")
    check_columns(results, [x, y, hue])
    data = results[[x, y, hue]].copy()
    data[y] = pd.to_numeric(data[y], errors="coerce")
    data = data[np.isfinite(data[y].to_numpy(dtype=float))]
    if data.empty:
        raise ValueError(
            f"Column {y!r} of `results` has no finite values"
            + (" (transfer_mse is NaN outside the transfer experiment)." if y == "transfer_mse" else ".")
        )
    xs = _levels(data[x], order)
    hues = _hue_levels(data[hue], hue_order)
    if not xs or not hues:
        raise ValueError(f"No rows of `results` match order={order!r} and hue_order={hue_order!r}.")
    colors = method_colors(hues)
    fig, ax = new_axes(ax, (max(3.5, 0.6 * len(xs) * len(hues) ** 0.5 + 2.0), 3.2))
    rng = np.random.default_rng(random_state)
    slot = 0.8 / len(hues)
    for j, h in enumerate(hues):
        offset = -0.4 + slot * (j + 0.5)
        px, py = [], []
        for i, level in enumerate(xs):
            vals = data.loc[(data[x] == level) & (data[hue] == h), y].to_numpy(dtype=float)
            if vals.size == 0:
                continue
            pos = i + offset
            ax.boxplot(
                [vals],
                positions=[pos],
                widths=slot * 0.8,
                patch_artist=True,
                showfliers=False,
                manage_ticks=False,
                boxprops={"facecolor": colors[h], "alpha": 0.3, "edgecolor": colors[h]},
                medianprops={"color": colors[h], "linewidth": 1.5},
                whiskerprops={"color": colors[h]},
                capprops={"color": colors[h]},
            )
            px.append(pos + rng.uniform(-slot * 0.25, slot * 0.25, vals.size))
            py.append(vals)
        if px:
            ax.scatter(
                np.concatenate(px), np.concatenate(py), s=12, color=colors[h], edgecolors="none", alpha=0.8, zorder=3
            )
    ax.set_xticks(np.arange(len(xs)), [_tick_label(v) for v in xs])
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_xlabel(_AXIS_LABELS.get(x, x))
    ax.set_ylabel(_AXIS_LABELS.get(y, y))
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(
        handles=[Patch(facecolor=colors[h], edgecolor=colors[h], alpha=0.6, label=str(h)) for h in hues],
        title=hue,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        fontsize="small",
    )
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, writekey=writekey, show=show, save=save, return_fig=return_fig)


@doc_params("pl_results", "pl_results_order", "pl_results_title", "pl_ax", "pl_show", "pl_returns")
def mcc(
    results: pd.DataFrame,
    *,
    x: str = "k",
    y: str = "mcc",
    hue: str = "method",
    order: Sequence | None = None,
    hue_order: Sequence | None = None,
    title: str | None = None,
    random_state: int = 0,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the mean correlation coefficient (MCC) per sparsity level, TBR against the baseline.

    A box (quartiles and median) and the repetitions as points for each method at each level of ``x``, as in
    Fig. 3a and 4a of the paper. MCC = 1 means the latents were identified up to permutation and scaling.

    Parameters
    ----------
    {pl_results}
    x
        Column on the x-axis (one group of boxes per distinct value).
    y
        Column with the values.
    hue
        Column that tells the methods apart (colours: TBR blue, baseline orange, others from a fixed cycle).
    {pl_results_order}
    {pl_results_title}
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import pandas as pd
    >>> import sctbr
    >>> results = pd.DataFrame(
    ...     {"method": ["tbr", "baseline"] * 4, "k": [1, 1, 2, 2] * 2, "seed": [0, 0, 0, 0, 1, 1, 1, 1],
    ...      "mcc": [0.98, 0.71, 0.93, 0.70, 0.97, 0.74, 0.90, 0.69]}
    ... )
    >>> ax = sctbr.pl.mcc(results, show=False)
    """
    return _grouped_box_points(
        results,
        x=x,
        y=y,
        hue=hue,
        order=order,
        hue_order=hue_order,
        log=False,
        title=title,
        random_state=random_state,
        ax=ax,
        show=show,
        writekey="mcc",
        save=save,
        return_fig=return_fig,
    )


@doc_params("pl_results", "pl_results_order", "pl_results_title", "pl_ax", "pl_show", "pl_returns")
def prediction_error(
    results: pd.DataFrame,
    *,
    x: str = "k",
    y: str = "test_mse",
    hue: str = "method",
    order: Sequence | None = None,
    hue_order: Sequence | None = None,
    log: bool = False,
    title: str | None = None,
    random_state: int = 0,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the prediction error (MSE on held-out cells) per sparsity level, TBR against the baseline.

    A box and the repetitions as points for each method at each level of ``x``, as in Fig. 3b of the paper.

    Parameters
    ----------
    {pl_results}
    x
        Column on the x-axis.
    y
        Column with the errors.
    hue
        Column that tells the methods apart.
    {pl_results_order}
    log
        Logarithmic y-axis (errors that differ by orders of magnitude).
    {pl_results_title}
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import pandas as pd
    >>> import sctbr
    >>> results = pd.DataFrame(
    ...     {"method": ["tbr", "baseline"] * 2, "k": [1, 1, 2, 2], "seed": 0, "test_mse": [0.02, 0.9, 0.03, 0.8]}
    ... )
    >>> ax = sctbr.pl.prediction_error(results, log=True, show=False)
    """
    return _grouped_box_points(
        results,
        x=x,
        y=y,
        hue=hue,
        order=order,
        hue_order=hue_order,
        log=log,
        title=title,
        random_state=random_state,
        ax=ax,
        show=show,
        writekey="prediction_error",
        save=save,
        return_fig=return_fig,
    )


@doc_params("pl_results", "pl_results_order", "pl_results_title", "pl_ax", "pl_show", "pl_returns")
def transfer(
    results: pd.DataFrame,
    *,
    x: str = "k",
    y: str = "transfer_mse",
    hue: str = "method",
    order: Sequence | None = None,
    hue_order: Sequence | None = None,
    log: bool = False,
    title: str | None = None,
    random_state: int = 0,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the error on environments held out of training, per method and sparsity level.

    TBR predicts an unseen environment with the head of the closest observed environment in the tree; the
    baseline is trained on that neighbour alone (Fig. 4b of the paper). Rows whose ``y`` is NaN (other
    experiments) are dropped.

    Parameters
    ----------
    {pl_results}
    x
        Column on the x-axis.
    y
        Column with the errors on the unseen environments.
    hue
        Column that tells the methods apart.
    {pl_results_order}
    log
        Logarithmic y-axis.
    {pl_results_title}
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import pandas as pd
    >>> import sctbr
    >>> results = pd.DataFrame(
    ...     {"method": ["tbr", "baseline"] * 2, "k": [1, 1, 2, 2], "seed": 0, "transfer_mse": [0.1, 0.5, 0.2, 0.6]}
    ... )
    >>> ax = sctbr.pl.transfer(results, show=False)
    """
    return _grouped_box_points(
        results,
        x=x,
        y=y,
        hue=hue,
        order=order,
        hue_order=hue_order,
        log=log,
        title=title,
        random_state=random_state,
        ax=ax,
        show=show,
        writekey="transfer",
        save=save,
        return_fig=return_fig,
    )
