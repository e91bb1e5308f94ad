"""Shared plotting conventions, Scanpy's: ``ax=None, show=None, save=None``; return None unless ``show=False``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.transforms import Bbox

from sctbr._tree import EnvironmentTree

#: One colour per method, the same in every plot: the first two of Scanpy's ``palettes.default_20``.
METHOD_COLORS = {"tbr": "#1f77b4", "TBR": "#1f77b4", "baseline": "#ff7f0e", "Baseline": "#ff7f0e"}

#: Smallest share of its slot an axes keeps when it shrinks to make room for its legend and labels.
_MIN_SHARE = 0.3


def finish(fig, axes, *, writekey: str, show: bool | None, save: bool | str | None, return_fig: bool = False):
    """End every ``sctbr.pl`` function as Scanpy's plots end (``scanpy.pl._utils.savefig_or_show``).

    First every axes shrinks inside the slot it was given until its legend and texts fit there (unless the figure has
    a layout engine, which does that itself), so that plots compose in a grid. Then ``save`` writes the figure (as
    Scanpy: ``{writekey}{save}{settings.plot_suffix}.{ext}`` in ``sc.settings.figdir``), ``show`` (default
    ``sc.settings.autoshow``) shows it. Returns the Figure with ``return_fig=True`` (not shown), else None when
    shown, else ``axes``.
    """
    import scanpy as sc

    flat = list(np.ravel(np.asarray(axes, dtype=object))) if not isinstance(axes, plt.Axes) else [axes]
    if fig.get_layout_engine() is None:
        for ax in flat:
            fit_in_slot(ax)
    if save is None:
        save = sc.settings.autosave
    if save:
        savefig(fig, writekey, save)
    if return_fig:
        return fig
    show = sc.settings.autoshow if show is None else show
    if show:
        plt.show()
    if save:
        plt.close(fig)
    return None if show else axes


def savefig(fig, writekey: str, save: bool | str) -> Path:
    """Write ``fig`` where Scanpy's ``savefig_or_show(writekey, save=save)`` would: ``sc.settings.figdir``."""
    import scanpy as sc

    ext = None
    if isinstance(save, str):
        for suffix in (".svg", ".pdf", ".png"):
            if save.endswith(suffix):
                ext, save = suffix[1:], save[: -len(suffix)]
                break
        writekey += save
    if ext is None:
        ext = sc.settings.file_format_figs
    figdir = Path(sc.settings.figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    filename = figdir / f"{writekey}{sc.settings.plot_suffix}.{ext}"
    sc.logging.warning(f"saving figure to file {filename}")
    fig.savefig(filename, bbox_inches="tight")
    return filename


def renderer(fig):
    """The figure's renderer, to measure artists before the figure is drawn."""
    get = getattr(fig.canvas, "get_renderer", None)
    return get() if get is not None else fig._get_renderer()


def _overflow(ax, renderer) -> Bbox | None:
    """Union of the extents of the axes' legend, texts and inset axes (e.g. a colorbar): what may lie outside it."""
    legend = ax.get_legend()
    artists = [a for a in [*ax.texts, *([legend] if legend is not None else [])] if a.get_visible()]
    boxes = [a.get_window_extent(renderer) for a in artists]
    boxes += [child.get_tightbbox(renderer) for child in ax.child_axes if child.get_visible()]
    boxes = [b for b in boxes if b.width > 0 or b.height > 0]
    return Bbox.union(boxes) if boxes else None


def fit_in_slot(ax, slot: Bbox | None = None, *, iterations: int = 4) -> None:
    """Shrink ``ax`` so that its legend, texts and inset axes lie inside ``slot`` (figure coordinates; default: its box now).

    A legend or leaf labels placed outside the plot area then take room from this plot, not from its neighbours in
    a grid. The axes keeps at least 30 % of its slot on each side.
    """
    fig = ax.figure
    slot = ax.get_position(original=True) if slot is None else slot
    rend = renderer(fig)
    to_pixels = fig.transFigure
    outer = slot.transformed(to_pixels)
    for _ in range(iterations):
        ax.apply_aspect()
        extent = _overflow(ax, rend)
        if extent is None:
            return
        box = ax.get_position(original=True).transformed(to_pixels)  # before the aspect is applied
        left, right = max(0.0, outer.x0 - extent.x0), max(0.0, extent.x1 - outer.x1)
        bottom, top = max(0.0, outer.y0 - extent.y0), max(0.0, extent.y1 - outer.y1)
        if max(left, right, bottom, top) < 0.5:
            return
        x0, x1 = box.x0 + left, box.x1 - right
        y0, y1 = box.y0 + bottom, box.y1 - top
        if x1 - x0 < _MIN_SHARE * outer.width or y1 - y0 < _MIN_SHARE * outer.height:
            return
        ax.set_position(Bbox([[x0, y0], [x1, y1]]).transformed(to_pixels.inverted()), which="both")


def new_axes(ax, figsize: tuple[float, float]):
    """``(figure, axes)``: the given ``ax`` and its figure, or a new figure of ``figsize``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def palette(n: int) -> list[str]:
    """``n`` categorical colours from Scanpy's palettes (``default_20``, ``default_28``, ``default_102``, cycled)."""
    from scanpy.plotting import palettes

    if n <= 20:
        colors = palettes.default_20
    elif n <= 28:
        colors = palettes.default_28
    else:
        colors = palettes.default_102
    return [colors[i % len(colors)] for i in range(n)]


def category_colors(adata: AnnData, groupby: str | None) -> dict[str, str] | None:
    """Colour of every category of ``adata.obs[groupby]`` from ``adata.uns[f"{groupby}_colors"]``, or None.

    None when the column or its colours are missing, or the colours do not match the categories (as Scanpy, which
    then falls back to its palettes).
    """
    if not groupby or groupby not in adata.obs or f"{groupby}_colors" not in adata.uns:
        return None
    column = adata.obs[groupby]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return None
    colors = list(adata.uns[f"{groupby}_colors"])
    categories = [str(c) for c in column.cat.categories]
    if len(colors) < len(categories):
        return None
    return dict(zip(categories, colors[: len(categories)], strict=True))


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Colour of each method: :data:`METHOD_COLORS` for TBR and the baseline, Scanpy's palette for the others."""
    methods = list(methods)
    out: dict[str, str] = {}
    taken = set(METHOD_COLORS.values())
    others = iter([c for c in palette(len(methods) + len(taken)) if c not in taken] * (1 + len(methods)))
    for m in methods:
        out[m] = METHOD_COLORS.get(str(m)) or METHOD_COLORS.get(str(m).lower()) or next(others)
    return out


def get_run(adata: AnnData, key: str) -> dict:
    """The ``uns`` entry written by ``sctbr.tl.tbr``/``baseline`` under ``key``, or a clear error."""
    if key not in adata.uns or "params" not in adata.uns[key]:
        runs = [k for k, v in adata.uns.items() if isinstance(v, dict) and "params" in v and "deltas" in v]
        raise KeyError(
            f"No sctbr result under adata.uns[{key!r}]. Run sctbr.tl.tbr(adata, key_added={key!r}) first"
            + (f"; results found under: {runs}." if runs else ".")
        )
    return adata.uns[key]


def get_field(adata: AnnData, key: str, field: str):
    """``adata.uns[key][field]`` of a ``sctbr.tl`` run, or an error naming the missing field and the fix."""
    run = get_run(adata, key)
    if field not in run:
        raise KeyError(
            f"adata.uns[{key!r}] has no {field!r}: it was not written by this version of sctbr.tl.tbr. "
            f"Rerun sctbr.tl.tbr(adata, key_added={key!r}) (or sctbr.tl.baseline)."
        )
    return run[field]


def run_tree(adata: AnnData, key: str) -> EnvironmentTree:
    """The environment tree a ``sctbr.tl`` run was fitted on."""
    return EnvironmentTree.from_dict(get_field(adata, key, "tree"))


def dfs_order(tree: EnvironmentTree) -> list[str]:
    """Nodes in depth-first pre-order (children in the tree's order), so that every subtree is contiguous."""
    order: list[str] = []
    stack = [tree.root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(tree.children(node)))
    return order


def groupby_of(adata: AnnData, key: str) -> str | None:
    """The ``groupby`` column a ``sctbr.tl`` run was fitted with, or None."""
    return str(get_run(adata, key)["params"].get("groupby", "") or "") or None


def observed_nodes(adata: AnnData, key: str) -> set[str] | None:
    """Environments that had cells in the fit (``groupby`` categories), or None when that is not recorded."""
    groupby = str(get_run(adata, key)["params"].get("groupby", "") or "")
    if not groupby or groupby not in adata.obs:
        return None
    return {str(v) for v in pd.unique(adata.obs[groupby].astype(str))}


def thin_labels(n: int, max_labels: int) -> np.ndarray:
    """Positions of the labels to draw among ``n``: all of them, or every k-th so that at most ``max_labels`` show."""
    if max_labels <= 0:
        return np.array([], dtype=int)
    step = int(np.ceil(n / max_labels)) if n > max_labels else 1
    return np.arange(0, n, step)


def latent_colors(n: int) -> list[str]:
    """A categorical colour per latent, from Scanpy's palettes (see :func:`palette`)."""
    return palette(n)


def latent_label(name: str) -> str:
    """``"latent_3"`` -> ``"latent 3"``."""
    return str(name).replace("_", " ")


def check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str = "results") -> None:
    """Raise a KeyError naming the missing columns and listing the present ones."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(
            f"{what} lack the column(s) {missing}; columns present: {list(frame.columns)}. Expected sctbr's tidy "
            "results table: one row per method x k x seed with columns method, k, seed, mcc, test_mse, transfer_mse."
        )
