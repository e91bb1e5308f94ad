"""Heatmap of the environment weights (the per-environment heads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

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
    run_tree,
    thin_labels,
)


@doc_params("pl_ax", "pl_show", "pl_returns")
def weights(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    include_internal: bool = False,
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

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` (or :func:`sctbr.tl.baseline`).
    key
        The fit's ``uns`` key: its ``key_added``, or ``"tbr"`` / ``"baseline"`` for ``key_added=None`` (see
        "Where results go" in the API reference).
    include_internal
        Also show the internal nodes of the tree (ancestral environments), not only the leaves.
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
    cbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
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
    return finish(fig, ax, writekey="weights", show=show, save=save, return_fig=return_fig)
