"""Forest plot of the per-environment effects of the latents (``sctbr.tl.causal_effects``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.lines import Line2D

from sctbr._constants import CAUSAL_EFFECTS_COLUMNS, TBR_KEY
from sctbr._docs import doc_params
from sctbr.pl._common import finish, latent_colors, latent_label, new_axes, thin_labels


@doc_params("pl_ax", "pl_show", "pl_returns")
def causal_effects(
    data: AnnData | pd.DataFrame,
    *,
    key: str = TBR_KEY,
    environments: Sequence | None = None,
    latents: Sequence[str] | None = None,
    groupby: str | None = None,
    split: str | Sequence[str] | None = None,
    alpha: float = 0.05,
    max_labels: int = 60,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool = False,
):
    """Plot the effect of every latent in every environment with its confidence interval (a forest plot).

    One row per environment (top to bottom in the table's order, the tree's order for sctbr's data), one colour per
    latent; the dot is the OLS effect per within-environment standard deviation of the latent and the bar its
    confidence interval. An interval that crosses the dashed zero line is not significant at level ``alpha``. A
    latent whose effect switches on or off between environments shows as dots moving away from or onto zero.

    Parameters
    ----------
    data
        The table of :func:`sctbr.tl.causal_effects`, or an AnnData with a :func:`sctbr.tl.tbr` fit (the table is
        then computed with ``key``, ``groupby``, ``split`` and ``alpha``).
    key, groupby, split, alpha
        Passed to :func:`sctbr.tl.causal_effects` when ``data`` is an AnnData.
    environments
        Environments to draw (default: all, in the table's order).
    latents
        Latents to draw, e.g. ``["latent_0", "latent_2"]`` (default: all).
    max_labels
        At most this many environment labels are written (every n-th beyond that).
    {pl_ax}
    {pl_show}

    Returns
    -------
    {pl_returns}

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=100, n_latent=2, random_state=0)
    >>> sctbr.tl.tbr(adata, n_latent=2, max_epochs=60)  # doctest: +SKIP
    >>> sctbr.pl.causal_effects(adata)  # doctest: +SKIP
    """
    # sctbr.tl imports torch and scvi-tools: loaded here, so that importing sctbr.pl stays light
    from sctbr.tl import causal_effects as _causal_effects

    if isinstance(data, AnnData):
        table = _causal_effects(data, key=key, groupby=groupby, split=split, alpha=alpha)
    elif isinstance(data, pd.DataFrame):
        table = data
    else:
        raise TypeError(
            f"`data` must be the DataFrame of sctbr.tl.causal_effects or an AnnData with a fit, got {type(data)}."
        )
    missing = [c for c in ("environment", "latent", "effect", "ci_low", "ci_high") if c not in table.columns]
    if missing:
        raise KeyError(
            f"The table lacks column(s) {missing}; expected the output of sctbr.tl.causal_effects ({CAUSAL_EFFECTS_COLUMNS})."
        )
    env_levels = _levels(table["environment"])
    lat_levels = _levels(table["latent"])
    if environments is not None:
        unknown = [e for e in environments if e not in set(env_levels)]
        if unknown:
            raise KeyError(f"Environment(s) {unknown[:10]} are not in the table (e.g. {env_levels[:5]}).")
        env_levels = list(environments)
    if latents is not None:
        unknown = [v for v in latents if v not in set(lat_levels)]
        if unknown:
            raise KeyError(f"Latent(s) {unknown} are not in the table ({lat_levels}).")
        lat_levels = list(latents)
    if not env_levels or not lat_levels:
        raise ValueError("Nothing to draw: no environment or no latent selected.")

    n_env, n_lat = len(env_levels), len(lat_levels)
    fig, ax = new_axes(ax, (5.0, max(2.5, 0.22 * n_env * max(1.0, n_lat / 3) + 1.2)))
    colors = latent_colors(n_lat)
    env_pos = {e: i for i, e in enumerate(env_levels)}
    slot = 0.8 / n_lat
    for j, latent in enumerate(lat_levels):
        rows = table[(table["latent"] == latent) & table["environment"].isin(env_levels)]
        rows = rows[np.isfinite(rows["effect"].to_numpy(dtype=float))]
        if rows.empty:
            continue
        y = np.array([env_pos[e] for e in rows["environment"]], dtype=float) - 0.4 + slot * (j + 0.5)
        effect = rows["effect"].to_numpy(dtype=float)
        lo, hi = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
        ax.errorbar(
            effect,
            y,
            xerr=np.vstack([effect - lo, hi - effect]),
            fmt="o",
            ms=3.5,
            color=colors[j],
            ecolor=colors[j],
            elinewidth=1.2,
            capsize=0,
            label=latent_label(latent),
        )
    ax.axvline(0.0, color="0.4", linestyle="--", linewidth=0.8, zorder=0)
    shown = thin_labels(n_env, max_labels)
    ax.set_yticks(shown, [str(env_levels[i]) for i in shown])
    ax.set_ylim(n_env - 0.5, -0.5)
    ax.set_xlabel("effect on the target per SD of the latent")
    ax.set_ylabel("environment")
    handles = [Line2D([], [], color=colors[j], marker="o", label=latent_label(v)) for j, v in enumerate(lat_levels)]
    ax.legend(handles=handles, loc="best", fontsize="small", frameon=False)
    return finish(fig, ax, writekey="causal_effects", show=show, save=save, return_fig=return_fig)


def _levels(values: pd.Series) -> list:
    """Levels in categorical order (only those present), else in order of appearance."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        return [c for c in values.cat.categories if c in present]
    return list(pd.unique(values.dropna()))
