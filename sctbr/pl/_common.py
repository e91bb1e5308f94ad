"""Shared plotting conventions (scanpy style): ``ax=None, show=None, return_fig=False``."""

from __future__ import annotations

import matplotlib.pyplot as plt
from anndata import AnnData

#: One colour per method, the same in every plot.
METHOD_COLORS = {"tbr": "#1f77b4", "TBR": "#1f77b4", "baseline": "#ff7f0e", "Baseline": "#ff7f0e"}


def finish(fig, axes, show: bool | None, return_fig: bool):
    """Scanpy's convention: show when asked (never by default under a non-interactive backend)."""
    if show:
        plt.show()
    if return_fig:
        return fig
    return axes


def get_run(adata: AnnData, key: str) -> dict:
    """The ``uns`` entry written by ``sctbr.tl.tbr``/``baseline`` under ``key``, or a clear error."""
    if key not in adata.uns or "params" not in adata.uns[key]:
        runs = [k for k, v in adata.uns.items() if isinstance(v, dict) and "params" in v and "deltas" in v]
        raise KeyError(
            f"No sctbr result under adata.uns[{key!r}]. Run sctbr.tl.tbr(adata, key_added={key!r}) first"
            + (f"; results found under: {runs}." if runs else ".")
        )
    return adata.uns[key]
