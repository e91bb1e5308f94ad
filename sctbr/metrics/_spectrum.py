"""How many latent directions the phenotype uses: the spectrum of the cell types' heads on whitened latents."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def heads_spectrum(
    latents: ArrayLike,
    y: ArrayLike,
    groups: ArrayLike,
    *,
    return_noise: bool = False,
    noise_cells: ArrayLike | None = None,
) -> np.ndarray | tuple[np.ndarray, float]:
    """Singular values, relative to the largest, of the per-group least-squares heads on whitened latents.

    Within each group (cell type), the target is regressed on the latents (with an intercept); the groups' heads
    form a groups x latents matrix. On whitened latents its singular values do not depend on the latents' basis:
    any invertible linear map of the latents gives the same values. A value near 0 is a direction of the latent
    space that no group's head uses: a latent the phenotype does not need (the fit has more latents than the
    phenotype uses), or one so weak that it cannot be told from noise. Such a direction cannot be identified by
    the tree, whatever the fit. ``sctbr.tl.tbr`` stores the spectrum and warns when a value lies below the noise
    level (``return_noise``).

    Parameters
    ----------
    latents
        Cells x latents.
    y
        The target of every cell (cells, or cells x targets: the heads of every target are stacked).
    groups
        The group (environment, cell type) of every cell. Groups with fewer cells than latents + 2 are skipped.
    return_noise
        Also return the noise level: the norm that the heads' estimation errors alone would reach (from each
        group's residual variance and cell count, ``sqrt(sum_g se_g^2) + sqrt(n_latent) max_g se_g``, the usual
        bound on the largest singular value of a matrix of independent errors), relative to the largest singular
        value. A direction whose value lies below it cannot be told apart from no direction at all.
    noise_cells
        Boolean mask of the cells whose residuals give each group's residual variance (default: all cells). Pass
        the cells the encoder did not train on: an encoder fits its training cells' noise, so their residuals
        understate the heads' errors (``sctbr.tl.tbr`` passes its validation and test cells). A group with fewer
        than 2 such cells uses all of its cells.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, float)
        ``n_latent`` values in decreasing order, the first 1 (all 0 when no group has a head); with
        ``return_noise``, also the noise level.

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.metrics import heads_spectrum
    >>> rng = np.random.default_rng(0)
    >>> z, groups = rng.normal(size=(3000, 3)), np.repeat(np.arange(6), 500)
    >>> heads = rng.normal(size=(6, 2))  # the target uses the first two latents only
    >>> y = np.einsum("ij,ij->i", z[:, :2], heads[groups]) + 0.1 * rng.normal(size=3000)
    >>> spectrum, noise = heads_spectrum(z @ rng.normal(size=(3, 3)), y, groups, return_noise=True)  # any basis
    >>> int((spectrum > noise).sum())  # directions used
    2
    """
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    groups = np.asarray(groups)
    held = np.ones(len(z), dtype=bool) if noise_cells is None else np.asarray(noise_cells, dtype=bool)
    if z.ndim != 2 or len(y) != len(z) or len(groups) != len(z) or held.shape != (len(z),):
        raise ValueError(
            f"`latents` (cells x latents), `y`, `groups` and `noise_cells` must have one row per cell; got {z.shape}, "
            f"{y.shape}, {groups.shape} and {held.shape}."
        )
    if not (np.isfinite(z).all() and np.isfinite(y).all()):
        raise ValueError("`latents` and `y` must be finite; drop or impute cells with NaN first.")
    d = z.shape[1]
    z = z - z.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.atleast_2d(np.cov(z.T)))
    keep = evals > 1e-12 * max(float(evals.max()), 1e-300)
    white = np.zeros_like(z)
    white[:, keep] = z @ evecs[:, keep] / np.sqrt(evals[keep])
    heads, se2 = [], []
    for g in np.unique(groups):
        m = groups == g
        n = int(m.sum())
        if n < d + 2:
            continue
        x = np.c_[np.ones(n), white[m]]
        coef = np.linalg.lstsq(x, y[m], rcond=None)[0]
        heads.append(coef[1:].T)  # targets x latents
        # the standard error of a head's coordinate: residual variance over the cells' (whitened) latent variance
        sq = (y[m] - x @ coef) ** 2
        h = held[m]
        resid = sq[h].mean(axis=0) if h.sum() >= 2 and noise_cells is not None else sq.sum(axis=0) / (n - d - 1)
        se2.append(resid / (n * np.maximum(white[m].var(axis=0).mean(), 1e-12)))
    if not heads:
        return (np.zeros(d), 0.0) if return_noise else np.zeros(d)
    sv = np.linalg.svd(np.concatenate(heads), compute_uv=False)
    sv = np.concatenate([sv, np.zeros(d - len(sv))])
    se2 = np.concatenate(se2)
    noise = float(np.sqrt(se2.sum()) + np.sqrt(d * se2.max()))
    spectrum, noise = (sv / sv[0], noise / sv[0]) if sv[0] > 0 else (sv, 0.0)
    return (spectrum, noise) if return_noise else spectrum
