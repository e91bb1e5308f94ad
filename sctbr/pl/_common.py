"""Shared plotting conventions (scanpy style): ``ax=None, show=None, return_fig=False``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from sctbr._tree import EnvironmentTree

#: One colour per method, the same in every plot.
METHOD_COLORS = {"tbr": "#1f77b4", "TBR": "#1f77b4", "baseline": "#ff7f0e", "Baseline": "#ff7f0e"}

#: Colours of methods without an entry in METHOD_COLORS (tab10 without METHOD_COLORS' blue and orange).
_OTHER_COLORS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def finish(fig, axes, show: bool | None, return_fig: bool):
    """Scanpy's convention: show when asked (never by default under a non-interactive backend)."""
    if show:
        plt.show()
    if return_fig:
        return fig
    return axes


def new_axes(ax, figsize: tuple[float, float]):
    """``(figure, axes)``: the given ``ax`` and its figure, or a new figure of ``figsize``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Colour of each method: :data:`METHOD_COLORS` for TBR and the baseline, a fixed cycle for the others."""
    methods = list(methods)
    out: dict[str, str] = {}
    others = iter(_OTHER_COLORS * (1 + len(methods) // len(_OTHER_COLORS)))
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


def latent_colors(n: int) -> list:
    """A categorical colour per latent (tab10, tab20, then evenly spaced hues)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


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
