"""The environment tree with the latents that change on each arc."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from sctbr._constants import TBR_KEY
from sctbr._docs import doc_params
from sctbr._tree import EnvironmentTree
from sctbr.pl._common import (
    category_colors,
    dfs_order,
    finish,
    get_field,
    get_run,
    groupby_of,
    latent_colors,
    latent_label,
    new_axes,
    observed_nodes,
    renderer,
    run_tree,
    thin_labels,
)

_EDGE_COLOR = "0.6"
_NODE_COLOR = "0.25"


def tree_layout(tree: EnvironmentTree) -> dict[str, tuple[float, float]]:
    """Dendrogram layout: ``node -> (depth, y)``, leaves at ``y = 0, 1, ...`` in depth-first order, parents centred.

    Parameters
    ----------
    tree
        The environment tree.

    Returns
    -------
    Position of every node: its depth (arcs from the root) and its height.
    """
    order = dfs_order(tree)
    y: dict[str, float] = {}
    rank = 0
    for node in order:
        if tree.is_leaf(node):
            y[node] = float(rank)
            rank += 1
    for node in reversed(order):  # children before their parent
        if node not in y:
            y[node] = float(np.mean([y[c] for c in tree.children(node)]))
    return {n: (float(tree.depth(n)), y[n]) for n in order}


def _deltas_by_arc(adata: AnnData, key: str, t: EnvironmentTree) -> pd.DataFrame:
    deltas = pd.DataFrame(get_field(adata, key, "deltas"))
    deltas.index = deltas.index.astype(str)
    labels = list(t.arc_labels)
    missing = [a for a in labels if a not in deltas.index]
    if missing:
        raise ValueError(
            f"adata.uns[{key!r}]['deltas'] lacks {len(missing)} arcs of the stored tree (e.g. {missing[:3]}); "
            f"rerun sctbr.tl.tbr(adata, key_added={key!r})."
        )
    return deltas.loc[labels]


def _changes_by_arc(adata: AnnData, key: str, t: EnvironmentTree, use_changes: bool):
    """``(values, changed, unresolved)`` frames: the support estimate when stored and wanted, else the trained Delta."""
    deltas = _deltas_by_arc(adata, key, t)
    stored = get_field(adata, key, "changes") if use_changes and "changes" in adata.uns[key] else None
    if stored is None:
        return deltas, deltas != 0, pd.DataFrame(False, index=deltas.index, columns=deltas.columns)
    labels = list(t.arc_labels)
    frames = []
    for name in ("delta", "changed", "unresolved"):
        frame = pd.DataFrame(stored[name])
        frame.index = frame.index.astype(str)
        frames.append(frame.loc[labels])
    return frames[0], frames[1].astype(bool), frames[2].astype(bool)


def _select_latents(deltas: pd.DataFrame, latents: Sequence[int | str] | None) -> pd.DataFrame:
    if latents is None:
        return deltas
    cols = []
    for lat in latents:
        if isinstance(lat, int | np.integer):
            if not 0 <= lat < deltas.shape[1]:
                raise IndexError(f"latent {lat} out of range: the fit has {deltas.shape[1]} latents.")
            cols.append(deltas.columns[int(lat)])
        elif lat in deltas.columns:
            cols.append(lat)
        else:
            raise KeyError(f"latent {lat!r} is not one of {list(deltas.columns)}.")
    return deltas[cols]


@doc_params("pl_ax", "pl_show", "pl_returns")
def tree(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    threshold: float = 0.0,
    changes: bool = True,
    latents: Sequence[int | str] | None = None,
    max_labels: int = 60,
    label_internal: bool = False,
    radial: bool = False,
    marker_size: float = 60.0,
    figsize: tuple[float, float] | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the environment tree and, on every arc, the latents whose weight changes there.

    The tree is drawn as a dendrogram (root on the left, depth on the x-axis, leaves labelled) or radially. On each
    arc, a marker for every latent that changes there: by default the entries the support estimate calls
    *changed* (``adata.uns[key]["changes"]``, the rule in :meth:`sctbr.model.TBR.get_deltas`), with open markers
    for *unresolved* changes (a change the data place on this arc or a neighbouring one around a node without
    cells; drawn where its refitted ``Delta`` is not 0). Markers are coloured by latent, sit in a fixed slot per
    latent, and have an area proportional to ``|Delta|`` (no minimum size; a size legend shows three reference
    values). Environments that
    had cells are filled dots, nodes without cells (ancestral states) open circles. With more than ``max_labels`` leaves only every
    n-th leaf is labelled and the markers shrink, so trees with hundreds of leaves stay legible.

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` (or :func:`sctbr.tl.baseline`, whose changes are all zero).
    key
        The fit's ``uns`` key: its ``key_added``, or ``"tbr"`` / ``"baseline"`` for ``key_added=None`` (see
        "Where results go" in the API reference).
    threshold
        Changes with ``|Delta| <= threshold`` are not drawn.
    changes
        Draw the support estimate (default, when the fit stored one); ``False``: every non-zero entry of the
        trained ``adata.uns[key]["deltas"]``.
    latents
        Latents to show (positions or column names of ``deltas``); default all.
    max_labels
        Most leaf labels to draw; larger trees get every n-th leaf labelled (0: none).
    label_internal
        Also label the internal nodes.
    radial
        Draw the tree radially (root in the centre), which suits trees with hundreds of leaves.
    marker_size
        Area (points^2) of the marker of the largest change; the others scale with ``|Delta|``.
    figsize
        Size of a new figure (default: grows with the number of leaves).
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
    >>> sctbr.pl.tree(adata)  # doctest: +SKIP
    >>> sctbr.pl.tree(adata, radial=True, latents=[0, 1])  # doctest: +SKIP
    """
    get_run(adata, key)
    t = run_tree(adata, key)
    deltas, called, unres = _changes_by_arc(adata, key, t, changes)
    deltas = _select_latents(deltas, latents)
    called, unres = called[deltas.columns].to_numpy(), unres[deltas.columns].to_numpy()
    observed = observed_nodes(adata, key)
    pos = tree_layout(t)
    leaves = [n for n in pos if t.is_leaf(n)]  # depth-first order
    n_leaves, n_lat = len(leaves), deltas.shape[1]
    crowded = min(1.0, 40.0 / n_leaves)  # shrink factor of markers for large trees

    if figsize is None:
        if radial:
            side = float(np.clip(3.0 + 0.03 * n_leaves, 5.0, 11.0))
            figsize = (side + 1.6, side)
        else:
            height = float(np.clip(0.28 * min(n_leaves, max_labels if max_labels > 0 else n_leaves), 2.5, 12.0))
            figsize = (float(np.clip(2.5 + 1.3 * t.max_depth, 5.0, 12.0)), height)
    fig, ax = new_axes(ax, figsize)

    if radial:
        theta = {n: 2 * np.pi * y / n_leaves for n, (_, y) in pos.items()}

        def xy(r, th):
            return r * np.cos(th), r * np.sin(th)
    else:
        theta = {n: y for n, (_, y) in pos.items()}

        def xy(r, th):
            return r, th

    # Arcs as elbows: along the parent's depth to the child's height, then out to the child.
    segments = []
    for parent, child in t.arcs:
        rp, rc = pos[parent][0], pos[child][0]
        tp, tc = theta[parent], theta[child]
        if radial:
            ts = np.linspace(tp, tc, max(2, int(abs(tc - tp) / 0.05) + 2))
            path = [xy(rp, th) for th in ts] + [xy(rc, tc)]
        else:
            path = [(rp, tp), (rp, tc), (rc, tc)]
        segments.append(path)
    lw = 1.0 if n_leaves <= 60 else 0.6
    ax.add_collection(LineCollection(segments, colors=_EDGE_COLOR, linewidths=lw, zorder=1))

    # Nodes: observed environments filled, the others open.
    node_size = 16.0 * max(crowded, 0.15)
    names = list(pos)
    is_obs = np.array([observed is None or n in observed for n in names])
    coords = np.array([xy(pos[n][0], theta[n]) for n in names])
    handles = []
    env_colors = category_colors(adata, groupby_of(adata, key)) or {}
    node_colors = [env_colors.get(n, _NODE_COLOR) for n, o in zip(names, is_obs, strict=True) if o]
    ax.scatter(*coords[is_obs].T, s=node_size, color=node_colors, zorder=2, linewidths=0)
    if observed is not None:
        handles.append(Line2D([], [], ls="", marker="o", color=_NODE_COLOR, label="environment with cells"))
        if (~is_obs).any():
            ax.scatter(*coords[~is_obs].T, s=node_size, facecolors="white", edgecolors=_NODE_COLOR, zorder=2)
            handles.append(
                Line2D([], [], ls="", marker="o", mfc="white", color=_NODE_COLOR, label="node without cells")
            )

    # Changes: one marker per non-zero entry of Delta, in a fixed slot per latent along the arc.
    values = np.abs(deltas.to_numpy(dtype=float))
    changed = (called | unres) & (values > threshold)
    vmax = values[changed].max() if changed.any() else 1.0
    colors = latent_colors(n_lat)
    children = np.array([c for _, c in t.arcs], dtype=object)
    parents = np.array([p for p, _ in t.arcs], dtype=object)
    for j, name in enumerate(deltas.columns):
        rows = np.flatnonzero(changed[:, j])
        if rows.size == 0:
            continue
        frac = (j + 1) / (n_lat + 1)
        r = np.array(
            [pos[p][0] + frac * (pos[c][0] - pos[p][0]) for p, c in zip(parents[rows], children[rows], strict=True)]
        )
        th = np.array([theta[c] for c in children[rows]])
        size = marker_size * crowded * values[rows, j] / vmax  # area proportional to |Delta|
        open_ = unres[rows, j]
        face = np.array([colors[j]] * rows.size, dtype=object)
        face[open_] = "white"
        edge = np.where(open_, None, "white")
        ax.scatter(
            *xy(r, th),
            s=size,
            c=list(face),
            edgecolors=[colors[j] if e is None else e for e in edge],
            linewidths=np.where(open_, 1.0, 0.3),
            zorder=3,
        )
        handles.append(Line2D([], [], ls="", marker="o", color=colors[j], label=latent_label(name)))

    if changed.any():
        handles.extend(_size_handles(vmax, marker_size * crowded))
        if unres[changed].any():
            handles.append(
                Line2D([], [], ls="", marker="o", mfc="white", color="0.3", label="unresolved (arc unclear)")
            )

    # Labels: every leaf, or every n-th of a large tree.
    shown = thin_labels(n_leaves, max_labels)
    fontsize = 9 if n_leaves <= 30 else (7 if n_leaves <= max_labels else 6)
    for i in shown:
        leaf = leaves[i]
        r, th = pos[leaf][0] + 0.12, theta[leaf]
        if radial:
            deg = np.degrees(th) % 360
            flip = 90 < deg < 270
            ax.text(
                *xy(r, th),
                leaf,
                rotation=deg + 180 if flip else deg,
                rotation_mode="anchor",
                ha="right" if flip else "left",
                va="center",
                fontsize=fontsize,
            )
        else:
            ax.text(r, th, leaf, ha="left", va="center", fontsize=fontsize)
    if label_internal:
        for n in names:
            if not t.is_leaf(n):
                ax.text(*xy(pos[n][0], theta[n]), f"{n} ", ha="right", va="bottom", fontsize=fontsize - 1, color="0.3")

    if radial:
        margin = 1.0 if len(shown) else 0.2  # room for the leaf labels
        ax.set_xlim(coords[:, 0].min() - margin, coords[:, 0].max() + margin)
        ax.set_ylim(coords[:, 1].min() - margin, coords[:, 1].max() + margin)
        ax.set_aspect("equal")
        ax.set_axis_off()
    else:
        ax.set_xlim(-0.1, t.max_depth + 0.1)
        ax.set_ylim(n_leaves - 0.5, -0.5)
        ax.set_axis_off()
    note = f" (1 in {shown[1]} of {n_leaves} leaves labelled)" if len(shown) > 1 and shown[1] > 1 else ""
    ax.set_title(f"{key}: latents that change on each arc{note}", fontsize="medium")
    if handles:
        style = {
            "handles": handles,
            "frameon": False,
            "fontsize": "small",
            "title": "marker area \u221d |change|" if changed.any() else None,
            "title_fontsize": "small",
        }
        if radial:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), **style)
        else:
            _legend_below(ax, style, ncol=min(len(handles), 4))
    return finish(fig, ax, writekey="tree", show=show, save=save, return_fig=return_fig)


def _legend_below(ax, style: dict, *, ncol: int) -> None:
    """A legend under the axes, in as many columns (at most ``ncol``) as fit in the axes' width."""
    width = ax.get_window_extent().width
    for n in range(ncol, 0, -1):
        legend = ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=n, **style)
        if legend.get_window_extent(renderer(ax.figure)).width <= width:
            return


def _size_handles(vmax: float, area: float) -> list:
    """Legend entries for three reference changes (the largest, half and a quarter of it), area proportional."""
    out = []
    for frac in (1.0, 0.5, 0.25):
        out.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                color="0.5",
                markersize=float(np.sqrt(area * frac)),
                label=f"|\u0394| = {frac * vmax:.2g}",
            )
        )
    return out
