"""Scatter of every true latent against its matched estimate."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpecFromSubplotSpec

from sctbr._constants import SIMULATION_KEY, TBR_KEY, TRUE_LATENTS_KEY, stored_keys
from sctbr._docs import doc_params
from sctbr.metrics import match_latents
from sctbr.pl._common import METHOD_COLORS, finish, get_run


@doc_params("pl_show", "pl_returns")
def latents_vs_truth(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    truth: str = TRUE_LATENTS_KEY,
    truth_names: Sequence[str] | None = None,
    method: str = "pearson",
    max_points: int = 3000,
    random_state: int = 0,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot each true latent against the estimated latent matched to it, with their correlation.

    Latents are matched as in :func:`sctbr.metrics.mcc` (Hungarian matching of absolute correlations); a panel's
    title gives the signed correlation. A fit that identified the latents shows straight lines. One panel per true
    latent, as Scanpy's multi-panel plots: ``ax`` is one Axes whose slot is divided into the panels (as
    ``sc.pl.dotplot(ax=...)`` divides its slot), or one Axes per true latent.

    Parameters
    ----------
    adata
        AnnData with a fit of :func:`sctbr.tl.tbr` or :func:`sctbr.tl.baseline` (latents in ``obsm["X_tbr"]`` by
        default) and the true latents in ``obsm[truth]``.
    key
        The fit's ``uns`` key: its ``key_added``, or ``"tbr"`` / ``"baseline"`` for ``key_added=None`` (see
        "Where results go" in the API reference).
    truth
        ``obsm`` key of the true latents.
    truth_names
        Names of the true latents, for the x-axis labels. Default: the held-out genes of
        :func:`sctbr.datasets.semisynthetic` (``adata.uns["simulation"]["latent_genes"]``) when ``truth`` is their
        ``obsm`` key, else ``true latent 0``, ``true latent 1``, ...
    method
        ``"pearson"`` or ``"spearman"``.
    max_points
        Cells drawn per panel (a seeded random subset).
    random_state
        Seed of the subset.
    ax
        An Axes (e.g. one cell of a grid of plots) whose slot holds the panels, a sequence of Axes (one per true
        latent), or None for a new figure.
    {pl_show}

    Returns
    -------
    {pl_returns}
    With ``show=False``, a list of Axes: one per true latent.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=50)
    >>> sctbr.tl.tbr(adata, max_epochs=5, enable_progress_bar=False)  # doctest: +SKIP
    >>> sctbr.pl.latents_vs_truth(adata)  # doctest: +SKIP
    """
    run = get_run(adata, key)
    rep = stored_keys(run, key).obsm
    if rep not in adata.obsm:
        raise KeyError(f"adata.obsm[{rep!r}] is missing; run sctbr.tl.tbr(adata, key_added={key!r}) first.")
    if truth not in adata.obsm:
        raise KeyError(f"adata.obsm[{truth!r}] with the true latents is missing (simulated data store 'Z_true').")
    z_true = np.asarray(adata.obsm[truth], dtype=float)
    z_est = np.asarray(adata.obsm[rep], dtype=float)
    match = match_latents(z_true, z_est, method=method)
    d = z_true.shape[1]
    names = _truth_names(adata, truth, d, truth_names)
    fig, axs = _panels(ax, d, title=f"{key}: latents vs truth")
    rng = np.random.default_rng(random_state)
    cells = rng.choice(len(z_true), size=min(max_points, len(z_true)), replace=False)
    color = METHOD_COLORS.get(str(run["params"]["method"]), "#333333")
    paired = dict(zip(match["true_index"], zip(match["est_index"], match["corr"], strict=True), strict=True))
    for j, panel in enumerate(axs):
        panel.set_xlabel(names[j])
        if j not in paired:
            panel.set_title("no match")
            continue
        e, r = paired[j]
        panel.scatter(z_true[cells, j], z_est[cells, e], s=3, alpha=0.4, color=color, rasterized=True)
        panel.set_ylabel(f"{key} latent {e}")
        panel.set_title(f"r = {r:.3f}", fontsize="medium")
    return finish(fig, axs, writekey="latents_vs_truth", show=show, save=save, return_fig=return_fig)


def _truth_names(adata: AnnData, truth: str, d: int, names: Sequence[str] | None) -> list[str]:
    """Axis label of every true latent: ``names``, the semi-synthetic latent genes, or ``true latent j``."""
    if names is None:
        simulation = adata.uns.get(SIMULATION_KEY)
        genes = simulation.get("latent_genes") if truth == TRUE_LATENTS_KEY and hasattr(simulation, "get") else None
        if genes is not None and len(genes) == d:
            return [str(g) for g in np.asarray(genes).astype(str)]
        return [f"true latent {j}" for j in range(d)]
    if isinstance(names, str) or len(names) != d:
        raise ValueError(f"`truth_names` must name each of the {d} true latents in adata.obsm[{truth!r}].")
    return [str(n) for n in names]


def _panels(ax, n: int, *, title: str) -> tuple[Figure, list[Axes]]:
    """``n`` panel Axes: in a new figure, in the slot of one given Axes (which they replace), or the given ones."""
    ncols = min(n, 5)
    nrows = int(np.ceil(n / ncols))
    if ax is None:
        fig = plt.figure(figsize=(2.6 * ncols, 2.6 * nrows + 0.3), layout="constrained")
        grid = fig.add_gridspec(nrows, ncols)
        fig.suptitle(title)
        return fig, [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]
    if isinstance(ax, Axes):
        if n == 1:
            return ax.figure, [ax]
        fig, spec = ax.figure, ax.get_subplotspec()
        if spec is None:
            raise ValueError("`ax` must be a subplot (from plt.subplots or fig.add_subplot) to hold several panels.")
        ax.remove()
        grid = GridSpecFromSubplotSpec(nrows, ncols, subplot_spec=spec, wspace=0.55, hspace=0.65)
        return fig, [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]
    axs = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axs) < n or not all(isinstance(a, Axes) for a in axs):
        raise ValueError(f"`ax` has {len(axs)} axes but there are {n} true latents: pass one Axes per true latent.")
    return axs[0].figure, axs[:n]
