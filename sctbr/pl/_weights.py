"""Heatmap of the environment weights (the per-environment heads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from sctbr._constants import TBR_KEY
from sctbr._docs import doc_params
from sctbr.pl._common import (
    category_colors,
    dfs_order,
    finish,
    get_field,
    groupby_of,
    latent_label,
    new_axes,
    renderer,
    run_tree,
    thin_labels,
)
from sctbr.pl._tree import _changes_by_arc

_CHANGE_COLOR = "black"


@doc_params("pl_ax", "pl_show", "pl_returns")
def weights(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    include_internal: bool = False,
    changes: bool | None = True,
    cmap: str = "RdBu_r",
    vmax: float | None = None,
    max_labels: int = 60,
    figsize: tuple[float, float] | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the weights of every environment's head as a heatmap (environments in tree order x latents).

    Rows follow a depth-first walk of the tree, so related environments sit together and a change on an arc shows
    as a block of rows whose colour shifts in one column. The colour scale is centred at 0.

    The changes :func:`sctbr.pl.tree` draws are outlined: a change of latent ``j`` on the arc into node ``c`` frames
    the rows of ``c``'s subtree (``c`` itself with ``include_internal``, and every shown descendant) in column
    ``j``, with a solid line for a *changed* entry of the support estimate and a dashed one for an *unresolved*
    change (the data place it on this arc or a neighbouring one but cannot say which). Frames of changes on deeper
    arcs are inset further, so nested blocks stay distinguishable.

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` (or :func:`sctbr.tl.baseline`).
    key
        The fit's ``uns`` key: its ``key_added``, or ``"tbr"`` / ``"baseline"`` for ``key_added=None`` (see
        "Where results go" in the API reference).
    include_internal
        Also show the internal nodes of the tree (ancestral environments), not only the leaves.
    changes
        Which changes to outline, as in :func:`sctbr.pl.tree`: the support estimate (``True``, default, when the
        fit stored one in ``adata.uns[key]["changes"]``), every non-zero entry of the trained
        ``adata.uns[key]["deltas"]`` (``False``), or none (``None``).
    cmap
        A diverging colormap.
    vmax
        Largest absolute weight of the colour scale (default: the largest one shown).
    max_labels
        Most row labels to draw; longer lists get every n-th row labelled.
    figsize
        Size of a new figure (default: grows with the number of rows).
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
    >>> sctbr.pl.weights(adata, include_internal=True)  # doctest: +SKIP
    """
    frame = pd.DataFrame(get_field(adata, key, "environment_weights"))
    frame.index = frame.index.astype(str)
    t = run_tree(adata, key)
    rows = [n for n in dfs_order(t) if (include_internal or t.is_leaf(n)) and n in frame.index]
    if not rows:
        raise ValueError(f"adata.uns[{key!r}]['environment_weights'] has no row for the tree's nodes.")
    values = frame.loc[rows].to_numpy(dtype=float)
    if vmax is None:
        vmax = float(np.nanmax(np.abs(values))) if values.size else 1.0
    vmax = vmax if vmax > 0 else 1.0

    if figsize is None:
        shown = min(len(rows), max_labels) if max_labels > 0 else len(rows)
        figsize = (float(np.clip(2.5 + 0.45 * values.shape[1], 3.5, 10.0)), float(np.clip(0.25 * shown + 1.2, 2.5, 12)))
    fig, ax = new_axes(ax, figsize)
    image = ax.imshow(values, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    # an inset colorbar follows the heatmap when the axes shrink to make room for the legend (finish)
    cbar = fig.colorbar(image, cax=ax.inset_axes((1.04, 0.0, 0.05, 1.0)))
    cbar.set_label("weight")
    ax.set_xticks(np.arange(values.shape[1]), [latent_label(c) for c in frame.columns], rotation=90)
    labelled = thin_labels(len(rows), max_labels)
    ax.set_yticks(labelled, [rows[i] for i in labelled], fontsize=9 if len(rows) <= 30 else 7)
    env_colors = category_colors(adata, groupby_of(adata, key)) or {}
    for tick, i in zip(ax.get_yticklabels(), labelled, strict=True):
        if include_internal and not t.is_leaf(rows[i]):
            tick.set_fontstyle("italic")
        if rows[i] in env_colors:  # the environment's colour in adata.uns[f"{groupby}_colors"]
            tick.set_bbox({"facecolor": env_colors[rows[i]], "edgecolor": "none", "alpha": 0.45, "pad": 1.0})
    ax.set_ylabel("environment (internal nodes in italics)" if include_internal else "environment")
    ax.set_title(f"{key}: environment weights", fontsize="medium")
    if changes is not None:
        handles = _outline_changes(ax, adata, key, t, rows, list(frame.columns), changes=bool(changes))
        if handles:
            _legend_under_ticks(ax, handles)
    return finish(fig, ax, writekey="weights", show=show, save=save, return_fig=return_fig)


def _outline_changes(ax, adata: AnnData, key: str, t, rows: list[str], columns: list, *, changes: bool) -> list:
    """Frame, in its latent's column, the block of rows below every arc with a change; return the legend handles."""
    if "deltas" not in adata.uns[key]:
        return []
    values, called, unres = _changes_by_arc(adata, key, t, changes)
    values, called, unres = (f.reindex(columns=columns) for f in (values, called, unres))
    position = {node: i for i, node in enumerate(rows)}
    drawn = {"changed": False, "unresolved": False}
    for arc, (_, child) in zip(values.index, t.arcs, strict=True):
        block = [position[n] for n in _subtree(t, child) if n in position]
        if not block:
            continue
        inset = min(0.06 + 0.05 * (t.depth(child) - 1), 0.3)
        for j in range(len(columns)):
            is_unres = bool(unres.loc[arc].iloc[j])
            if not (bool(called.loc[arc].iloc[j]) or is_unres) or not abs(float(values.loc[arc].iloc[j])) > 0:
                continue
            top, bottom = min(block), max(block)
            ax.add_patch(
                Rectangle(
                    (j - 0.5 + inset, top - 0.5 + inset / 2),
                    1 - 2 * inset,
                    bottom - top + 1 - inset,
                    fill=False,
                    edgecolor=_CHANGE_COLOR,
                    linewidth=1.2,
                    linestyle="--" if is_unres else "-",
                    zorder=3,
                )
            )
            drawn["unresolved" if is_unres else "changed"] = True
    handles = []
    what = "changed" if changes and "changes" in adata.uns[key] else "trained \u0394 \u2260 0"
    if drawn["changed"]:
        handles.append(Line2D([], [], color=_CHANGE_COLOR, lw=1.2, label=what))
    if drawn["unresolved"]:
        handles.append(Line2D([], [], color=_CHANGE_COLOR, lw=1.2, ls="--", label="unresolved (arc unclear)"))
    return handles


def _subtree(t, node: str) -> list[str]:
    """``node`` and all its descendants."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(t.children(n))
    return out


def _legend_under_ticks(ax, handles: list) -> None:
    """A legend under the axes' tick labels (offset in points, so it stays there when the axes shrink)."""
    rend = renderer(ax.figure)
    below = ax.get_window_extent(rend).y0 - ax.xaxis.get_tightbbox(rend).y0  # pixels taken by the tick labels
    offset = offset_copy(ax.transAxes, fig=ax.figure, y=-(below * 72 / ax.figure.dpi + 4), units="points")
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, 0.0),
        bbox_transform=offset,
        frameon=False,
        fontsize="small",
        title="framed: a change on the arc into these rows",
        title_fontsize="small",
        alignment="left",
    )
