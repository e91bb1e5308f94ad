"""Scatter of every true latent against its matched estimate."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData

from sctbr._constants import TBR_KEY, TRUE_LATENTS_KEY, stored_keys
from sctbr._docs import doc_params
from sctbr.metrics import match_latents
from sctbr.pl._common import METHOD_COLORS, finish, get_run


@doc_params("pl_show")
def latents_vs_truth(
    adata: AnnData,
    *,
    key: str = TBR_KEY,
    truth: str = TRUE_LATENTS_KEY,
    method: str = "pearson",
    max_points: int = 3000,
    random_state: int = 0,
    axes=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Plot each true latent against the estimated latent matched to it, with their correlation.

    Latents are matched as in :func:`sctbr.metrics.mcc` (Hungarian matching of absolute correlations); a panel's
    title gives the signed correlation. A fit that identified the latents shows straight lines.

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
    method
        ``"pearson"`` or ``"spearman"``.
    max_points
        Cells drawn per panel (a seeded random subset).
    random_state
        Seed of the subset.
    axes
        Existing axes (one per true latent), or None for a new figure.
    {pl_show}

    Returns
    -------
    Array of Axes (one per true latent), or the Figure with ``return_fig=True``.

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
    if axes is None:
        ncols = min(d, 5)
        nrows = int(np.ceil(d / ncols))
        fig, axs = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
        axs = axs.ravel()
        for extra in axs[d:]:
            extra.set_visible(False)
        axs = axs[:d]
    else:
        axs = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
        if len(axs) < d:
            raise ValueError(f"`axes` has {len(axs)} axes but there are {d} true latents.")
        fig = axs[0].figure
    rng = np.random.default_rng(random_state)
    cells = rng.choice(len(z_true), size=min(max_points, len(z_true)), replace=False)
    color = METHOD_COLORS.get(str(run["params"]["method"]), "#333333")
    paired = dict(zip(match["true_index"], zip(match["est_index"], match["corr"], strict=True), strict=True))
    for j, ax in enumerate(axs[:d]):
        ax.set_xlabel(f"true latent {j}")
        if j not in paired:
            ax.set_title("no match")
            continue
        e, r = paired[j]
        ax.scatter(z_true[cells, j], z_est[cells, e], s=3, alpha=0.4, color=color, rasterized=True)
        ax.set_ylabel(f"{key} latent {e}")
        ax.set_title(f"r = {r:.3f}")
    fig.suptitle(f"{key}: latents vs truth", y=1.02)
    fig.tight_layout()
    return finish(fig, axs, show, return_fig)
